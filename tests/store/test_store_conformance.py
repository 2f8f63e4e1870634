"""The conformance suite: every test runs against the LMDB store and the MemoryStore twin.

Covers the Raft side (log save/replace/read, hard state, snapshot meta), the state machine
(every command, sessions, files), reads, and restart (reopen keeps everything).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from rkv.codec import (
    REQUEST_FORMAT,
    Cas,
    Command,
    Delete,
    FileChunk,
    FileCommit,
    FileDelete,
    Put,
    Request,
    decode_snapshot_chunk,
    encode_request,
    pack,
)
from rkv.raft import confchange
from rkv.raft.confchange import ConfChangeType
from rkv.raft.storage import Compacted, Unavailable
from rkv.raft.types import ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMeta
from rkv.store import ApplyResult, BackupCopy, Manifest, NotFoundError, Record, StoreError
from rkv.store import state_hash as sh
from rkv.store.errors import NewerCommandError

from .harness import VOTERS, Harness, Store

OK = ApplyResult()


def ents(start: int, terms: list[int], size: int = 0) -> list[Entry]:
    return [Entry(term=t, index=start + i, data=b"d" * size) for i, t in enumerate(terms)]


def req(command: Command, client: bytes = b"", seq: int = 0) -> bytes:
    return encode_request(Request(client_id=client, seq=seq, command=command))


def apply(s: Store, *datas: bytes | Entry) -> list[ApplyResult]:
    """Apply commands as the next entries after the applied index (term 1)."""
    i = s.applied_index()
    batch = []
    for d in datas:
        i += 1
        batch.append(d if isinstance(d, Entry) else Entry(term=1, index=i, data=d))
    return s.apply(batch)


def one(s: Store, command: Command, client: bytes = b"", seq: int = 0) -> ApplyResult:
    return apply(s, req(command, client, seq))[0]


# --- Raft log ------------------------------------------------------------------------------


def test_fresh_store(store: Store) -> None:
    assert store.first_index() == 1
    assert store.last_index() == 0
    assert store.term(0) == 0
    assert store.entries(1, 1) == []
    # a bootstrap member's new store may be a replaced disk: it recovers before it votes
    assert store.initial_state() == (HardState(recovering=True), ConfState(VOTERS))
    assert store.snapshot() == Snapshot()
    assert store.applied_index() == 0
    with pytest.raises(Unavailable):
        store.term(1)
    with pytest.raises(Unavailable):
        store.entries(1, 2)


def test_append_and_read(store: Store) -> None:
    es = ents(1, [1, 1, 2, 2, 3])
    store.save(None, es)
    assert (store.first_index(), store.last_index()) == (1, 5)
    assert store.entries(1, 6) == es
    assert store.entries(2, 4) == es[1:3]
    assert [store.term(i) for i in range(6)] == [0, 1, 1, 2, 2, 3]
    with pytest.raises(Unavailable):
        store.term(6)
    with pytest.raises(Unavailable):
        store.entries(3, 7)
    with pytest.raises(Compacted):
        store.entries(0, 2)


@pytest.mark.parametrize(
    ("max_bytes", "n"),
    [(None, 5), (10**9, 5), (116 * 2, 2), (116 * 2 + 115, 2), (116 * 3, 3), (1, 1), (0, 1)],
)
def test_entries_max_bytes(store: Store, max_bytes: int | None, n: int) -> None:
    es = ents(1, [1] * 5, size=100)  # Entry.size() == 116
    store.save(None, es)
    assert store.entries(1, 6, max_bytes) == es[:n]


def test_entry_types_and_data_round_trip(store: Store) -> None:
    es = [
        Entry(1, 1, b""),
        Entry(1, 2, b"\x00\xff" * 1000),
        Entry(2, 3, b"conf", EntryType.CONF_CHANGE),
    ]
    store.save(None, es)
    assert store.entries(1, 4) == es


@pytest.mark.parametrize(
    ("first", "second", "expected_terms"),
    [
        # conflicting suffix replaced, shorter
        (ents(1, [1, 1, 1, 1, 1]), ents(3, [2, 2]), [1, 1, 2, 2]),
        # plain append at last + 1
        (ents(1, [1, 1]), ents(3, [1, 2]), [1, 1, 1, 2]),
        # replace everything
        (ents(1, [1, 1, 1]), ents(1, [4]), [4]),
        # replace the last entry only, longer
        (ents(1, [1, 1, 1]), ents(3, [2, 2, 2, 2]), [1, 1, 2, 2, 2, 2]),
    ],
)
def test_suffix_replacement(
    store: Store, first: list[Entry], second: list[Entry], expected_terms: list[int]
) -> None:
    store.save(None, first)
    store.save(None, second)
    assert store.last_index() == len(expected_terms)
    got = store.entries(1, store.last_index() + 1)
    assert [e.term for e in got] == expected_terms
    assert [e.index for e in got] == list(range(1, len(expected_terms) + 1))
    assert [store.term(i) for i in range(1, len(expected_terms) + 1)] == expected_terms


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(ents(5, [1]), id="gap after last"),
        pytest.param([Entry(1, 2), Entry(1, 4)], id="not contiguous"),
        pytest.param([Entry(1, 3), Entry(1, 2)], id="descending"),
    ],
)
def test_bad_saves_are_refused_and_change_nothing(store: Store, bad: list[Entry]) -> None:
    es = ents(1, [1, 1, 1])
    store.save(HardState(1, "n1", 1), es)
    with pytest.raises(StoreError):
        store.save(HardState(9, "n9", 3), bad)
    assert store.entries(1, 4) == es
    assert store.initial_state()[0] == HardState(1, "n1", 1)


def test_hard_state(store: Store) -> None:
    store.save(HardState(3, "n2", 0), [])
    assert store.initial_state() == (HardState(3, "n2", 0), ConfState(VOTERS))
    store.save(None, ents(1, [3]))
    assert store.initial_state()[0] == HardState(3, "n2", 0)
    store.save(HardState(4, "", 1), ents(2, [4]))
    assert store.initial_state()[0] == HardState(4, "", 1)
    assert store.last_index() == 2


def test_snapshot_compacts_matching_log(store: Store) -> None:
    store.save(None, ents(1, [1, 1, 2, 2, 2]))
    snap = Snapshot(SnapshotMeta(index=3, term=2, voters=("a", "b")), data=b"state")
    store.save(None, [], snap)
    assert store.snapshot() == snap
    assert (store.first_index(), store.last_index()) == (4, 5)
    assert store.term(3) == 2
    assert store.entries(4, 6) == ents(4, [2, 2])
    with pytest.raises(Compacted):
        store.term(2)
    with pytest.raises(Compacted):
        store.entries(3, 5)
    assert store.initial_state()[1] == ConfState(("a", "b"))
    # appending after it still works, and a later snapshot may replace it
    store.save(None, ents(6, [3]))
    store.save(None, [], Snapshot(SnapshotMeta(index=6, term=3, voters=("a",))))
    assert (store.first_index(), store.last_index()) == (7, 6)
    assert store.entries(7, 7) == []


@pytest.mark.parametrize(
    ("snap_index", "snap_term"),
    [(3, 9), (10, 5)],
    ids=["term mismatch", "beyond the log"],
)
def test_snapshot_discards_non_matching_log(store: Store, snap_index: int, snap_term: int) -> None:
    store.save(None, ents(1, [1, 1, 1, 1, 1]))
    store.save(HardState(9, "", snap_index), [], Snapshot(SnapshotMeta(snap_index, snap_term)))
    assert (store.first_index(), store.last_index()) == (snap_index + 1, snap_index)
    assert store.term(snap_index) == snap_term
    store.save(None, ents(snap_index + 1, [snap_term]))
    assert store.entries(snap_index + 1, snap_index + 2) == ents(snap_index + 1, [snap_term])


def test_snapshot_with_entries_in_one_save(store: Store) -> None:
    store.save(None, ents(1, [1, 1]))
    store.save(None, ents(11, [2, 2]), Snapshot(SnapshotMeta(10, 2)))
    assert (store.first_index(), store.last_index()) == (11, 12)
    assert store.entries(11, 13) == ents(11, [2, 2])


def test_older_snapshot_and_entries_below_snapshot_refused(store: Store) -> None:
    store.save(None, [], Snapshot(SnapshotMeta(5, 1)))
    with pytest.raises(StoreError):
        store.save(None, [], Snapshot(SnapshotMeta(4, 1)))
    with pytest.raises(StoreError):
        store.save(None, ents(5, [1]))
    assert (store.first_index(), store.last_index()) == (6, 5)


def test_log_survives_restart(harness: Harness) -> None:
    s = harness.open()
    snap = Snapshot(SnapshotMeta(2, 1, ("x", "y")), b"snapdata")
    s.save(None, ents(1, [1, 1, 1, 2, 2]))
    s.save(HardState(2, "n3", 3), [], snap)
    s = harness.reopen(s)
    assert s.initial_state() == (HardState(2, "n3", 3), ConfState(("x", "y")))
    assert s.snapshot() == snap
    assert (s.first_index(), s.last_index()) == (3, 5)
    assert s.entries(3, 6) == ents(3, [1, 2, 2])
    assert [s.term(i) for i in (2, 3, 4, 5)] == [1, 1, 2, 2]


# --- state machine: kv commands ------------------------------------------------------------


def test_put_get_record(store: Store) -> None:
    assert one(store, Put(b"a", b"1")) == OK
    assert store.get(b"a") == b"1"
    assert store.get_record(b"a") == Record(b"1", create_index=1, mod_index=1, version=1)
    one(store, Put(b"a", b"2"))
    assert store.get_record(b"a") == Record(b"2", create_index=1, mod_index=2, version=2)
    assert store.get(b"missing") is None
    assert store.get_record(b"missing") is None
    assert store.scan(b"a" * 1000, 10) == []
    for impossible in (b"", b"a" * 1000):
        assert store.get(impossible) is None
        assert store.file_manifest(impossible) is None
        with pytest.raises(NotFoundError):
            store.read_chunk(impossible, 0)


def test_delete_and_recreate(store: Store) -> None:
    one(store, Put(b"a", b"1"))
    assert one(store, Delete(b"a")) == ApplyResult(value=True)
    assert store.get(b"a") is None
    assert one(store, Delete(b"a")) == ApplyResult(value=False)
    one(store, Put(b"a", b"x"))
    assert store.get_record(b"a") == Record(b"x", create_index=4, mod_index=4, version=1)


@pytest.mark.parametrize(
    ("initial", "expected", "swapped", "final"),
    [
        (None, None, True, b"new"),
        (None, b"a", False, None),
        (None, b"", False, None),
        (b"a", None, False, b"a"),
        (b"a", b"a", True, b"new"),
        (b"a", b"b", False, b"a"),
        (b"", b"", True, b"new"),
        (b"", None, False, b""),
    ],
)
def test_cas(
    store: Store, initial: bytes | None, expected: bytes | None, swapped: bool, final: bytes | None
) -> None:
    if initial is not None:
        one(store, Put(b"k", initial))
    before = store.get_record(b"k")
    assert one(store, Cas(b"k", expected, b"new")) == ApplyResult(value=swapped)
    assert store.get(b"k") == final
    if not swapped:
        assert store.get_record(b"k") == before
    else:
        rec = store.get_record(b"k")
        assert rec is not None and rec.mod_index == store.applied_index()


def test_noops_conf_changes_and_garbage_advance_applied(store: Store) -> None:
    conf = ConfState(VOTERS, ("n4",))
    change = confchange.encode(
        confchange.ConfChangeEntry(confchange.ConfChange(ConfChangeType.ADD_LEARNER, "n4"), conf)
    )
    entries = [
        Entry(1, 1, b""),
        Entry(1, 2, b"whatever", EntryType.CONF_CHANGE),
        Entry(1, 3, b"\xc1garbage"),
        Entry(1, 4, encode_request(Request(b"c", 1, Put(b"k", b"v")))[:-1]),
        Entry(1, 5, req(Put(b"k", b"v"))),
        Entry(1, 6, change, EntryType.CONF_CHANGE),
    ]
    store.save(None, entries)
    results = store.apply(entries)
    assert results[0] == OK
    assert not results[1].ok and (results[1].error or "").startswith("malformed conf change")
    for r in results[2:4]:
        assert not r.ok and r.error is not None and r.error.startswith("malformed command")
    assert results[4] == OK and results[5] == OK
    assert store.applied_index() == 6
    assert store.get(b"k") == b"v"
    # the configuration in force at the applied index goes with snapshots taken there
    assert store.applied_conf() == conf
    with store.open_snapshot() as src:
        assert (src.meta.index, src.meta.voters, src.meta.learners) == (6, VOTERS, ("n4",))
    store.compact(5, ConfState(VOTERS))
    assert store.initial_state()[1] == ConfState(VOTERS)  # the marker's: as of index 5


@pytest.mark.parametrize(
    "fields",
    [
        [REQUEST_FORMAT, b"c", 1, 99, b"k"],  # a command tag of a newer rkv
        [REQUEST_FORMAT + 1, b"c", 1, 0, b"k", b"v"],  # a request format of a newer rkv
    ],
    ids=["newer-tag", "newer-format"],
)
def test_a_command_of_a_newer_rkv_stops_the_apply_and_changes_nothing(
    store: Store, fields: list[Any]
) -> None:
    """Applied as a no-op it would leave this replica's state apart from the upgraded ones'
    for good: the apply fails (the node stops until it is upgraded) and nothing of the batch
    is applied."""
    first = Entry(1, 1, req(Put(b"a", b"1")))
    batch = [Entry(1, 2, req(Put(b"b", b"1"))), Entry(1, 3, pack(fields))]
    store.save(None, [first, *batch])
    store.apply([first])
    with pytest.raises(NewerCommandError, match="log entry 3 holds a command of a newer rkv"):
        store.apply(batch)
    assert store.applied_index() == 1
    assert store.get(b"b") is None


def test_apply_out_of_order_is_refused_atomically(store: Store) -> None:
    apply(store, req(Put(b"a", b"1")))
    for bad in (
        [Entry(1, 3, req(Put(b"b", b"1")))],  # gap
        [Entry(1, 1, req(Put(b"b", b"1")))],  # already applied
        [Entry(1, 2, req(Put(b"b", b"1"))), Entry(1, 4, req(Put(b"c", b"1")))],
    ):
        with pytest.raises(StoreError):
            store.apply(bad)
    assert store.applied_index() == 1
    assert store.get(b"b") is None
    assert store.apply([]) == []


def test_apply_batch_results_in_order(store: Store) -> None:
    results = apply(
        store,
        req(Put(b"a", b"1")),
        req(Cas(b"a", b"1", b"2")),
        req(Cas(b"a", b"1", b"3")),
        req(Delete(b"a")),
        req(Delete(b"a")),
    )
    assert [r.value for r in results] == [None, True, False, True, False]
    assert store.applied_index() == 5


def test_save_and_apply_is_save_then_apply(harness: Harness) -> None:
    """Group commit: the log entries and the committed entries in one call; `committed` may
    include entries saved by the same call. Everything survives a restart."""
    s = harness.open()
    s.save(HardState(1, "n1", 0), [Entry(1, 1, req(Put(b"a", b"1")))])
    new = [Entry(1, 2, req(Put(b"a", b"2"))), Entry(1, 3, req(Cas(b"a", b"2", b"3")))]
    results = s.save_and_apply(HardState(1, "n1", 2), new, s.entries(1, 2) + new[:1])
    assert results == [OK, OK]
    assert (s.last_index(), s.applied_index()) == (3, 2)
    assert s.get(b"a") == b"2"
    assert s.save_and_apply(None, [], new[1:]) == [ApplyResult(value=True)]
    assert s.save_and_apply(HardState(2, "n2", 3), ents(4, [2]), []) == []
    s = harness.reopen(s)
    assert s.initial_state()[0] == HardState(2, "n2", 3)
    assert (s.last_index(), s.applied_index()) == (4, 3)
    assert s.get(b"a") == b"3"


def test_failed_save_and_apply_changes_nothing(store: Store) -> None:
    store.save(None, ents(1, [1]))
    apply(store, req(Put(b"a", b"1")))
    with pytest.raises(StoreError):  # apply out of order: the save is undone too
        store.save_and_apply(HardState(1, "", 1), ents(2, [1]), [Entry(1, 3, b"")])
    assert (store.last_index(), store.applied_index()) == (1, 1)
    assert store.initial_state()[0] == HardState(recovering=True)  # as created


# --- sessions -------------------------------------------------------------------------------


def test_duplicate_request_returns_saved_result_without_reapplying(store: Store) -> None:
    assert one(store, Cas(b"k", None, b"1"), b"c1", 1) == ApplyResult(value=True)
    # the retry would fail if re-applied (k now exists); it gets the saved result instead
    assert one(store, Cas(b"k", None, b"1"), b"c1", 1) == ApplyResult(value=True)
    assert one(store, Put(b"k", b"2"), b"c1", 1) == ApplyResult(value=True)
    assert store.get(b"k") == b"1"
    rec = store.get_record(b"k")
    assert rec is not None and rec.version == 1
    assert one(store, Put(b"k", b"2"), b"c1", 2) == OK
    assert store.get(b"k") == b"2"


def test_stale_request(store: Store) -> None:
    one(store, Put(b"k", b"1"), b"c1", 5)
    r = one(store, Put(b"k", b"old"), b"c1", 4)
    assert not r.ok and r.error == "stale request"
    assert store.get(b"k") == b"1"


def test_seq_zero_has_no_session(store: Store) -> None:
    one(store, Put(b"k", b"1"), b"c1", 0)
    one(store, Put(b"k", b"2"), b"c1", 0)
    assert store.get(b"k") == b"2"
    assert store.session(b"c1") is None
    assert store.stats()["sessions"] == 0


def test_sessions_are_per_client(store: Store) -> None:
    one(store, Put(b"a", b"1"), b"c1", 1)
    one(store, Put(b"a", b"2"), b"c2", 1)
    assert store.get(b"a") == b"2"


def test_failed_results_are_saved_too(store: Store) -> None:
    commit = FileCommit(b"f", b"u", 0, 1, hashlib.sha256(b"").digest())
    r = one(store, commit, b"c1", 1)
    assert not r.ok  # nothing staged yet
    one(store, FileChunk(b"f", b"u", 0, b""))  # now the commit would succeed if re-applied
    assert one(store, commit, b"c1", 1) == r
    assert store.file_manifest(b"f") is None
    assert one(store, commit, b"c1", 2) == OK


def test_session_eviction_is_lru_by_applied_index(harness: Harness) -> None:
    s = harness.open(max_sessions=3)
    one(s, Put(b"k", b"a1"), b"a", 1)  # index 1
    one(s, Put(b"k", b"b1"), b"b", 1)  # index 2
    one(s, Put(b"k", b"c1"), b"c", 1)  # index 3
    one(s, Put(b"k", b"a2"), b"a", 2)  # index 4: a is now the most recent
    one(s, Put(b"k", b"d1"), b"d", 1)  # index 5: evicts b (lowest index)
    assert s.session(b"b") is None
    sa, sc, sd = s.session(b"a"), s.session(b"c"), s.session(b"d")
    assert sa is not None and (sa.seq, sa.index) == (2, 4)
    assert sc is not None and (sc.seq, sc.index) == (1, 3)
    assert sd is not None and (sd.seq, sd.index) == (1, 5)
    assert s.stats()["sessions"] == 3
    # b was forgotten: its retry is applied again (the documented cost of eviction)
    one(s, Put(b"k", b"b1-again"), b"b", 1)  # evicts c
    assert s.get(b"k") == b"b1-again"
    assert s.session(b"c") is None
    s = harness.reopen(s)
    assert {c for c in (b"a", b"b", b"c", b"d") if s.session(c) is not None} == {b"a", b"b", b"d"}
    one(s, Put(b"k", b"e"), b"e", 1)  # evicts a (index 4)
    assert s.session(b"a") is None


def test_sessions_survive_restart(harness: Harness) -> None:
    s = harness.open()
    one(s, Cas(b"k", None, b"1"), b"c1", 7)
    s = harness.reopen(s)
    assert one(s, Cas(b"k", None, b"1"), b"c1", 7) == ApplyResult(value=True)
    assert one(s, Cas(b"k", None, b"1"), b"c1", 8) == ApplyResult(value=False)


# --- files ---------------------------------------------------------------------------------


def upload(
    s: Store, key: bytes, uid: bytes, chunks: list[bytes], commit: bool = True
) -> ApplyResult | None:
    for n, c in enumerate(chunks):
        assert one(s, FileChunk(key, uid, n, c)) == OK
    if not commit:
        return None
    data = b"".join(chunks)
    return one(s, FileCommit(key, uid, len(data), len(chunks), hashlib.sha256(data).digest()))


def read_file(s: Store, key: bytes) -> bytes:
    m = s.file_manifest(key)
    assert m is not None
    return b"".join(s.read_chunk(key, n) for n in range(m.chunks))


def test_file_upload_commit_read(store: Store) -> None:
    chunks = [b"aaa", b"bb", b"c" * 1000]
    upload(store, b"f", b"u1", chunks, commit=False)
    assert store.file_manifest(b"f") is None  # staged chunks are invisible
    with pytest.raises(NotFoundError):
        store.read_chunk(b"f", 0)
    data = b"".join(chunks)
    assert one(store, FileCommit(b"f", b"u1", len(data), 3, hashlib.sha256(data).digest())) == OK
    m = store.file_manifest(b"f")
    assert m == Manifest(
        size=len(data),
        chunks=3,
        sha256=hashlib.sha256(data).digest(),
        mod_index=4,
        create_index=4,
        version=1,
        upload_id=b"u1",  # the staged chunks became the file's: no copy
    )
    assert read_file(store, b"f") == data
    assert store.stats()["files"] == 1
    # the upload is used up: committing it again, or staging more into it, fails
    r = one(store, FileCommit(b"f", b"u1", len(data), 3, hashlib.sha256(data).digest()))
    assert not r.ok
    r = one(store, FileChunk(b"f", b"u1", 0, b"overwrite the committed chunk?"))
    assert not r.ok and r.error is not None and "already committed" in r.error
    assert read_file(store, b"f") == data


def test_chunks_arriving_out_of_order_and_resent(store: Store) -> None:
    one(store, FileChunk(b"f", b"u", 1, b"second"))
    one(store, FileChunk(b"f", b"u", 0, b"wrong"))
    one(store, FileChunk(b"f", b"u", 0, b"first-"))  # a resend replaces the staged chunk
    data = b"first-second"
    assert one(store, FileCommit(b"f", b"u", len(data), 2, hashlib.sha256(data).digest())) == OK
    assert read_file(store, b"f") == data


def test_overwrite_replaces_content_and_drops_old_chunks(store: Store) -> None:
    assert upload(store, b"f", b"u1", [b"1", b"2", b"3", b"4"]) == OK
    assert upload(store, b"f", b"u2", [b"new"]) == OK
    assert read_file(store, b"f") == b"new"
    for n in (1, 2, 3):
        with pytest.raises(NotFoundError):
            store.read_chunk(b"f", n)
    m = store.file_manifest(b"f")
    assert m is not None and (m.version, m.create_index, m.chunks) == (2, 5, 1)


def _bad_commit(key: bytes, chunks: list[bytes], **over: Any) -> FileCommit:
    data = b"".join(chunks)
    fields: dict[str, Any] = {
        "key": key,
        "upload_id": b"u2",
        "size": len(data),
        "chunks": len(chunks),
        "sha256": hashlib.sha256(data).digest(),
    }
    fields.update(over)
    return FileCommit(**fields)


@pytest.mark.parametrize(
    ("staged", "commit", "reason"),
    [
        ([(0, b"x"), (2, b"z")], _bad_commit(b"f", [b"x", b"y", b"z"]), "staged"),
        ([(0, b"x"), (2, b"z")], _bad_commit(b"f", [b"x", b"z"]), "missing"),
        ([(0, b"x"), (1, b"y")], _bad_commit(b"f", [b"x"]), "staged"),
        ([(0, b"x"), (1, b"y")], _bad_commit(b"f", [b"x", b"y"], size=3), "size"),
        ([(0, b"x"), (1, b"y")], _bad_commit(b"f", [b"x", b"Y"]), "sha256"),
        ([(0, b"x")], _bad_commit(b"f", [b"x"], upload_id=b"other"), "staged"),
    ],
    ids=["count short", "hole", "extra chunk", "size", "sha", "unknown upload"],
)
def test_bad_file_commit_changes_nothing(
    store: Store, staged: list[tuple[int, bytes]], commit: FileCommit, reason: str
) -> None:
    assert upload(store, b"f", b"u1", [b"old"]) == OK
    before = store.file_manifest(b"f")
    for n, c in staged:
        one(store, FileChunk(b"f", b"u2", n, c))
    r = one(store, commit)
    assert not r.ok and r.error is not None and reason in r.error
    assert store.file_manifest(b"f") == before
    assert read_file(store, b"f") == b"old"


def test_commit_of_chunks_uploaded_for_another_key(store: Store) -> None:
    one(store, FileChunk(b"g", b"u", 0, b"x"))
    r = one(store, _bad_commit(b"f", [b"x"], upload_id=b"u"))
    assert not r.ok and r.error is not None and "another key" in r.error
    assert store.file_manifest(b"f") is None


def test_bad_commit_keeps_staging_so_the_client_can_finish(store: Store) -> None:
    one(store, FileChunk(b"f", b"u", 0, b"a"))
    assert not one(store, _bad_commit(b"f", [b"a", b"b"], upload_id=b"u")).ok
    one(store, FileChunk(b"f", b"u", 1, b"b"))
    assert one(store, _bad_commit(b"f", [b"a", b"b"], upload_id=b"u")) == OK
    assert read_file(store, b"f") == b"ab"


def test_empty_file(store: Store) -> None:
    assert upload(store, b"f", b"u", []) == OK
    m = store.file_manifest(b"f")
    assert m is not None and (m.size, m.chunks) == (0, 0)


def test_file_delete(store: Store) -> None:
    upload(store, b"f", b"u", [b"1", b"2"])
    upload(store, b"f2", b"u2", [b"other"])
    assert one(store, FileDelete(b"f")) == ApplyResult(value=True)
    assert store.file_manifest(b"f") is None
    with pytest.raises(NotFoundError):
        store.read_chunk(b"f", 0)
    assert one(store, FileDelete(b"f")) == ApplyResult(value=False)
    assert read_file(store, b"f2") == b"other"


def test_files_and_kv_are_separate_namespaces(store: Store) -> None:
    one(store, Put(b"f", b"kv"))
    upload(store, b"f", b"u", [b"file"])
    assert store.get(b"f") == b"kv"
    assert read_file(store, b"f") == b"file"
    one(store, Delete(b"f"))
    assert read_file(store, b"f") == b"file"


def test_file_keys_that_prefix_each_other(store: Store) -> None:
    upload(store, b"a", b"u1", [b"A0", b"A1"])
    upload(store, b"ab", b"u2", [b"B0"])
    upload(store, b"a", b"u3", [b"new"])  # overwriting "a" must not touch "ab"
    assert read_file(store, b"ab") == b"B0"
    assert read_file(store, b"a") == b"new"


# --- backup stream -------------------------------------------------------------------------


def test_write_backup_reports_the_applied_state_read_only(store: Store, tmp_path: Path) -> None:
    def commit(term: int, *commands: Command) -> None:
        i = store.last_index()
        es = [Entry(term=term, index=i + 1 + n, data=req(c)) for n, c in enumerate(commands)]
        store.save(HardState(term=term, vote="n1", commit=es[-1].index), es)
        store.apply(es)

    sha = hashlib.sha256(b"chunk").digest()
    commit(2, Put(b"k1", b"v"), Put(b"k2", b"v"))
    commit(2, FileChunk(b"f", b"u", 0, b"chunk"), FileCommit(b"f", b"u", 5, 1, sha))
    before = store.stats()
    with (tmp_path / "copy").open("w+b") as f:
        got = store.write_backup(f)
        size = f.seek(0, 2)
    assert got == BackupCopy(index=4, term=2, keys=2, files=1)
    assert size > 0
    assert store.stats() == before  # read-only
    commit(3, Put(b"later", b"x"))  # and the store still takes writes
    with (tmp_path / "copy2").open("w+b") as f:
        assert store.write_backup(f) == BackupCopy(index=5, term=3, keys=3, files=1)


# --- scan --------------------------------------------------------------------------------


def test_scan_order_prefix_limit(store: Store) -> None:
    keys = [b"b", b"a\xff", b"a", b"ab", b"a\x00", b"c", b"\xff", b"\x00"]
    apply(store, *(req(Put(k, b"v" + k)) for k in keys))
    assert store.scan(b"a", 100) == [
        (k, b"v" + k) for k in sorted(k for k in keys if k[:1] == b"a")
    ]
    assert [k for k, _ in store.scan(b"", 100)] == sorted(keys)
    assert [k for k, _ in store.scan(b"", 3)] == sorted(keys)[:3]
    assert store.scan(b"a", 0) == []
    assert store.scan(b"zz", 10) == []
    assert store.scan(b"ab", 10) == [(b"ab", b"vab")]
    with pytest.raises(ValueError):
        store.scan(b"", -1)


# --- stats and restart ----------------------------------------------------------------------


def test_stats(store: Store) -> None:
    store.save(HardState(2, "n1", 2), ents(1, [1, 2]))
    apply(store, req(Put(b"a", b"1")), req(Put(b"b", b"1"), b"c", 1))
    st = store.stats()
    for k, v in {
        "first_index": 1,
        "last_index": 2,
        "log_entries": 2,
        "snapshot_index": 0,
        "term": 2,
        "commit": 2,
        "applied_index": 2,
        "kv_keys": 2,
        "files": 0,
        "sessions": 1,
    }.items():
        assert st[k] == v, k
    assert {"map_size", "used_bytes"} <= set(st)


def test_restart_preserves_everything(harness: Harness) -> None:
    s = harness.open()
    s.save(HardState(1, "n1", 6), ents(1, [1] * 6))
    apply(
        s,
        req(Put(b"a", b"1"), b"c", 1),
        req(Put(b"b", b"2")),
        req(FileChunk(b"f", b"u", 0, b"xy")),
        req(FileCommit(b"f", b"u", 2, 1, hashlib.sha256(b"xy").digest())),
        req(FileChunk(b"g", b"u2", 0, b"staged")),
    )
    before = (
        s.get_record(b"a"),
        s.get_record(b"b"),
        s.file_manifest(b"f"),
        s.scan(b"", 10),
        s.session(b"c"),
        s.applied_index(),
        s.state_hash(),
    )
    s = harness.reopen(s)
    after = (
        s.get_record(b"a"),
        s.get_record(b"b"),
        s.file_manifest(b"f"),
        s.scan(b"", 10),
        s.session(b"c"),
        s.applied_index(),
        s.state_hash(),
    )
    assert after == before
    assert s.read_chunk(b"f", 0) == b"xy"
    # staged chunks survive too: the upload can be committed after the restart
    assert one(s, FileCommit(b"g", b"u2", 6, 1, hashlib.sha256(b"staged").digest())) == OK
    assert s.entries(1, 7) == ents(1, [1] * 6)


def test_state_hash_is_the_twins_and_the_records(harness: Harness) -> None:
    """Both kinds keep the same state hash for the same entries (state_hash.py), equal to
    the one computed from the records a snapshot stream carries; the empty state's is 0."""
    s = harness.open()
    assert s.state_hash() == (0, 0) and s.state_hashes() == [(0, 0)]
    other = Harness("memory" if harness.kind == "lmdb" else "lmdb", harness.path.parent / "o")
    twin = other.open()
    try:
        datas = [
            req(Put(b"a", b"1"), b"c", 1),
            req(Put(b"b", b"2")),
            req(Cas(b"a", b"1", b"3"), b"c", 2),
            req(Delete(b"b")),
            req(FileChunk(b"f", b"u", 0, b"x" * 5000)),
            req(FileChunk(b"f", b"u", 1, b"y")),
            req(FileCommit(b"f", b"u", 5001, 2, hashlib.sha256(b"x" * 5000 + b"y").digest())),
            req(FileChunk(b"g", b"u2", 0, b"staged")),
        ]
        es = [Entry(1, i + 1, d) for i, d in enumerate(datas)]
        for st in (s, twin):
            st.save(None, es)
        s.apply(es[:3])
        s.apply(es[3:])
        twin.apply(es)
        index, value = s.state_hash()
        assert (index, value) == twin.state_hash() and index == len(es) and value != 0
        with s.open_snapshot() as src:
            recs = [r for c in src.chunks() for r in decode_snapshot_chunk(c)]
        assert sh.hash_records(recs) == value
        one(s, FileDelete(b"f"))
        one(twin, FileDelete(b"f"))
        assert s.state_hash() == twin.state_hash() != (index, value)
    finally:
        other.close_all()


def test_closed_store_refuses_work(harness: Harness) -> None:
    s = harness.open()
    s.close()
    with pytest.raises(StoreError):
        s.save(None, ents(1, [1]))
    with pytest.raises(StoreError):
        s.apply([Entry(1, 1)])
