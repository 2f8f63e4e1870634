"""Snapshots of the state machine: produce a chunked stream from one store, stage it in
another, install it atomically; log compaction. Runs against both store kinds (and across
them: a stream from the LMDB store installs into the memory twin and the other way round).
"""

from __future__ import annotations

import hashlib
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rkv.codec import (
    FileChunk,
    FileCommit,
    Put,
    Request,
    decode_snapshot_chunk,
    encode_request,
    encode_snapshot_chunk,
)
from rkv.raft.storage import Compacted
from rkv.raft.types import Entry, HardState, Snapshot, SnapshotMeta
from rkv.store import (
    CorruptionError,
    LmdbStore,
    MemoryStore,
    NotFoundError,
    Record,
    SnapshotError,
    StoreError,
    open_store,
)
from rkv.store import raft_store as logdb
from rkv.store.commands import UploadHashes
from rkv.store.kv import encode_record

from .harness import VOTERS, Harness, Store

CLIENT = b"client-snapshot1"


def fill(s: Store, n_keys: int = 40, *, term: int = 1, tag: bytes = b"v") -> None:
    """Keys, an overwritten key, a committed 3-chunk file, a staged (uncommitted) upload and
    client sessions, logged and applied as entries after the store's last index."""
    start = s.last_index() + 1
    datas: list[bytes] = []
    seq = 0

    def add(cmd: object, client: bytes = b"") -> None:
        nonlocal seq
        seq += 1
        datas.append(encode_request(Request(client, seq if client else 0, cmd)))  # type: ignore[arg-type]

    for i in range(n_keys):
        add(Put(b"key%04d" % i, tag * (i + 1)), CLIENT if i % 3 == 0 else b"")
    add(Put(b"key0001", tag + b"-overwritten"))
    parts = [b"a" * 700, b"b" * 700, b"c" * 10]
    for n, p in enumerate(parts):
        add(FileChunk(b"file", b"up1", n, p), CLIENT)
    blob = b"".join(parts)
    add(FileCommit(b"file", b"up1", len(blob), 3, hashlib.sha256(blob).digest()), CLIENT)
    add(FileChunk(b"pending", b"up2", 0, b"staged data"), b"client-other-001")
    es = [Entry(term=term, index=start + i, data=d) for i, d in enumerate(datas)]
    s.save(HardState(term, "", es[-1].index), es)
    s.apply(es)


def state(s: Store) -> dict[str, object]:
    m = s.file_manifest(b"file")
    return {
        "kv": s.scan(b"", 10_000),
        "manifest": m,
        "chunks": [s.read_chunk(b"file", n) for n in range(m.chunks)] if m else [],
        "sessions": (s.session(CLIENT), s.session(b"client-other-001")),
        "applied": s.applied_index(),
    }


def transfer(src: Store, dst: Store, max_chunk: int = 512) -> Snapshot:
    """What the node does: stream src's state chunk by chunk into dst's staging area."""
    with src.open_snapshot(max_chunk) as source:
        meta = source.meta
        dst.begin_snapshot_install(meta)
        for seq, chunk in enumerate(source.chunks()):
            dst.stage_snapshot_chunk(seq, chunk)
        assert dst.staged_snapshot() is None  # not complete until the sender says so
        assert dst.finish_snapshot_staging(source.chunk_count, source.records) == meta
    assert dst.staged_snapshot() == meta
    return Snapshot(meta=meta)


