"""rkv.Election on an in-process 3-node cluster: one leader at a time, in campaign order;
observe() sees the first leader, a proclaimed value, and the next leader after a resign or
a lost lease; proclaim after losing is refused; a cancelled campaign leaves no key; leader()
with and without a leader."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

import rkv

from .clusters import cluster, keys_of, wait_keys

TTL = 2.0


async def test_one_leader_at_a_time_in_campaign_order(tmp_path: Path) -> None:
    async with cluster(tmp_path, 3) as dbs:
        leading = 0
        order: list[str] = []
        tokens: list[int] = []
        observer = rkv.Election(dbs[0], "e")
        release = trio.Event()
        assert await observer.leader() is None

        async def candidate(tag: str, db: rkv.Client) -> None:
            nonlocal leading
            async with rkv.Election(db, "e", ttl=TTL) as e:
                tokens.append(await e.campaign(tag))
                leading += 1
                assert leading == 1, "two leaders at once"
                order.append(tag)
                assert await observer.leader() == (tag.encode(), tokens[-1])
                await release.wait()
                await trio.sleep(0.1)
                leading -= 1
                await e.resign()
                assert e.key is None

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for n, tag in enumerate("abc", start=1):
                    nursery.start_soon(candidate, tag, dbs[n - 1])
                    await wait_keys(dbs[0], "e", n)  # campaigned before the next one
                release.set()
        assert order == list("abc")
        assert tokens == sorted(tokens) and len(set(tokens)) == 3
        assert await observer.leader() is None
        assert await keys_of(dbs[0], "e") == []


async def test_observe_sees_leaders_and_values(tmp_path: Path) -> None:
    async with cluster(tmp_path, 2) as (db, other):
        seen: list[bytes] = []
        changed = trio.Event()

        async def observe() -> None:
            async for value, _rev in rkv.Election(other, "o").observe():
                seen.append(value)
                changed.set()

        async def wait_seen(n: int) -> None:
            nonlocal changed
            with trio.fail_after(10):
                while len(seen) < n:
                    await changed.wait()
                    changed = trio.Event()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(observe)
            await trio.sleep(0.3)  # observing an election without a leader
            async with rkv.Election(db, "o", ttl=TTL) as first:
                await first.campaign("first")
                await wait_seen(1)
                await first.proclaim("first-v2")
                await wait_seen(2)

                async def second() -> None:
                    async with rkv.Election(db, "o", ttl=TTL) as e:
                        await e.campaign("second")
                        await trio.sleep_forever()

                nursery.start_soon(second)
                await wait_keys(db, "o", 2)
                await first.resign()  # hands over to second
                await wait_seen(3)
            nursery.cancel_scope.cancel()
        assert seen == [b"first", b"first-v2", b"second"]


async def test_a_lost_lease_hands_over_and_proclaim_is_refused(tmp_path: Path) -> None:
    """The first leader pauses (shielded) while its lease is revoked (as an expiry would):
    the second candidate leads, the first's proclaim is refused, its block ends LockLost."""
    async with cluster(tmp_path) as (db,):
        obs = rkv.Election(db, "l")
        refused: list[rkv.LockLost] = []
        ended: list[rkv.LockLost] = []
        first_leads = trio.Event()

        async def first() -> None:
            try:
                async with rkv.Election(db, "l", ttl=TTL) as e:
                    await e.campaign("first")
                    first_leads.set()
                    with trio.CancelScope(shield=True):  # the pause
                        await wait_keys(db, "l", 2)
                        assert e.key is not None
                        lease = next(
                            x.id for x in await db.lease_list() if e.key.endswith(b"%016x" % x.id)
                        )
                        await db.lease_revoke(lease)
                        with trio.fail_after(10):
                            while (await obs.leader() or (b"",))[0] != b"second":
                                await trio.sleep(0.05)
                        try:
                            await e.proclaim("stale")
                        except rkv.LockLost as exc:
                            refused.append(exc)
            except rkv.LockLost as exc:
                ended.append(exc)

        async def second() -> None:
            async with rkv.Election(db, "l", ttl=TTL) as e:
                await e.campaign("second")
                await trio.sleep_forever()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(first)
            await first_leads.wait()
            nursery.start_soon(second)
            with trio.fail_after(20):
                while not ended:
                    await trio.sleep(0.05)
            now = await obs.leader()
            assert now is not None and now[0] == b"second"
            nursery.cancel_scope.cancel()
        assert len(refused) == 1 and len(ended) == 1
        assert await obs.leader() is None


async def test_a_cancelled_campaign_leaves_no_key(tmp_path: Path) -> None:
    async with cluster(tmp_path) as (db,), rkv.Election(db, "c", ttl=TTL) as leader:
        await leader.campaign("leader")
        async with rkv.Election(db, "c", ttl=TTL) as waiting:
            with trio.move_on_after(0.5) as scope:
                await waiting.campaign("waiting")
            assert scope.cancelled_caught
            assert await keys_of(db, "c") == [leader.key]
        assert await leader.leader() is not None


async def test_campaign_outside_async_with_is_refused(tmp_path: Path) -> None:
    e = rkv.Election(None, "x")  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="inside `async with`"):
        await e.campaign("v")
    with pytest.raises(RuntimeError, match="campaign first"):
        await e.proclaim("v")
    await e.resign()  # not leading: nothing to do
