"""FileAbort: an upload's staged chunks dropped on every replica, decided from the log alone
(the leader proposes it for uploads it saw idle; a client for an upload it gave up). Both
store kinds run the same table."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from rkv.codec import Command, FileAbort, FileChunk, FileCommit, Request, encode_request
from rkv.raft.types import Entry, HardState
from rkv.store import LmdbStore

from .harness import Harness, Store
from .test_store_snapshot import transfer

PARTS = [b"a" * 10_000, b"b" * 10_000, b"c" * 100]  # pinned, pinned and copied in LMDB
BLOB = b"".join(PARTS)
COMMIT = FileCommit(b"f", b"up", len(BLOB), 3, hashlib.sha256(BLOB).digest())


def run(s: Store, *cmds: Command) -> list[object]:
    start = s.last_index() + 1
    es = [Entry(1, start + i, encode_request(Request(b"", 0, c))) for i, c in enumerate(cmds)]
    s.save(HardState(1, "", es[-1].index), es)
    return [(r.ok, r.value) for r in s.apply(es)]


def stage(s: Store) -> int:
    """Stage the three chunks of upload b"up"; the index of the last one."""
    run(s, *[FileChunk(b"f", b"up", n, p) for n, p in enumerate(PARTS)])
    return s.last_index()


def pinned(s: Store) -> int:
    return int(s.stats()["pinned_bytes"])


@pytest.mark.parametrize(
    ("case", "abort_at", "dropped"),
    [
        ("idle: names the last chunk", "last", True),
        ("moved on since it was proposed", "before_last", False),
        ("unconditional (a client's)", "zero", True),
        ("another upload", "other", False),
    ],
)
def test_abort_of_an_upload_in_progress(
    store: Store, case: str, abort_at: str, dropped: bool
) -> None:
    last = stage(store)
    assert store.uploads_in_progress() == [(b"up", last)]
    target = {"last": last, "before_last": last - 1, "zero": 0, "other": 0}[abort_at]
    uid = b"other" if abort_at == "other" else b"up"
    assert run(store, FileAbort(uid, target)) == [(True, dropped)], case
    [(ok, _)] = run(store, COMMIT)
    assert ok is not dropped
    if dropped:
        assert store.uploads_in_progress() == []
        assert store.file_manifest(b"f") is None
        assert pinned(store) == 0
    else:
        assert store.read_chunk(b"f", 1) == PARTS[1]
        assert store.uploads_in_progress() == []  # committed: no longer in progress


def test_a_committed_upload_is_not_aborted(store: Store) -> None:
    stage(store)
    run(store, COMMIT)
    assert run(store, FileAbort(b"up", 0)) == [(True, False)]
    assert b"".join(store.read_chunk(b"f", n) for n in range(3)) == BLOB


def test_an_aborted_upload_id_can_stage_again(store: Store) -> None:
    stage(store)
    run(store, FileAbort(b"up", 0))
    stage(store)
    assert run(store, COMMIT) == [(True, None)]
    assert b"".join(store.read_chunk(b"f", n) for n in range(3)) == BLOB


def test_abort_after_compaction_frees_the_pinned_records(harness: Harness) -> None:
    s = harness.open()
    last = stage(s)
    run(s, FileChunk(b"g", b"up2", 0, b"x" * 5_000))
    s.compact(s.applied_index())
    if isinstance(s, LmdbStore):
        assert pinned(s) == 25_000
    assert run(s, FileAbort(b"up", last)) == [(True, True)]
    if isinstance(s, LmdbStore):
        assert pinned(s) == 5_000
    s = harness.reopen(s)
    assert s.uploads_in_progress() == [(b"up2", last + 1)]


@pytest.mark.parametrize("dst_kind", ["lmdb", "memory"])
def test_uploads_in_progress_travel_in_a_snapshot(
    store: Store, tmp_path: Path, dst_kind: str
) -> None:
    last = stage(store)
    h = Harness(dst_kind, tmp_path / "dst")
    try:
        dst = h.open()
        snap = transfer(store, dst)
        dst.install_snapshot(HardState(2, "", snap.meta.index), [], snap)
        assert dst.uploads_in_progress() == [(b"up", last)]
        # and the abort the leader proposes next finds the same upload there
        assert run(dst, FileAbort(b"up", last)) == [(True, True)]
        assert dst.uploads_in_progress() == []
    finally:
        h.close_all()
