"""The client's scans from a key (`after`), scan_all's pages, and the record reads
(get_record, scan_records) against a real one-node cluster; an older node (the fake, which
knows neither `after` nor `meta`) makes them raise BadReply instead of looping."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

import rkv
from rkv.protocol import BadReply
from rkv.testing import local_configs, running_cluster, wait_leader

from .fake import FakeCluster
from .test_sync_watch import Cluster, one_node  # noqa: F401  (the threaded one-node fixture)

KEYS = [f"s/{i:02d}" for i in range(25)] + ["s", "t/0"]


@asynccontextmanager
async def connected(tmp_path: Path) -> AsyncIterator[rkv.Client]:
    async with running_cluster(local_configs(tmp_path, 1)) as nodes:
        await wait_leader(nodes)
        async with rkv.connect(nodes[0].cfg.advertise, timeout=10) as db:
            yield db


@pytest.mark.parametrize(
    ("prefix", "limit", "after", "want"),
    [
        ("s/", 3, None, ["s/00", "s/01", "s/02"]),
        ("s/", 3, "s/02", ["s/03", "s/04", "s/05"]),
        ("s/", 100, "s/22", ["s/23", "s/24"]),
        ("s/", 100, "s/24", []),
        ("s/", 2, "s/0", ["s/00", "s/01"]),  # not a key: the keys after it
        ("", 2, "s/24", ["t/0"]),
        (b"s", 2, b"a", ["s", "s/00"]),
    ],
)
async def test_scan_after(
    tmp_path: Path, prefix: str | bytes, limit: int, after: str | None, want: list[str]
) -> None:
    async with connected(tmp_path) as db:
        for k in KEYS:
            await db.put(k, k.upper())
        got = await db.scan(prefix, limit, after=after)
        assert got == [(k.encode(), k.upper().encode()) for k in want]
        items, rev = await db.scan_revision(prefix, limit, after=after)
        assert items == got and rev is not None and rev >= len(KEYS)


@pytest.mark.parametrize("page", [1, 4, 25, 26, 1000])
async def test_scan_all_pages_through_every_key_once(tmp_path: Path, page: int) -> None:
    async with connected(tmp_path) as db:
        for k in KEYS:
            await db.put(k, "v")
        got = [k async for k, _ in db.scan_all("s/", page=page)]
        assert got == sorted(k.encode() for k in KEYS if k.startswith("s/"))
        assert [k async for k, _ in db.scan_all("none/", page=page)] == []


async def test_records_in_reads(tmp_path: Path) -> None:
    async with connected(tmp_path) as db:
        await db.put("r/a", "1")
        await db.put("r/a", "2")
        lease = await db.lease_grant(30)
        await db.put("r/b", "x", lease=lease.id)
        txn = await db.txn([], [rkv.TxnOp.get("r/a"), rkv.TxnOp.get("r/b")])
        a, b = txn.results
        assert isinstance(a, rkv.KeyValue) and isinstance(b, rkv.KeyValue)
        ra = await db.get_record("r/a")
        rb = await db.get_record("r/b")
        assert ra == rkv.KeyRecord(b"2", a.create_revision, a.mod_revision, 2, 0)
        assert rb == rkv.KeyRecord(b"x", b.create_revision, b.mod_revision, 1, lease.id)
        assert ra.create_revision < ra.mod_revision
        assert await db.get_record("r/none") is None
        records, rev = await db.scan_records("r/")
        assert records == [(b"r/a", ra), (b"r/b", rb)]
        assert rev is not None and rev >= rb.mod_revision
        assert await db.scan_records("r/", after="r/a") == ([(b"r/b", rb)], rev)
        assert await db.scan_records("none/") == ([], rev)


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda db: db.scan("s/", after=""), "after must not be empty"),
        (lambda db: db.scan("s/", after="k" * 401), "after is 401 bytes"),
        (lambda db: db.scan("s/", 0), "limit must be a positive integer"),
        (lambda db: db.get_record(""), "key must not be empty"),
    ],
)
async def test_bad_arguments(nursery: trio.Nursery, call: object, error: str) -> None:
    fake = FakeCluster(1)
    await nursery.start(fake.run)
    async with rkv.connect(fake.addrs, timeout=2) as db:
        with pytest.raises(ValueError, match=error):
            await call(db)  # type: ignore[operator]
        with pytest.raises(ValueError, match="page must be at most 10000"):
            await anext(aiter(db.scan_all("s/", page=10_001)))


async def test_an_older_node_is_refused_not_looped(nursery: trio.Nursery) -> None:
    fake = FakeCluster(1)  # answers scans from the prefix's start, gets without records
    await nursery.start(fake.run)
    async with rkv.connect(fake.addrs, timeout=2) as db:
        for k in ("p/1", "p/2", "p/3"):
            await db.put(k, "v")
        assert await db.scan("p/", 2) == [(b"p/1", b"v"), (b"p/2", b"v")]
        with pytest.raises(BadReply, match="predates 'after'"):
            await db.scan("p/", 2, after="p/2")
        with pytest.raises(BadReply, match="predates 'after'"):
            _ = [k async for k, _ in db.scan_all("p/", page=2)]
        with pytest.raises(BadReply, match="predates 'meta'"):
            await db.get_record("p/1")
        with pytest.raises(BadReply, match="predates 'meta'"):
            await db.scan_records("p/")


def test_sync_client_reads(one_node: Cluster) -> None:  # noqa: F811
    with rkv.connect_sync(one_node.addr, timeout=10) as c:
        for i in range(7):
            c.put(f"y/{i}", str(i))
        assert c.scan("y/", 2, after="y/4") == [(b"y/5", b"5"), (b"y/6", b"6")]
        items, rev = c.scan_revision("y/", 1, after="y/5")
        assert items == [(b"y/6", b"6")] and rev is not None
        assert [k for k, _ in c.scan_all("y/", page=3)] == [b"y/%d" % i for i in range(7)]
        rec = c.get_record("y/3")
        assert rec is not None and (rec.value, rec.version, rec.lease) == (b"3", 1, 0)
        records, _ = c.scan_records("y/", 1, after="y/2")
        assert records == [(b"y/3", rec)]
