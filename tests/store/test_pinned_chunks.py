"""Staged file chunks kept in the log (kv.py, "pinned"): a chunk of PIN_MIN bytes or more is
not copied into the staging table at apply; its staged record names its own log record, which
compaction then keeps until the chunk is dropped. Checked here: a random program of uploads,
commits, deletes, compactions and restarts on the LMDB store against the memory twin (which
copies), the log's bookkeeping after it, snapshot streams out of such a store (backups:
tests/ops/test_backup.py), and the one thing the log must never do to a pinned record
(replace it)."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

import lmdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rkv.codec import (
    Command,
    FileChunk,
    FileCommit,
    FileDelete,
    Request,
    decode_snapshot_chunk,
    encode_request,
)
from rkv.raft.types import Entry, HardState
from rkv.store import LmdbStore, StoreError
from rkv.store import kv as kvdb
from rkv.store.seal import unseal

from .harness import Harness, Store
from .test_store_snapshot import transfer

KEYS = [b"f1", b"f2"]
UPLOADS = [b"u1", b"u2", b"u3"]
SIZES = [100, kvdb.PIN_MIN, 9_000]  # copied, pinned, pinned

ops = st.one_of(
    st.tuples(
        st.just("chunk"),
        st.sampled_from(UPLOADS),
        st.integers(0, 2),
        st.sampled_from(KEYS),
        st.sampled_from(SIZES),
        st.integers(0, 255),
    ),
    st.tuples(st.just("commit"), st.sampled_from(UPLOADS), st.sampled_from(KEYS)),
    st.tuples(st.just("delete"), st.sampled_from(KEYS)),
    st.tuples(st.just("compact")),
    st.tuples(st.just("reopen")),
)
# each op with whether the LMDB store ends its apply batch after it
programs = st.lists(st.tuples(ops, st.booleans()), min_size=1, max_size=30)


def files(s: Store) -> dict[bytes, Any]:
    out: dict[bytes, Any] = {}
    for k in KEYS:
        m = s.file_manifest(k)
        out[k] = None if m is None else (m, [s.read_chunk(k, n) for n in range(m.chunks)])
    return out


def log_facts(s: LmdbStore) -> tuple[int, int, int]:
    """(log db records below the first index, pins, pinned bytes) as stored; checks the
    pinned-bytes counter and that the log db holds [first, last] plus pinned records."""

    def read(txn: lmdb.Transaction[bytes]) -> tuple[int, int, int]:
        live = s._live(txn)
        pins = kvdb.pinned_keys(txn, live.files, 0, 1 << 62)
        total = sum(
            kvdb.decode_u64("pin", unseal("files", b"p" + k, txn.get(b"p" + k, db=live.files)))
            for k in pins
        )
        assert kvdb.decode_u64("pinned", txn.get(kvdb.PINNED_KEY, db=live.meta)) == total
        below = sum(1 for k in pins if int.from_bytes(k, "big") < s.first_index())
        in_log = s.last_index() - s.first_index() + 1
        assert txn.stat(live.log)["entries"] == in_log + below
        return below, len(pins), total

    return s._read(read)


class Program:
    """Turns abstract ops into commands (a commit names what the model staged, so most
    commits are valid) and drives both stores: every entry is saved, then applied (the twin
    one at a time, LMDB in the program's batches)."""

    def __init__(self) -> None:
        self.staged: dict[bytes, dict[int, bytes]] = {}
        self.index = 0

    def command(self, op: tuple[Any, ...]) -> Command:
        if op[0] == "chunk":
            _, up, seq, key, size, fill = op
            data = bytes([fill]) * size
            self.staged.setdefault(up, {})[seq] = data
            return FileChunk(key, up, seq, data)
        if op[0] == "commit":
            _, up, key = op
            chunks = self.staged.get(up, {})
            blob = b"".join(chunks.get(n, b"") for n in range(len(chunks)))
            return FileCommit(key, up, len(blob), len(chunks), hashlib.sha256(blob).digest())
        return FileDelete(op[1])

    def entry(self, cmd: Command) -> Entry:
        self.index += 1
        return Entry(term=1, index=self.index, data=encode_request(Request(b"", 0, cmd)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs)
def test_pinned_chunks_behave_like_copied_ones(program: list[tuple[tuple[Any, ...], bool]]) -> None:
    d = tempfile.mkdtemp(prefix="rkv-pinprop-")
    lmdb_h = Harness("lmdb", Path(d) / "node")
    mem_h = Harness("memory", Path("/nonexistent"))
    try:
        pinned, twin = lmdb_h.open(), mem_h.open()
        prog = Program()
        got: list[Any] = []
        want: list[Any] = []
        batch: list[Entry] = []

        def flush() -> None:
            nonlocal batch
            if batch:
                got.extend(pinned.apply(batch))
                batch = []

        for op, ends in program:
            if op[0] == "compact":
                flush()
                applied = pinned.applied_index()
                if applied >= pinned.first_index():
                    pinned.compact(applied)
                    twin.compact(applied)
            elif op[0] == "reopen":
                flush()
                pinned, twin = lmdb_h.reopen(pinned), mem_h.reopen(twin)
            else:
                e = prog.entry(prog.command(op))
                pinned.save(HardState(1, "", e.index), [e])
                twin.save(HardState(1, "", e.index), [e])
                want.extend(twin.apply([e]))
                batch.append(e)
                if ends:
                    flush()
            if not batch:
                assert files(pinned) == files(twin), op
                assert pinned.state_hash() == twin.state_hash(), op
        flush()
        assert got == want
        assert files(pinned) == files(twin)
        assert isinstance(pinned, LmdbStore)
        log_facts(pinned)
        # everything dropped and compacted: no pinned record outlives its chunk
        for up in UPLOADS:
            for seq in range(3):  # re-staged as tiny chunks: the old pins go
                e = prog.entry(FileChunk(b"f1", up, seq, b"x"))
                pinned.save(None, [e])
                pinned.apply([e])
        es = [prog.entry(FileDelete(k)) for k in KEYS]
        pinned.save(None, es)
        pinned.apply(es)
        pinned.compact(pinned.applied_index())
        assert log_facts(pinned) == (0, 0, 0)
        pinned = lmdb_h.reopen(pinned)
        assert files(pinned) == {k: None for k in KEYS}
    finally:
        lmdb_h.close_all()
        mem_h.close_all()
        shutil.rmtree(d)


def upload(s: Store, key: bytes, up: bytes, parts: list[bytes]) -> None:
    start = s.last_index() + 1
    blob = b"".join(parts)
    cmds: list[Command] = [FileChunk(key, up, n, p) for n, p in enumerate(parts)]
    cmds.append(FileCommit(key, up, len(blob), len(parts), hashlib.sha256(blob).digest()))
    es = [Entry(1, start + i, encode_request(Request(b"", 0, c))) for i, c in enumerate(cmds)]
    s.save(HardState(1, "", es[-1].index), es)
    assert all(r.ok for r in s.apply(es))


PARTS = [bytes([n]) * 20_000 for n in range(5)]


@pytest.fixture
def compacted(tmp_path: Path) -> LmdbStore:
    """An LMDB store with a 5-chunk file whose log entries were compacted away."""
    s = Harness("lmdb", tmp_path / "src").open()
    assert isinstance(s, LmdbStore)
    upload(s, b"file", b"up", PARTS)
    s.compact(s.applied_index())
    assert log_facts(s) == (5, 5, 100_000)
    assert s.log_bytes() < 20_000  # the pinned chunks are not log compaction can give back
    yield s
    s.close()


@pytest.mark.parametrize("kind", ["lmdb", "memory"])
def test_a_snapshot_stream_carries_pinned_chunks_by_copy(
    compacted: LmdbStore, tmp_path: Path, kind: str
) -> None:
    with compacted.open_snapshot(64 << 10) as source:
        records = [r for c in source.chunks() for r in decode_snapshot_chunk(c)]
    assert not [k for _, k, _ in records if k[:1] == b"p"]
    staged = [v for _, k, v in records if k[:1] == b"s"]
    assert len(staged) == 5
    assert sorted(kvdb.decode_staged(v)[1] for v in staged) == PARTS
    h = Harness(kind, tmp_path / "dst")
    try:
        dst = h.open()
        snap = transfer(compacted, dst, 64 << 10)
        dst.install_snapshot(HardState(2, "", snap.meta.index), [], snap)
        assert b"".join(dst.read_chunk(b"file", n) for n in range(5)) == b"".join(PARTS)
        if isinstance(dst, LmdbStore):
            assert log_facts(dst) == (0, 0, 0)  # copied in: nothing pinned
    finally:
        h.close_all()


def test_an_install_drops_the_pins_of_the_state_it_replaces(
    compacted: LmdbStore, tmp_path: Path
) -> None:
    h = Harness("lmdb", tmp_path / "other")
    try:
        other = h.open()
        upload(other, b"x", b"u9", [b"z" * 10_000] * 30)  # a later snapshot than compacted's
        snap = transfer(other, compacted)
        compacted.install_snapshot(HardState(2, "", snap.meta.index), [], snap)
        assert log_facts(compacted) == (0, 0, 0)
        assert compacted.file_manifest(b"file") is None
        assert compacted.read_chunk(b"x", 29) == b"z" * 10_000
    finally:
        h.close_all()


def test_a_pinned_entry_is_never_replaced(tmp_path: Path) -> None:
    s = Harness("lmdb", tmp_path / "s").open()
    try:
        upload(s, b"file", b"up", PARTS)
        last = s.last_index()
        conflicting = Entry(2, 3, encode_request(Request(b"", 0, FileDelete(b"file"))))
        with pytest.raises(StoreError, match="pinned"):
            s.save(HardState(2, "", last), [conflicting])
        assert s.last_index() == last
        assert s.read_chunk(b"file", 2) == PARTS[2]
    finally:
        s.close()
