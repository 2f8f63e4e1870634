"""Hot backup during concurrent writes, restore into a new single-node data dir, and the
refusal of damaged backups."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import trio

import rkv
from rkv.backup import (
    MAGIC,
    BackupCorrupt,
    BackupSource,
    BackupWriter,
    RestoreError,
    encode_header,
    restore,
    verify,
)
from rkv.config import NodeConfig
from rkv.errors import NotFound, Unavailable
from rkv.node import run_node
from rkv.raft.types import ConfState

from .conftest import addrs_of, cli, cluster, configs, free_ports, run_cli, wait_leader


async def test_backup_during_writes_then_restore_a_single_node(tmp_path: Path) -> None:
    dest = tmp_path / "cluster.rkvbak"
    acked: dict[str, str] = {}
    attempted: dict[str, str] = {}
    async with cluster(configs(tmp_path / "src", http_port=None)) as nodes:
        await wait_leader(nodes)
        async with rkv.connect(addrs_of(nodes), timeout=10) as c:
            blob = tmp_path / "blob.bin"
            blob.write_bytes(bytes(range(256)) * 5000)  # ~1.2 MiB: two chunks
            await c.upload("photo", blob, chunk_size=1 << 20)
            stop = trio.Event()

            async def writer(w: int) -> None:
                i = 0
                while not stop.is_set():
                    k, v = f"w{w}-{i:05d}", f"value-{w}-{i}"
                    attempted[k] = v
                    await c.put(k, v)
                    acked[k] = v
                    i += 1

            async with trio.open_nursery() as nursery:
                for w in range(3):
                    nursery.start_soon(writer, w)
                with trio.fail_after(10):
                    while len(acked) < 60:
                        await trio.sleep(0.01)
                acked_before = dict(acked)
                manifest = await c.backup(dest)
                # writes continued while the backup ran
                n_at_end = len(acked)
                with trio.fail_after(10):
                    while len(acked) < n_at_end + 10:
                        await trio.sleep(0.01)
                stop.set()
    assert dest.is_file()
    assert not dest.with_name(dest.name + ".partial").exists()
    assert verify(dest) == manifest
    assert manifest["keys"] >= len(acked_before)
    assert manifest["files"] == 1
    assert manifest["index"] > len(acked_before)

    port = free_ports(1)[0]
    cfg = NodeConfig.create(f"127.0.0.1:{port}", [], data_dir=tmp_path / "restored")
    restored = restore(dest, cfg.data_dir, node_id=cfg.id, cluster_id=cfg.cluster_id)
    assert restored == manifest
    async with trio.open_nursery() as nursery:
        node = await nursery.start(run_node, cfg)
        await wait_leader([node])
        async with rkv.connect([cfg.id], timeout=10) as c:
            items = await c.scan("w", limit=10_000)
            got = {k.decode(): v.decode() for k, v in items}
            # everything acknowledged before the backup started is in it, unchanged
            for k, v in acked_before.items():
                assert got.get(k) == v, k
            # and nothing that was never written
            for k, v in got.items():
                assert attempted[k] == v
            assert len(got) == manifest["keys"]
            out = tmp_path / "photo.out"
            await c.download("photo", out)
            assert out.read_bytes() == blob.read_bytes()
            # the restored node is a working single-node cluster
            await c.put("new", "after-restore")
            assert await c.get("new") == b"after-restore"
            st = (await c.status())[0]
            assert st["role"] == "leader"
            assert st["applied"] > manifest["index"]
        nursery.cancel_scope.cancel()


@pytest.fixture(scope="module")
def small_backup(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid backup of a one-node cluster holding a few keys."""
    root = tmp_path_factory.mktemp("small")
    dest = root / "small.rkvbak"

    async def make() -> None:
        cfg = configs(root, 1, http_port=None)[0]
        async with trio.open_nursery() as nursery:
            node = await nursery.start(run_node, cfg)
            await wait_leader([node])
            async with rkv.connect([cfg.id], timeout=10) as c:
                for i in range(5):
                    await c.put(f"k{i}", f"v{i}")
                await c.backup(dest)
            nursery.cancel_scope.cancel()

    trio.run(make)
    return dest


def _flip(data: bytearray, pos: int) -> bytearray:
    data[pos] ^= 0xFF
    return data


def _header_len(data: bytes) -> int:
    return len(MAGIC) + 4 + int.from_bytes(data[8:12], "big") + 32


def _tamper_manifest(data: bytes) -> bytes:
    n = int.from_bytes(data[8:12], "big")
    m = json.loads(data[12 : 12 + n])
    m["index"] += 1  # checksum left as it was
    body = json.dumps(m, sort_keys=True, separators=(",", ":")).encode()
    return data[:8] + len(body).to_bytes(4, "big") + body + data[12 + n :]