@pytest.fixture(params=["lmdb", "memory"])
def dst_harness(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    h = Harness(request.param, tmp_path / "dst")
    yield h  # type: ignore[misc]
    h.close_all()


def test_round_trip_across_store_kinds(store: Store, dst_harness: Harness) -> None:
    fill(store)
    dst = dst_harness.open()
    fill(dst, 5, tag=b"old")  # a follower with older, different state and log
    snap = transfer(store, dst)
    assert snap.meta.index == store.applied_index() and snap.meta.term == 1
    assert snap.meta.voters == VOTERS
    dst.install_snapshot(HardState(2, "", snap.meta.index), [], snap)
    assert state(dst) == state(store)
    assert dst.state_hash() == store.state_hash()
    assert (dst.first_index(), dst.last_index()) == (snap.meta.index + 1, snap.meta.index)
    assert dst.snapshot().meta == snap.meta
    assert dst.staged_snapshot() is None
    # sessions came along: a retried request returns the saved result, not a new apply
    sess = store.session(CLIENT)
    assert sess is not None
    data = encode_request(Request(CLIENT, sess.seq, Put(b"key0000", b"x")))
    retry = Entry(2, snap.meta.index + 1, data)
    dst.save(None, [retry])
    assert dst.apply([retry]) == [sess.result]
    assert dst.get(b"key0000") == store.get(b"key0000")
    # and the installed state survives a restart
    dst2 = dst_harness.reopen(dst)
    assert state(dst2) == {**state(store), "applied": snap.meta.index + 1}


def test_chunks_are_bounded(store: Store) -> None:
    fill(store, 200)
    with store.open_snapshot(2048) as source:
        chunks = list(source.chunks())
        assert source.chunk_count == len(chunks) > 5
        records = [decode_snapshot_chunk(c) for c in chunks]
        assert source.records == sum(len(r) for r in records)
    for recs in records:
        sizes = [len(k) + len(v) + 16 for _, k, v in recs]
        # at most max_chunk, unless a single record is bigger by itself
        assert sum(sizes) <= 2048 or len(recs) == 1
    keys = [(db, k) for recs in records for db, k, _ in recs]
    assert keys == sorted(keys)


def test_lmdb_snapshot_is_a_fixed_view_while_writes_go_on(tmp_path: Path) -> None:
    h = Harness("lmdb", tmp_path / "src")
    src = h.open()
    fill(src)
    before = state(src)
    with src.open_snapshot(300) as source:
        it = source.chunks()
        first = next(it)
        fill(src, 60, term=2, tag=b"new")  # writes are not blocked by the open stream
        rest = list(it)
        meta = source.meta
        n_chunks, n_records = source.chunk_count, source.records
    assert meta.index == before["applied"] and src.applied_index() > meta.index
    dst = MemoryStore("c1", "n2", VOTERS)
    dst.begin_snapshot_install(meta)
    for seq, c in enumerate([first, *rest]):
        dst.stage_snapshot_chunk(seq, c)
    dst.finish_snapshot_staging(n_chunks, n_records)
    dst.install_snapshot(None, [], Snapshot(meta))
    assert state(dst) == before
    h.close_all()


def test_restarted_transfer_discards_the_partial_one(store: Store, dst_harness: Harness) -> None:
    fill(store, 100)
    dst = dst_harness.open()
    with store.open_snapshot(512) as source:
        meta = source.meta
        dst.begin_snapshot_install(meta)
        it = source.chunks()
        dst.stage_snapshot_chunk(0, next(it))
        dst.stage_snapshot_chunk(1, next(it))
    with pytest.raises(SnapshotError):  # the sender is gone: finishing now must fail
        dst.finish_snapshot_staging(2, 999)
    with pytest.raises(SnapshotError):
        dst.install_snapshot(None, [], Snapshot(meta))
    snap = transfer(store, dst)  # starts over from chunk 0
    dst.install_snapshot(None, [], snap)
    assert state(dst) == state(store)


@pytest.mark.parametrize(
    "mistake",
    ["chunk out of order", "chunk repeated", "no staging", "wrong record count", "bad chunk"],
)
def test_staging_refuses_mistakes(store: Store, dst_harness: Harness, mistake: str) -> None:
    fill(store)
    dst = dst_harness.open()
    with store.open_snapshot(512) as source:
        chunks = list(source.chunks())
        meta, records = source.meta, source.records
    if mistake != "no staging":
        dst.begin_snapshot_install(meta)
    err: type[Exception] = SnapshotError
    if mistake == "chunk out of order":
        seqs = [1]
    elif mistake == "chunk repeated":
        dst.stage_snapshot_chunk(0, chunks[0])
        seqs = [0]
    elif mistake == "bad chunk":
        chunks[0] = chunks[0][:-1] + bytes([chunks[0][-1] ^ 1])
        seqs, err = [0], CorruptionError
    else:
        seqs = [0]
    if mistake == "wrong record count":
        for seq, c in enumerate(chunks):
            dst.stage_snapshot_chunk(seq, c)
        with pytest.raises(SnapshotError):
            dst.finish_snapshot_staging(len(chunks), records + 1)
    else:
        with pytest.raises(err):
            for seq in seqs:
                dst.stage_snapshot_chunk(seq, chunks[seq])
    assert dst.staged_snapshot() is None
    with pytest.raises(SnapshotError):
        dst.install_snapshot(None, [], Snapshot(meta))


def test_install_requires_matching_meta_and_a_newer_index(store: Store) -> None:
    fill(store, 10)
    meta = SnapshotMeta(index=store.applied_index() + 5, term=3, voters=VOTERS)
    store.begin_snapshot_install(meta)
    store.stage_snapshot_chunk(
        0, encode_snapshot_chunk([(0, b"k", encode_record(Record(b"v", 1, 1, 1)))])
    )
    store.finish_snapshot_staging(1, 1)
    with pytest.raises(SnapshotError):
        store.install_snapshot(None, [], Snapshot(SnapshotMeta(meta.index, 4, VOTERS)))
    with pytest.raises(SnapshotError):
        store.install_snapshot(None, [], Snapshot(SnapshotMeta(store.applied_index(), 1)))
    with pytest.raises(SnapshotError):
        store.install_snapshot(None, [], Snapshot())
    with pytest.raises(SnapshotError):
        store.begin_snapshot_install(SnapshotMeta())


def test_failure_inside_the_install_transaction_keeps_the_old_state(
    store: Store, dst_harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(store, 30)
    dst = dst_harness.open()
    fill(dst, 5, tag=b"old")
    old, old_log = state(dst), (dst.first_index(), dst.last_index())
    snap = transfer(store, dst)

    def boom(*_a: object) -> None:
        raise RuntimeError("injected failure in the middle of the install")

    # the log is dropped after the state machine was swapped, in the same transaction
    monkeypatch.setattr(logdb, "delete_from", boom)
    if isinstance(dst, MemoryStore):
        monkeypatch.setattr(dst, "_save", lambda *a, **k: boom())
    with pytest.raises(RuntimeError):
        dst.install_snapshot(HardState(5, "", snap.meta.index), [], snap)
    assert state(dst) == old
    assert (dst.first_index(), dst.last_index()) == old_log
    assert dst.staged_snapshot() == snap.meta  # still staged: the install can be retried
    monkeypatch.undo()
    dst.install_snapshot(HardState(5, "", snap.meta.index), [], snap)
    assert state(dst) == state(store)


def test_compact(harness: Harness) -> None:
    s = harness.open()
    fill(s, 200)
    applied = s.applied_index()
    s.save(None, [Entry(1, applied + 1, b"unapplied")])
    with pytest.raises(StoreError):
        s.compact(applied + 1)  # not applied yet
    before = s.log_bytes()
    s.compact(applied - 3)
    assert s.log_bytes() < before
    assert (s.first_index(), s.last_index()) == (applied - 2, applied + 1)
    assert s.snapshot().meta == SnapshotMeta(applied - 3, 1, VOTERS)
    assert s.term(applied - 3) == 1
    with pytest.raises(Compacted):
        s.entries(applied - 3, applied)
    with pytest.raises(Compacted):
        s.compact(applied - 3)
    assert s.entries(applied - 2, applied + 2)[-1].data == b"unapplied"
    s = harness.reopen(s)
    assert (s.first_index(), s.last_index()) == (applied - 2, applied + 1)
    assert s.applied_index() == applied
    # a snapshot taken after compaction still has the term of the applied index
    s.compact(applied)
    with s.open_snapshot() as source:
        assert (source.meta.index, source.meta.term) == (applied, 1)


def test_empty_store_snapshot(store: Store) -> None:
    with store.open_snapshot() as source:
        assert source.meta == SnapshotMeta(0, 0, VOTERS)
        assert list(source.chunks()) == []
        assert (source.records, source.chunk_count) == (0, 0)


def test_open_snapshot_grows_the_map_first(tmp_path: Path) -> None:
    h = Harness("lmdb", tmp_path / "grow")
    s = h.open(map_size=1 << 20)
    assert isinstance(s, LmdbStore)
    fill(s, 10)
    with s.open_snapshot():
        pass
    assert s.stats()["map_size"] >= 256 << 20
    h.close_all()


def _open_crash(path: Path) -> LmdbStore:
    return open_store(path, cluster_id="crash", node_id="n1", voters=("n1", "n2"))


def test_sigkill_during_staging_or_install_leaves_old_or_new_state(tmp_path: Path) -> None:
    from . import snap_installer

    base = tmp_path / "base"
    s = _open_crash(base)
    old = [Entry(1, i, encode_request(Request(b"", 0, Put(b"old%d" % i, b"o")))) for i in (1, 2)]
    s.save(HardState(1, "", 2), old)
    s.apply(old)
    s.close()
    old_kv = [(b"old1", b"o"), (b"old2", b"o")]
    new_kv = snap_installer.new_state().scan(b"", 10_000)

    def run(kill: str, delay: float = 0.0) -> tuple[str, float, float]:
        """kill: "never" (run to the end), "staging" (`delay` s after start) or "install"
        (`delay` s after the child said it staged everything)."""
        d = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        shutil.copytree(base, d)
        t0 = time.monotonic()
        p = subprocess.Popen(
            [sys.executable, "-m", "tests.store.snap_installer", str(d)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=Path(__file__).resolve().parents[2],
        )
        assert p.stdout is not None
        staged_at = installed_at = 0.0
        if kill == "staging":
            time.sleep(delay)
        else:
            assert p.stdout.readline().strip() == b"staged"
            staged_at = time.monotonic() - t0
            if kill == "install":
                time.sleep(delay)
            else:
                assert p.stdout.readline().strip() == b"installed"
                installed_at = time.monotonic() - t0
        p.kill()
        p.wait()
        st = _open_crash(d)
        try:
            kv = st.scan(b"", 10_000)
            if kv == old_kv:
                assert st.applied_index() == 2 and st.last_index() == 2
                return "old", staged_at, installed_at
            assert kv == new_kv, "a mix of old and new state"
            assert st.applied_index() == snap_installer.NEW_KEYS
            assert st.last_index() == snap_installer.NEW_KEYS
            assert st.snapshot().meta.index == snap_installer.NEW_KEYS
            return "new", staged_at, installed_at
        finally:
            st.close()

    outcome, staged_at, installed_at = run("never")
    assert outcome == "new"
    window = installed_at - staged_at
    rng = random.Random(7)
    assert run("staging", rng.uniform(0.5, 0.9) * staged_at)[0] == "old"
    for _ in range(2):
        # somewhere inside (or just around) the install transaction
        assert run("install", rng.uniform(0, 2 * window))[0] in ("old", "new")


# --- file commits move no data (so a 1 GiB commit does not stall the raft loop) -----------


def test_upload_hashes_track_in_order_chunks_only() -> None:
    h = UploadHashes(max_uploads=2)
    h.on_stage(b"u", 0, b"k", b"ab")
    h.on_stage(b"u", 1, b"k", b"c")
    assert h.digest(b"u", 2, b"k") == (hashlib.sha256(b"abc").digest(), 3)
    assert h.digest(b"u", 3, b"k") is None  # a chunk is missing
    assert h.digest(b"u", 2, b"other") is None
    h.on_stage(b"u", 1, b"k", b"C")  # re-staged: unknown now, the commit reads the chunks
    assert h.digest(b"u", 2, b"k") is None
    h.on_stage(b"v", 1, b"k", b"x")  # did not start at 0
    assert h.digest(b"v", 1, b"k") is None
    for u in (b"a", b"b", b"c"):
        h.on_stage(u, 0, b"k", b"x")
    assert h.digest(b"a", 1, b"k") is None and h.digest(b"c", 1, b"k") is not None  # bounded


def test_legacy_manifest_with_chunks_under_the_file_key() -> None:
    from rkv.codec import pack
    from rkv.store.kv import decode_manifest, encode_manifest

    legacy = pack([3, 1, b"s" * 32, 7, 7, 1])
    assert decode_manifest(legacy).upload_id == b""
    m = decode_manifest(legacy)
    assert decode_manifest(encode_manifest(m)) == m


@pytest.mark.parametrize("restart_before_commit", [False, True])
def test_big_commit_is_bookkeeping_and_overwrite_frees_chunks(
    harness: Harness, restart_before_commit: bool
) -> None:
    s = harness.open()
    parts = [bytes([n]) * 50_000 for n in range(20)]
    data = b"".join(parts)
    datas = [
        encode_request(Request(b"", 0, FileChunk(b"f", b"up", n, p))) for n, p in enumerate(parts)
    ]
    es = [Entry(1, i + 1, d) for i, d in enumerate(datas)]
    s.save(HardState(1, "", len(es)), es)
    s.apply(es)
    if restart_before_commit:
        s = harness.reopen(s)  # the running hash is gone: the commit reads the chunks
    commit = FileCommit(b"f", b"up", len(data), len(parts), hashlib.sha256(data).digest())
    e = Entry(1, len(es) + 1, encode_request(Request(b"", 0, commit)))
    s.save(None, [e])
    assert s.apply([e])[0].ok
    assert b"".join(s.read_chunk(b"f", n) for n in range(len(parts))) == data
    # overwrite with a small file: the big one's chunks go
    commit2 = FileCommit(b"f", b"up2", 1, 1, hashlib.sha256(b"x").digest())
    es2 = [
        Entry(1, len(es) + 2, encode_request(Request(b"", 0, FileChunk(b"f", b"up2", 0, b"x")))),
        Entry(1, len(es) + 3, encode_request(Request(b"", 0, commit2))),
    ]
    s.save(None, es2)
    assert all(r.ok for r in s.apply(es2))
    assert s.read_chunk(b"f", 0) == b"x"
    with pytest.raises(NotFoundError):
        s.read_chunk(b"f", 1)
    with s.open_snapshot() as source:  # nothing of the old upload is left to stream
        assert sum(len(c) for c in source.chunks()) < 1000


def test_map_resize_during_a_stream_revokes_it_instead_of_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rkv.store.env as env

    monkeypatch.setattr(env, "_SNAPSHOT_HEADROOM", 0)  # so that writes soon need a bigger map
    h = Harness("lmdb", tmp_path / "resize")
    s = h.open(map_size=1 << 20)
    fill(s, 50)
    source = s.open_snapshot(256)
    it = source.chunks()
    next(it)
    size = s.stats()["map_size"]
    fill(s, 400, term=2, tag=b"x" * 50)  # needs a resize: it does not wait for the stream
    assert s.stats()["map_size"] > size
    with pytest.raises(SnapshotError):
        list(it)
    source.close()
    with s.open_snapshot() as again:  # a new stream sees the new state
        assert again.meta.index == s.applied_index()
    h.close_all()
