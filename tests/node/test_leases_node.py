"""Leases on an in-process 3-node cluster (rkv.testing), through the public client:
`keep_alive` holds a lease past several TTLs and the key goes once it stops; a lease revoked
elsewhere cancels the `keep_alive` block with LeaseNotFound; lease_ttl through a follower;
the expiry counters and gauge; and a full-cluster restart, after which a lease goes at about
its checkpointed remaining TTL from the restart (neither at once nor a full TTL later)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

import rkv
from rkv.testing import RestartableNode, local_configs, running_cluster, wait_leader


async def wait_gone(db: rkv.Client, key: str, limit: float) -> float:
    """Seconds (trio clock) until a linearizable read finds `key` absent."""
    t0 = trio.current_time()
    with trio.fail_after(limit):
        while await db.get(key) is not None:
            await trio.sleep(0.05)
    return trio.current_time() - t0


async def test_keep_alive_holds_it_and_it_goes_after(tmp_path: Path) -> None:
    async with running_cluster(local_configs(tmp_path, 3)) as nodes:
        leader = await wait_leader(nodes)
        async with rkv.connect([n.cfg.advertise for n in nodes], timeout=10) as db:
            lease = await db.lease_grant(1.0)
            await db.put("ka/x", "1", lease=lease.id)
            async with db.keep_alive(lease.id) as ttl:
                assert ttl == 1.0
                for _ in range(8):  # 4 TTLs
                    await trio.sleep(0.5)
                    assert await db.get("ka/x") == b"1"
            t = await wait_gone(db, "ka/x", 10)
            assert 0.3 <= t <= 1.0 + 0.4 + 3.0  # the last renewal was at most TTL/3 ago
            with trio.fail_after(5):  # a node counts an expiry after the turn that applied it
                while [n.statistics()["leases"]["expiries_applied"] for n in nodes] != [1, 1, 1]:
                    await trio.sleep(0.05)
            assert leader.statistics()["leases"]["expiries_proposed"] >= 1
            assert b"rkv_lease_expiries_applied_total 1.0" in leader.metrics.render()
            assert b"rkv_leases 0.0" in leader.metrics.render()


async def test_keep_alive_stops_the_block_when_the_lease_is_revoked(tmp_path: Path) -> None:
    async with running_cluster(local_configs(tmp_path, 3)) as nodes:
        await wait_leader(nodes)
        async with rkv.connect([n.cfg.advertise for n in nodes], timeout=10) as db:
            lease = await db.lease_grant(3.0)
            reached = False
            with pytest.raises(rkv.LeaseNotFound):
                async with db.keep_alive(lease.id):
                    assert await db.lease_revoke(lease.id) is True
                    await trio.sleep(5)  # the next renewal (at 1 s) finds it gone
                    reached = True
            assert not reached


async def test_keep_alive_ends_the_block_within_ttl_of_the_last_renewal_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Renewals that keep failing (the cluster unavailable to this client) end the block with
    Unavailable no later than TTL after the last successful renewal was sent: past that the
    lease may be gone, so the block must not go on believing it holds it."""
    async with running_cluster(local_configs(tmp_path, 3)) as nodes:
        await wait_leader(nodes)
        async with rkv.connect([n.cfg.advertise for n in nodes], timeout=10) as db:
            lease = await db.lease_grant(1.0)
            real = db.lease_keepalive
            calls = 0

            async def failing(lease_id: int) -> float:
                nonlocal calls
                calls += 1
                if calls == 1:
                    return await real(lease_id)
                await trio.sleep(30)  # a renewal that hangs (a client timeout far above TTL)
                raise AssertionError("not reached")

            monkeypatch.setattr(db, "lease_keepalive", failing)
            reached = False
            with pytest.raises(rkv.Unavailable, match="not renewed within its TTL"):
                async with db.keep_alive(lease.id) as ttl:
                    t0 = trio.current_time()
                    assert ttl == 1.0
                    try:
                        await trio.sleep(30)
                        reached = True
                    finally:
                        ended = trio.current_time() - t0
            assert not reached and calls >= 2
            assert ended <= ttl + 0.5  # TTL from the first renewal's send, not 30 s later


async def test_ttl_through_a_follower(tmp_path: Path) -> None:
    async with running_cluster(local_configs(tmp_path, 3)) as nodes:
        leader = await wait_leader(nodes)
        follower = next(n for n in nodes if n is not leader)
        async with rkv.connect([follower.cfg.advertise], timeout=10) as db:
            lease = await db.lease_grant(30, lease_id=99)
            assert lease.id == 99
            await db.put("f/a", "1", lease=99)
            await db.put("f/b", "1", lease=99)
            info = await db.lease_time_to_live(99, keys=True)
            assert info is not None and info.key_names == (b"f/a", b"f/b")
            assert 25 < info.remaining <= 30 and info.ttl == 30
            assert [(x.id, x.keys) for x in await db.lease_list()] == [(99, 2)]
            assert await db.lease_time_to_live(98) is None


async def test_a_full_cluster_restart_counts_the_checkpointed_remaining(tmp_path: Path) -> None:
    """TTL 4 s, checkpoints every 0.5 s. 2 s after the grant every node is stopped for 1 s.
    After the restart the lease lives on for about the remaining TTL stored by the last
    checkpoint (2 to 2.5 s): not gone at once (the promise: at least TTL after the grant),
    and gone well before a full TTL from the restart."""
    cfgs = local_configs(tmp_path, 3, lease_checkpoint_seconds=0.5)
    rs = [RestartableNode(c) for c in cfgs]
    addrs = [c.advertise for c in cfgs]
    async with trio.open_nursery() as nursery:
        nodes = [await r.start(nursery) for r in rs]
        await wait_leader(nodes)
        async with rkv.connect(addrs, timeout=10) as db:
            t0 = trio.current_time()
            lease = await db.lease_grant(4.0)
            await db.put("r/x", "1", lease=lease.id)
        await trio.sleep(2.0 - (trio.current_time() - t0))
        stored = [r.node.store.lease(lease.id) for r in rs if r.node is not None]
        assert all(s is not None and s.remaining_ms <= 2600 for s in stored), stored
        # the leader counted the checkpoints it proposed (the metrics' figures)
        live = [r.node for r in rs if r.node is not None]
        counts = [n.statistics()["leases"] for n in live]
        assert sum(c["checkpoints_proposed"] for c in counts) >= 1, counts
        assert (
            1
            <= sum(c["checkpoint_entries_proposed"] for c in counts)
            <= sum(c["checkpoints_proposed"] for c in counts)
        )
        proposer = next(n for n, c in zip(live, counts, strict=True) if c["checkpoints_proposed"])
        page = proposer.metrics.render().decode()
        (line,) = [
            x for x in page.splitlines() if x.startswith("rkv_lease_checkpoints_proposed_total ")
        ]
        assert (
            1 <= float(line.split()[1]) <= proposer.statistics()["leases"]["checkpoints_proposed"]
        )
        for r in rs:
            await r.stop()
        await trio.sleep(1.0)
        t_restart = trio.current_time()
        nodes = [await r.start(nursery) for r in rs]
        await wait_leader(nodes)
        async with rkv.connect(addrs, timeout=10) as db:
            assert trio.current_time() - t0 < 4.0  # still inside the TTL from the grant
            assert await db.get("r/x") == b"1"
            await wait_gone(db, "r/x", 10)
            gone_after_restart = trio.current_time() - t_restart
            assert gone_after_restart >= 1.5  # the stored remaining, from the restart
            assert gone_after_restart < 4.0  # not a full TTL again
        nursery.cancel_scope.cancel()
