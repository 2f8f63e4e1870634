"""Damaged stored records on a real node (in process: three run_node, real LMDB, loopback):
one bit flipped in each kind of record on a stopped follower, which then refuses every read
of those records with the "integrity" error (rkv.CorruptData), never the wrong bytes, keeps
serving the rest, and says it is degraded in /readyz, status and metrics; a follower
stops (ExitCode.INTEGRITY) rather than apply a write over a damaged session; a leader's
snapshot stream stops at a damaged record and the follower installs nothing.
(The store's side: tests/store/test_integrity.py; real processes: tests/e2e/test_integrity.py.)
"""

from __future__ import annotations

import io
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import lmdb
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

import rkv
from rkv.errors import ExitCode
from rkv.http import http_get
from rkv.node import Node, NodeStartError, run_node
from rkv.store import kv as kvdb
from rkv.store.seal import unseal

from .test_node_cluster import configs, free_ports
from .test_snapshot_node import Cluster, caught_up

VICTIM = b"V" * 100
PHOTO = b"A" * 5000 + b"B" * 5000  # two chunks of 5,000 bytes: each kept in its log record
NOTE = b"n" * 100 + b"o" * 100  # two chunks of 100 bytes: copied


def _live(env: lmdb.Environment, txn: lmdb.Transaction[bytes], name: bytes) -> Any:
    if name == b"log":
        return env.open_db(b"log", txn=txn, create=False)
    gen = txn.get(b"sm_gen", db=env.open_db(b"meta", txn=txn, create=False)) or b"\x00"
    return env.open_db(name + (b".1" if gen == b"\x01" else b""), txn=txn, create=False)


def flip(data_dir: Path, db: bytes, key: bytes, at: bytes | int) -> None:
    """Flip the low bit of one byte of a stored record of a stopped node: at offset `at`, or
    at the first occurrence of the bytes `at` in it."""
    env = lmdb.open(str(data_dir), max_dbs=12)
    try:
        with env.begin(write=True) as txn:
            d = _live(env, txn, db)
            old = txn.get(key, db=d)
            assert old is not None, (db, key)
            pos = old.find(at) if isinstance(at, bytes) else at % len(old)
            assert pos >= 0
            new = bytearray(old)
            new[pos] ^= 0x01
            txn.put(key, bytes(new), db=d)
    finally:
        env.close()


