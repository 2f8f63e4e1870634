"""rkv.recipes.queue's reads on an in-process 3-node cluster: the queue read in pages with
`after` and each key's record (no txn), the members in create order with the revision each
was seen alive at, the `max_waiters` bound (an error, never a partial queue), a member
created after the first page's revision left out (it comes after every listed one), and
locks taken in queue order when every queue read takes several pages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

import rkv
from rkv.recipes import queue

from .clusters import cluster

TTL = 5.0


async def _members(db: rkv.Client, prefix: bytes, n: int) -> list[queue.Member]:
    """`n` members joined in order, each with its own lease."""
    out = []
    for i in range(n):
        lease = await db.lease_grant(TTL)
        out.append(await queue.join(db, prefix, lease.id, b"m%d" % i))
    return out


@pytest.mark.parametrize(
    ("page", "members", "others", "max_waiters", "pages"),
    [
        (1000, 5, 0, 100_000, 1),
        (2, 5, 0, 100_000, 3),  # 2 + 2 + 1
        (2, 4, 0, 100_000, 3),  # a full last page: one more, empty, read
        (1, 3, 2, 100_000, 6),  # keys of longer names under the prefix count, are skipped
        (2, 5, 0, 5, 3),  # exactly max_waiters keys
        (1000, 5, 1, 6, 1),
    ],
)
async def test_read_pages_with_records_and_no_txn(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    page: int,
    members: int,
    others: int,
    max_waiters: int,
    pages: int,
) -> None:
    monkeypatch.setattr(queue, "PAGE", page)
    async with cluster(tmp_path) as (db,):
        joined = await _members(db, b"q/", members)
        for i in range(others):
            await db.put(b"q/x%d" % i, "not a member")
        scans = 0
        real = queue._scan

        async def counted(*args: Any) -> Any:
            nonlocal scans
            scans += 1
            return await real(*args)

        async def no_txn(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("a queue read sends no txn")

        monkeypatch.setattr(queue, "_scan", counted)
        monkeypatch.setattr(db, "txn", no_txn)
        q = await queue.read(db, b"q/", max_waiters)
        assert scans == pages
        assert [(m.key, m.value, m.create_revision) for m in q.members] == [
            (m.key, m.value, m.create_revision) for m in joined
        ]
        assert all(q.scanned <= m.seen_at for m in q.members)
        assert q.scanned >= joined[-1].create_revision


@pytest.mark.parametrize(("page", "max_waiters"), [(1000, 4), (2, 4), (1, 1), (3, 3)])
async def test_more_keys_than_max_waiters_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, page: int, max_waiters: int
) -> None:
    monkeypatch.setattr(queue, "PAGE", page)
    async with cluster(tmp_path) as (db,):
        await _members(db, b"q/", max_waiters + 1)
        with pytest.raises(rkv.Unavailable, match=f"more than {max_waiters} keys"):
            await queue.read(db, b"q/", max_waiters)


async def test_a_member_created_after_the_first_page_is_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the first and the second page another member joins with a key the second
    page lists: its create revision is after the first page's, so the read leaves it out
    (a member created meanwhile with a key of the first page would be missed: the read
    must not list one and not the other)."""
    monkeypatch.setattr(queue, "PAGE", 1)
    async with cluster(tmp_path) as (db,):
        first = await db.lease_grant(TTL, lease_id=1)
        old = await queue.join(db, b"q/", first.id, b"old")
        late = await db.lease_grant(TTL, lease_id=9)
        real = queue._scan
        calls = 0

        async def join_between(*args: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == 2:
                await queue.join(db, b"q/", late.id, b"late")
            return await real(*args)

        monkeypatch.setattr(queue, "_scan", join_between)
        q = await queue.read(db, b"q/", 10)
        assert [m.key for m in q.members] == [old.key]
        assert calls == 3  # the late key was on the second page, then an empty one
        monkeypatch.setattr(queue, "_scan", real)
        again = await queue.read(db, b"q/", 10)
        assert [m.value for m in again.members] == [b"old", b"late"]


async def test_locks_in_queue_order_when_reads_take_pages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(queue, "PAGE", 1)
    async with cluster(tmp_path) as (db,):
        order: list[int] = []
        inside = 0

        async def waiter(i: int) -> None:
            nonlocal inside
            async with rkv.Lock(db, "pl", ttl=TTL):
                inside += 1
                assert inside == 1, "two holders at once"
                order.append(i)
                await trio.sleep(0.02)
                inside -= 1

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery, rkv.Lock(db, "pl", ttl=TTL):
                for i in range(4):
                    nursery.start_soon(waiter, i)
                    while len(await db.scan("pl/")) < i + 2:
                        await trio.sleep(0.01)
        assert order == [0, 1, 2, 3]


async def test_joining_with_a_lease_already_gone_is_lock_lost(tmp_path: Path) -> None:
    """A lease that expired or was revoked before its member key is put: LockLost (what a
    lock's user catches), not the txn's LeaseNotFound; and no key is left behind."""
    async with cluster(tmp_path) as (db,):
        lease = await db.lease_grant(TTL)
        assert await db.lease_revoke(lease.id)
        with pytest.raises(rkv.LockLost, match="gone before its key was put"):
            await queue.join(db, b"q/", lease.id, b"m")
        assert await db.scan(b"q/") == []
