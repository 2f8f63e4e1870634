"""rkv.Lock on an in-process 3-node cluster (rkv.testing), through the public client:
mutual exclusion under contention (no lost update, strictly increasing fencing tokens), a
holder whose lease is revoked behind its back is cancelled with LockLost, waiters acquire in
the order they queued, a waiter cancelled or timed out leaves no key, and a store that
refuses stale fencing tokens refuses a paused holder's late write."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

import rkv

from .clusters import cluster, keys_of, wait_keys

TTL = 2.0


async def test_mutual_exclusion_and_increasing_tokens(tmp_path: Path) -> None:
    """5 tasks on 3 clients, 4 rounds each: a read, a pause and a write of a counter under
    the lock never lose an update; no two bodies overlap; tokens strictly increase."""
    async with cluster(tmp_path, 3) as dbs:
        await dbs[0].put("counter", "0")
        inside = 0
        tokens: list[int] = []

        async def worker(i: int) -> None:
            nonlocal inside
            db = dbs[i % len(dbs)]
            for _ in range(4):
                async with rkv.Lock(db, "mx", ttl=TTL) as lock:
                    inside += 1
                    assert inside == 1, "two holders at once"
                    assert lock.revision is not None and lock.key is not None
                    tokens.append(lock.revision)
                    v = int(await db.get("counter") or b"0")
                    await trio.sleep(0.01)
                    await db.put("counter", str(v + 1))
                    inside -= 1

        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                for i in range(5):
                    nursery.start_soon(worker, i)
        assert await dbs[0].get("counter") == b"20"
        assert len(tokens) == 20
        assert tokens == sorted(tokens) and len(set(tokens)) == 20
        assert await keys_of(dbs[0], "mx") == []  # every release deleted its key
        assert await dbs[0].lease_list() == []  # and revoked its lease


async def test_revoked_lease_cancels_the_holder_with_lock_lost(tmp_path: Path) -> None:
    async with cluster(tmp_path) as (db,):
        reached = False
        t0 = trio.current_time()
        with pytest.raises(rkv.LockLost, match=r"deleted|gone"):
            async with rkv.Lock(db, "rv", ttl=30) as lock:
                assert lock.lease_id is not None
                assert await db.lease_revoke(lock.lease_id) is True
                await trio.sleep(20)  # cancelled long before
                reached = True
        assert not reached
        assert trio.current_time() - t0 < 10  # the key watch sees the delete at once
        async with rkv.Lock(db, "rv", ttl=TTL, timeout=10) as again:  # free again
            assert again.revision is not None


async def test_a_lock_that_cannot_renew_within_its_ttl_is_lost(tmp_path: Path) -> None:
    """Keep-alives failing (the cluster unreachable, as far as this holder can tell): the
    block is cancelled with LockLost once TTL has passed since the last renewal was sent,
    not later (the lease's promise ends there)."""
    async with cluster(tmp_path) as (db,):

        async def unreachable(lease_id: int) -> float:
            await trio.sleep(0.1)
            raise rkv.Unavailable("cut off (test)")

        reached = False
        with pytest.raises(rkv.LockLost, match="could not be renewed within its TTL"):
            async with rkv.Lock(db, "nr", ttl=TTL):
                t0 = trio.current_time()
                db.lease_keepalive = unreachable  # type: ignore[method-assign]
                await trio.sleep(30)
                reached = True
        assert not reached
        assert trio.current_time() - t0 <= TTL + 0.5


async def test_a_waiter_whose_lease_is_revoked_gets_lock_lost(tmp_path: Path) -> None:
    async with cluster(tmp_path) as (db,):
        lost: list[rkv.LockLost] = []

        async def waiter() -> None:
            try:
                async with rkv.Lock(db, "wl", ttl=3):
                    pytest.fail("acquired without its lease")
            except rkv.LockLost as exc:
                lost.append(exc)

        async with rkv.Lock(db, "wl", ttl=TTL) as holder, trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await wait_keys(db, "wl", 2)
            other = next(k for k in await keys_of(db, "wl") if k != holder.key)
            lease = next(x.id for x in await db.lease_list() if x.id != holder.lease_id)
            assert other.endswith(b"%016x" % lease)  # its key is named by its lease
            await db.lease_revoke(lease)
        assert len(lost) == 1


async def test_waiters_acquire_in_queue_order(tmp_path: Path) -> None:
    async with cluster(tmp_path, 2) as dbs:
        order: list[str] = []
        async with trio.open_nursery() as nursery, rkv.Lock(dbs[0], "q", ttl=TTL):

            async def waiter(tag: str, db: rkv.Client) -> None:
                async with rkv.Lock(db, "q", ttl=TTL):
                    order.append(tag)
                    await trio.sleep(0.05)

            for n, tag in enumerate("abcd", start=2):
                nursery.start_soon(waiter, tag, dbs[n % 2])
                await wait_keys(dbs[0], "q", n)  # queued before the next one starts
        assert order == list("abcd")


async def test_a_waiter_cancelled_or_timed_out_leaves_no_key(tmp_path: Path) -> None:
    async with cluster(tmp_path) as (db,):
        async with rkv.Lock(db, "c", ttl=TTL) as holder:
            with pytest.raises(rkv.Timeout, match=r"not acquired within 0\.5 s"):
                async with rkv.Lock(db, "c", ttl=TTL, timeout=0.5):
                    pytest.fail("acquired a held lock")
            with trio.move_on_after(0.5) as scope:
                async with rkv.Lock(db, "c", ttl=TTL):
                    pytest.fail("acquired a held lock")
            assert scope.cancelled_caught
            assert await keys_of(db, "c") == [holder.key]
            assert len(await db.lease_list()) == 1
        assert await keys_of(db, "c") == []


@dataclass(slots=True)
class FencedStore:
    """A store that refuses a write whose fencing token is below the highest it has seen."""

    highest: int = 0
    writes: list[tuple[int, str]] = field(default_factory=list)

    def write(self, token: int, value: str) -> bool:
        if token < self.highest:
            return False
        self.highest = token
        self.writes.append((token, value))
        return True


async def test_a_paused_holders_late_write_is_refused(tmp_path: Path) -> None:
    """A holds the lock and pauses (shielded: nothing interrupts a paused process); its
    lease goes meanwhile (revoked here, as an expiry would), B takes the lock and writes;
    A's late write carries A's older token and is refused."""
    async with cluster(tmp_path, 2) as (a_db, b_db):
        store = FencedStore()
        b_wrote = trio.Event()
        late: list[bool] = []

        async def b() -> None:
            async with rkv.Lock(b_db, "f", ttl=TTL) as lock:
                assert lock.revision is not None
                assert store.write(lock.revision, "B")
                b_wrote.set()

        a_lost: list[rkv.LockLost] = []
        a_holds = trio.Event()

        async def a() -> None:
            try:
                async with rkv.Lock(a_db, "f", ttl=TTL) as lock:
                    token = lock.revision
                    assert token is not None and store.write(token, "A1")
                    a_holds.set()
                    with trio.CancelScope(shield=True):  # the pause
                        await wait_keys(a_db, "f", 2)  # B waits
                        assert lock.lease_id is not None
                        await a_db.lease_revoke(lock.lease_id)
                        with trio.fail_after(10):
                            await b_wrote.wait()
                        late.append(store.write(token, "A2"))
            except rkv.LockLost as exc:
                a_lost.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(a)
            await a_holds.wait()
            nursery.start_soon(b)
        assert late == [False]
        assert len(a_lost) == 1  # and A's body ended with LockLost after its pause
        assert [v for _, v in store.writes] == ["A1", "B"]


async def test_is_owner_guards_a_write(tmp_path: Path) -> None:
    async with cluster(tmp_path) as (db,):
        async with rkv.Lock(db, "g", ttl=TTL) as lock:
            r = await db.txn([lock.is_owner()], [rkv.TxnOp.put("guarded", "1")])
            assert r.succeeded
            owner = lock.is_owner()
        r = await db.txn([owner], [rkv.TxnOp.put("guarded", "2")])
        assert not r.succeeded
        assert await db.get("guarded") == b"1"


@pytest.mark.parametrize(
    ("kwargs", "msg"),
    [
        ({"name": ""}, "name must be 1..380 bytes"),
        ({"timeout": 0}, "timeout must be positive"),
        ({"max_waiters": 0}, "max_waiters must be a positive integer"),
    ],
)
async def test_bad_arguments(kwargs: dict[str, object], msg: str) -> None:
    args: dict[str, object] = {"name": "x", **kwargs}
    with pytest.raises(ValueError, match=msg):
        rkv.Lock(None, **args)  # type: ignore[arg-type]


async def test_a_release_wakes_only_the_next_waiter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No thundering herd: with five waiters queued, each release makes one waiter read the
    queue again (the one watching the released key), not all five."""
    from rkv.recipes import queue

    reads = 0
    real_scan = queue._scan

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal reads
        reads += 1
        return await real_scan(*args, **kwargs)

    monkeypatch.setattr(queue, "_scan", counted)
    async with cluster(tmp_path) as (db,):
        acquired: list[int] = []
        go = [trio.Event() for _ in range(5)]

        async def waiter(i: int) -> None:
            async with rkv.Lock(db, "h", ttl=TTL):
                acquired.append(i)
                await go[i].wait()

        async def wait_acquired(n: int) -> None:
            with trio.fail_after(10):
                while len(acquired) < n:
                    await trio.sleep(0.01)

        async with trio.open_nursery() as nursery:
            async with rkv.Lock(db, "h", ttl=TTL):
                for i in range(5):
                    nursery.start_soon(waiter, i)
                    await wait_keys(db, "h", i + 2)
                with trio.fail_after(10):
                    while reads < 6:  # the holder's and each waiter's first read
                        await trio.sleep(0.01)
                await trio.sleep(0.3)
                assert reads == 6
            await wait_acquired(1)
            await trio.sleep(0.3)  # any other waiter woken would have read by now
            assert reads == 7
            for i in range(5):
                go[i].set()
                await wait_acquired(min(i + 2, 5))
            await trio.sleep(0.3)
            assert reads == 11
        assert acquired == [0, 1, 2, 3, 4]