def chunk_log_index(data_dir: Path, file_key: bytes, n: int) -> int:
    """The log record that holds chunk n of a committed file (pinned: kv.py)."""
    env = lmdb.open(str(data_dir), max_dbs=12, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            files = _live(env, txn, b"files")
            mkey = kvdb.manifest_key(file_key)
            m = kvdb.decode_manifest(unseal("files", mkey, txn.get(mkey, db=files)))
            skey = kvdb.staged_key(m.upload_id, n)
            ref = kvdb.decode_staged_any(unseal("files", skey, txn.get(skey, db=files)))[1]
            assert isinstance(ref, tuple), "the chunk is not kept in its log record"
            return ref[0]
    finally:
        env.close()


def compacted_past_chunk(node: Node, file_key: bytes, n: int) -> bool:
    """Whether the log record holding chunk n of the file is below the node's log."""
    s = node.store
    m = s.file_manifest(file_key)
    if m is None:
        return False
    skey = kvdb.staged_key(m.upload_id, n)
    raw = s._read(lambda txn: txn.get(skey, db=s._live(txn).files))
    ref = kvdb.decode_staged_any(unseal("files", skey, raw))[1]
    assert isinstance(ref, tuple), "the chunk is not kept in its log record"
    return bool(ref[0] < s.first_index())


def damage_everything(data_dir: Path, client_id: bytes) -> None:
    """One flipped bit in each kind of record: a value, a key's metadata (its version), a
    file chunk (in its log record), a manifest, a session."""
    flip(data_dir, b"kv", b"victim", b"VVVV")
    flip(data_dir, b"kv", b"meta", -1)
    flip(data_dir, b"log", struct.pack(">Q", chunk_log_index(data_dir, b"photo", 1)), b"BBBB")
    flip(data_dir, b"files", kvdb.manifest_key(b"note"), -1)
    flip(data_dir, b"sessions", kvdb.session_key(client_id), -1)


def metric(page: bytes, name: str) -> float:
    for fam in text_string_to_metric_families(page.decode()):
        for s in fam.samples:
            if s.name == name:
                return float(s.value)
    raise AssertionError(f"no metric {name}")


async def fill(addrs: list[str]) -> bytes:
    """The records to damage, and the client id whose session is one of them. Then enough
    writes for the log to be compacted past the photo's chunks (a damaged record in the
    retained log stops a node when it starts: it reads its log back)."""
    async with rkv.connect(addrs) as c:
        await c.put("victim", VICTIM)
        await c.put("meta", b"m" * 20)
        await c.put("other", b"fine")
        await c.upload("photo", io.BytesIO(PHOTO), chunk_size=5000)
        await c.upload("note", io.BytesIO(NOTE), chunk_size=100)
        for i in range(COMPACT_EVERY + 5):
            await c.put("filler", b"%d" % i)
        return c.client_id


COMPACT_EVERY = 10
NO_SCRUB = {"scrub_records_per_second": 0.0}
"""What the read paths find, each by itself: the background scrub would find it all first
(it does: tests/node/test_compare_node.py)."""


Read = Callable[[rkv.Client], Awaitable[Any]]
READS: list[tuple[str, Read, str]] = [
    ("value", lambda c: c.get("victim"), "key b'victim'"),
    ("value, stale read", lambda c: c.get("victim", stale=True), "key b'victim'"),
    ("value, in a scan", lambda c: c.scan("vic"), "key b'victim'"),
    ("key metadata", lambda c: c.get("meta"), "key b'meta'"),
    ("file chunk", lambda c: c.download("photo", io.BytesIO()), "chunk 1 of file b'photo'"),
    ("manifest", lambda c: c.file_info("note"), "manifest of file b'note'"),
    ("manifest, download", lambda c: c.download("note", io.BytesIO()), "b'note'"),
]


async def test_a_damaged_follower_serves_no_damaged_record_and_is_degraded(
    tmp_path: Path,
) -> None:
    small = {"snapshot_entries": COMPACT_EVERY, "snapshot_keep_entries": 0}
    cfgs = configs(tmp_path, free_ports(3), http_port=0, **small, **NO_SCRUB)
    async with trio.open_nursery() as nursery:
        cl = Cluster(nursery, cfgs)
        for i in range(3):
            await cl.start(i)
        leader = await cl.leader()
        client_id = await fill([n.cfg.id for n in cl.nodes.values()])
        await caught_up(list(cl.nodes.values()))
        f = next(i for i, n in cl.nodes.items() if n is not leader)
        with trio.fail_after(10):  # all in its store (applies are batched), log compacted
            while cl.nodes[f].store.get(b"filler") != b"%d" % (COMPACT_EVERY + 4) or (
                not compacted_past_chunk(cl.nodes[f], b"photo", 1)
            ):
                await trio.sleep(0.05)
        await cl.stop(f)
        damage_everything(cfgs[f].data_dir, client_id)
        follower = await cl.start(f)
        await cl.leader()
        assert follower.integrity.degraded is None  # nothing read yet: nothing noticed

        async with rkv.connect([follower.cfg.id], timeout=5) as c:
            for n, (what, read, names) in enumerate(READS, 1):
                with pytest.raises(rkv.CorruptData) as ei:
                    await read(c)
                assert names in str(ei.value) and follower.cfg.id in str(ei.value), what
                assert follower.integrity.errors == n, what
            # the rest is served, by the damaged node too
            assert await c.get("other") == b"fine"
            assert await c.get("other", stale=True) == b"fine"
            assert await c.scan("oth") == [(b"other", b"fine")]
            assert (await c.file_info("photo")) is not None  # its chunk 1 is damaged
            rows = {r["addr"]: r for r in await c.status()}
        async with rkv.connect([leader.cfg.id]) as c:  # a healthy replica has it
            assert await c.get("victim") == VICTIM
            out = io.BytesIO()
            await c.download("note", out)
            assert out.getvalue() == NOTE

        reason = follower.integrity.degraded
        assert reason is not None and reason.startswith("integrity error: key b'victim'")
        assert "4 damaged records found" in reason  # victim, meta, photo's chunk, note
        assert rows[follower.cfg.id]["degraded"] == reason
        assert all(r["degraded"] is None for a, r in rows.items() if a != follower.cfg.id)
        assert follower.readiness() == (False, f"degraded: {reason}")
        status, body = await http_get("127.0.0.1", follower.http_port or 0, "/readyz")
        assert status == 503 and body.decode().startswith("degraded: integrity error: key")
        _, page = await http_get("127.0.0.1", follower.http_port or 0, "/metrics")
        assert metric(page, "rkv_integrity_errors_total") == len(READS)
        assert metric(page, "rkv_degraded") == 1.0
        _, page = await http_get("127.0.0.1", leader.http_port or 0, "/metrics")
        assert metric(page, "rkv_integrity_errors_total") == 0.0
        assert metric(page, "rkv_degraded") == 0.0
        status, _ = await http_get("127.0.0.1", leader.http_port or 0, "/readyz")
        assert status == 200

        # a backup of the damaged node is refused (it checks every record first)
        async with rkv.connect([follower.cfg.id], timeout=5) as c:
            with pytest.raises(rkv.CorruptData):
                await c.backup(tmp_path / "backup.bin", node=follower.cfg.id)
        assert not (tmp_path / "backup.bin").exists()
        assert follower.integrity.errors == len(READS) + 1
        nursery.cancel_scope.cancel()


async def test_a_write_over_a_damaged_session_stops_the_follower(tmp_path: Path) -> None:
    """The client's next write needs its session (exactly-once): the follower cannot apply
    it as the others did, so it stops with ExitCode.INTEGRITY instead of diverging."""
    cfgs = configs(tmp_path, free_ports(3), **NO_SCRUB)
    async with trio.open_nursery() as nursery:
        cl = Cluster(nursery, cfgs)
        for i in range(3):
            await cl.start(i)
        leader = await cl.leader()
        f = next(i for i, n in cl.nodes.items() if n is not leader)
        async with rkv.connect([leader.cfg.id]) as c:
            await c.put("k", b"1")
            with trio.fail_after(10):  # in the follower's store (applies are batched)
                while cl.nodes[f].store.session(c.client_id) is None:
                    await trio.sleep(0.02)
            await cl.stop(f)
            flip(cfgs[f].data_dir, b"sessions", kvdb.session_key(c.client_id), -1)
            stopped: list[BaseException] = []

            async def run(task_status: trio.TaskStatus[Node]) -> None:
                try:
                    await run_node(cfgs[f], task_status=task_status)
                except NodeStartError as e:
                    stopped.append(e)

            await nursery.start(run)
            await c.put("k", b"2")  # committed by the two healthy nodes
            with trio.fail_after(10):
                while not stopped:
                    await trio.sleep(0.02)
        err = stopped[0]
        assert isinstance(err, NodeStartError) and err.code == ExitCode.INTEGRITY == 16
        assert "session of client" in err.msg and "failed its checksum" in err.msg
        nursery.cancel_scope.cancel()


async def test_a_snapshot_stream_stops_at_a_damaged_record(tmp_path: Path) -> None:
    """A follower is stopped; the two others go on until their logs no longer reach it, and
    both get a damaged record (whichever leads must stream it). Restarted, the follower needs
    a snapshot: every stream stops at the damaged record, the follower installs nothing, the
    leader counts it and is degraded."""
    small = {"snapshot_entries": 20, "snapshot_keep_entries": 2, "snapshot_chunk_bytes": 1024}
    cfgs = configs(tmp_path, free_ports(3), **small, **NO_SCRUB)
    async with trio.open_nursery() as nursery:
        cl = Cluster(nursery, cfgs)
        for i in range(3):
            await cl.start(i)
        leader = await cl.leader()
        async with rkv.connect([leader.cfg.id]) as c:
            await c.put("early", b"1")
            lag = next(i for i, n in cl.nodes.items() if n is not leader)
            with trio.fail_after(10):  # in its store (applies are batched)
                while cl.nodes[lag].store.get(b"early") != b"1":
                    await trio.sleep(0.02)
            behind = cl.nodes[lag].store.applied_index()
            await cl.stop(lag)
            for i in range(60):
                await c.put(f"k{i:03d}", b"x" * 50)
            await c.put("victim", VICTIM)
        others = list(cl.nodes)
        for i in others:  # in the store, and the log compacted past the stopped follower
            n = cl.nodes[i]
            with trio.fail_after(10):
                while n.store.get(b"victim") != VICTIM or n.store.first_index() <= behind + 1:
                    await trio.sleep(0.05)
        for i in others:
            await cl.stop(i)
            flip(cfgs[i].data_dir, b"kv", b"victim", b"VVVV")
        for i in range(3):
            await cl.start(i)
        leader = await cl.leader(timeout=15)
        follower = cl.nodes[lag]
        with trio.fail_after(20):
            while leader.snap_stats["send_failures"] < 1:
                await trio.sleep(0.05)
        await trio.sleep(0.5)
        assert leader.integrity.errors >= 1 and leader.integrity.degraded is not None
        assert "key b'victim'" in leader.integrity.degraded
        assert follower.store.applied_index() == behind and follower.store.get(b"k000") is None
        assert follower.store.staged_snapshot() is None and follower.store.get(b"victim") is None
        assert follower.snapshot_statistics()["installed"] == 0
        nursery.cancel_scope.cancel()