def _reheader(data: bytes) -> bytes:
    """A consistent header around data that is not what the manifest says (data flipped,
    then the manifest rewritten with a matching checksum of itself but the old data sha)."""
    h = _header_len(data)
    n = int.from_bytes(data[8:12], "big")
    m = json.loads(data[12 : 12 + n])
    return encode_header(m) + bytes(_flip(bytearray(data[h:]), 5000))


CORRUPTIONS = {
    "data byte flipped": lambda d: bytes(_flip(bytearray(d), len(d) - 100)),
    "data byte flipped in a valid header": _reheader,
    "truncated data": lambda d: d[:-1],
    "extra data": lambda d: d + b"x",
    "bad magic": lambda d: b"NOTABAK!" + d[8:],
    "manifest edited": _tamper_manifest,
    "manifest checksum flipped": lambda d: bytes(_flip(bytearray(d), _header_len(d) - 1)),
    "truncated header": lambda d: d[:10],
    "empty file": lambda d: b"",
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_damaged_backups_are_refused(small_backup: Path, tmp_path: Path, name: str) -> None:
    bad = tmp_path / "bad.rkvbak"
    bad.write_bytes(CORRUPTIONS[name](small_backup.read_bytes()))
    with pytest.raises(BackupCorrupt):
        verify(bad)
    target = tmp_path / "d"
    with pytest.raises(BackupCorrupt):
        restore(bad, target, node_id="127.0.0.1:7000", cluster_id="rkv-x")
    assert not (target / "data.mdb").exists()


def test_cli_refuses_a_corrupt_backup_with_exit_4(small_backup: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.rkvbak"
    bad.write_bytes(CORRUPTIONS["data byte flipped"](small_backup.read_bytes()))
    r = run_cli("restore", str(bad), "--data-dir", str(tmp_path / "d"), "--port", "7001")
    assert r.returncode == 4, r.stderr
    assert r.stderr.count("\n") == 1 and "checksum mismatch" in r.stderr
    assert "Traceback" not in r.stderr
    ok = run_cli("restore", str(small_backup), "--check")
    assert ok.returncode == 0 and "intact" in ok.stdout, ok.stderr


def test_restore_refuses_a_data_dir_with_data(small_backup: Path, tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "something").write_text("x")
    with pytest.raises(RestoreError, match="not empty"):
        restore(small_backup, d, node_id="127.0.0.1:7000", cluster_id="rkv-x")
    r = cli("restore", str(small_backup), "--data-dir", str(d))
    assert r.exit_code == 2 and "not empty" in r.stderr


async def test_backup_source_limits(tmp_path: Path) -> None:
    cfg = configs(tmp_path, 1, http_port=None)[0]
    async with trio.open_nursery() as nursery:
        node = await nursery.start(run_node, cfg)
        await wait_leader([node])
        src = BackupSource(node.store, tmp_path, {"cluster_id": "c", "node_id": "n"}, max_open=2)
        t1, m1 = await src.begin()
        t2, _ = await src.begin()
        with pytest.raises(Unavailable, match="already in progress"):
            await src.begin()
        data = await src.read(t1, 0, 4 << 20)
        assert len(data) == m1["data_size"]
        assert await src.read(t1, m1["data_size"], 100) == b""
        assert src.end(t1) and not src.end(t1)
        with pytest.raises(NotFound):
            await src.read(t1, 0, 10)
        t3, _ = await src.begin()  # a slot was freed
        src.close()
        assert src.in_progress == 0
        with pytest.raises(NotFound):
            await src.read(t2, 0, 10)
        del t3
        # an abandoned copy expires
        idle = BackupSource(node.store, tmp_path, {}, max_open=1, idle=0.05)
        await idle.begin()
        await trio.sleep(0.1)
        await idle.begin()
        idle.close()
        nursery.cancel_scope.cancel()


def test_header_round_trip() -> None:
    from rkv.backup import read_header

    m = {
        "format": 1,
        "index": 3,
        "term": 2,
        "keys": 1,
        "files": 0,
        "data_size": 0,
        "data_sha256": "0" * 64,
    }
    h = encode_header(m)
    got, offset = read_header(io.BytesIO(h), "x")
    assert got == m and offset == len(h)


async def test_restore_drops_a_staged_snapshot_and_the_log(tmp_path: Path) -> None:
    """A node caught mid-way through receiving a snapshot: the backup holds the live state,
    the restore discards the staged one and the whole log."""
    from rkv.codec import Put, Request, encode_request, encode_snapshot_chunk
    from rkv.raft.types import Entry, HardState, SnapshotMeta
    from rkv.store import open_store

    src_dir = tmp_path / "src"
    store = open_store(str(src_dir), cluster_id="c", node_id="a:1", voters=["a:1", "b:2"])
    try:
        cid = b"0123456789abcdef"
        entries = [
            Entry(term=2, index=i, data=encode_request(Request(cid, i, Put(b"k%d" % i, b"v"))))
            for i in range(1, 6)
        ]
        store.save(HardState(term=2, vote="a:1", commit=5), entries)
        store.apply(entries[:4])  # entry 5 is committed but not applied yet
        store.begin_snapshot_install(SnapshotMeta(index=50, term=3, voters=("a:1", "b:2")))
        # a staged key in the non-live generation (db 0 = kv)
        store.stage_snapshot_chunk(0, encode_snapshot_chunk([(0, b"staged", b"x")]))
        store.finish_snapshot_staging(1, 1)
        assert store.staged_snapshot() is not None
        dest = tmp_path / "b.rkvbak"
        manifest = await backup_to_file(store, tmp_path, dest)
    finally:
        store.close()
    assert (manifest["index"], manifest["term"], manifest["keys"]) == (4, 2, 4)
    restored = restore(dest, tmp_path / "d", node_id="n:9", cluster_id="rkv-new")
    assert restored["index"] == 4
    s = open_store(str(tmp_path / "d"), cluster_id="rkv-new", node_id="n:9", voters=["n:9"])
    try:
        assert s.staged_snapshot() is None
        assert s.applied_index() == 4
        assert s.initial_state() == (HardState(term=2, vote="", commit=4), ConfState(("n:9",)))
        assert (s.first_index(), s.last_index()) == (5, 4)  # no log: a snapshot at 4
        assert s.get(b"k4") == b"v" and s.get(b"k5") is None
        assert s.get(b"staged") is None
    finally:
        s.close()
    # the staged generation was emptied, not just forgotten (its bytes would bloat the copy)
    import lmdb

    env = lmdb.open(str(tmp_path / "d"), max_dbs=12, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            for name in (b"kv.1", b"files.1", b"sessions.1"):
                assert txn.stat(env.open_db(name, txn=txn, create=False))["entries"] == 0
            assert txn.stat(env.open_db(b"kv", txn=txn, create=False))["entries"] == 4
    finally:
        env.close()


async def backup_to_file(store: Any, tmp_path: Path, dest: Path) -> dict[str, Any]:
    """What `rkv backup` does, in this process: a backup of `store` written to `dest`."""
    src = BackupSource(store, tmp_path, {"cluster_id": "c", "node_id": "a:1"})
    token, manifest = await src.begin()
    w = BackupWriter(dest, manifest)
    off = 0
    while chunk := await src.read(token, off, 1 << 20):
        w.write(chunk)
        off += len(chunk)
    w.finish()
    src.end(token)
    return manifest


async def test_a_backup_keeps_chunks_pinned_in_the_log(tmp_path: Path) -> None:
    """Staged chunks kept in their log records (rkv.store.kv, "pinned") outlive the log's
    compaction; a restore drops the log but keeps them."""
    import hashlib

    from rkv.codec import FileChunk, FileCommit, Request, encode_request
    from rkv.raft.types import Entry, HardState
    from rkv.store import open_store

    parts = [bytes([n]) * 20_000 for n in range(5)]
    blob = b"".join(parts)
    cmds: list[Any] = [FileChunk(b"file", b"up", n, p) for n, p in enumerate(parts)]
    cmds.append(FileCommit(b"file", b"up", len(blob), 5, hashlib.sha256(blob).digest()))
    es = [Entry(1, i + 1, encode_request(Request(b"", 0, c))) for i, c in enumerate(cmds)]
    store = open_store(str(tmp_path / "src"), cluster_id="c", node_id="a:1", voters=["a:1"])
    try:
        store.save(HardState(1, "", len(es)), es)
        store.apply(es)
        store.compact(len(es))
        assert store.stats()["pinned_bytes"] == len(blob)
        dest = tmp_path / "b.rkvbak"
        await backup_to_file(store, tmp_path, dest)
    finally:
        store.close()
    restore(dest, tmp_path / "d", node_id="n:9", cluster_id="rkv-new")
    s = open_store(str(tmp_path / "d"), cluster_id="rkv-new", node_id="n:9", voters=["n:9"])
    try:
        assert b"".join(s.read_chunk(b"file", n) for n in range(5)) == blob
        assert s.stats()["pinned_bytes"] == len(blob)
    finally:
        s.close()
