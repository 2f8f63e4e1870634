"""Scrub passes (rkv/store/scrub.py): a pass reads every record in short read transactions
while writes go on, and its hash still equals the running state hash unless a record was
changed other than by applying the log; a record that fails its check is named, never
counted; a snapshot install starts the pass over; a correction makes the running hash stand
for the stored records."""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rkv.codec import Delete, FileAbort, FileChunk, FileDelete, Put
from rkv.raft.types import HardState, Snapshot
from rkv.store import LmdbStore
from rkv.store import kv as kvdb
from rkv.store import scrub as scrubdb
from rkv.store.scrub import ScrubPass, Verdict
from rkv.store.seal import seal

from .harness import flip_bit, put_raw
from .test_state_hash import (
    BIG,
    Step,
    entries,
    lmdb_store,
    memory_store,
    run,
    stream_hash,
    upload,
)

BASE: list[Step] = [
    *[(b"", 0, Put(k, b"v-" + k)) for k in (b"a", b"b", b"c", b"d", b"e", b"f")],
    (b"client-1", 1, Put(b"g", b"by a client")),
    *upload(b"photo", b"up-photo", [b"A" * BIG, b"B" * BIG, b"C" * 10]),
    (b"", 0, FileChunk(b"draft", b"up-draft", 0, b"D" * BIG)),
    (b"client-2", 1, Put(b"h", b"by another")),
]
# The pass reads, in order: kv a..h (8 records); files (12): the draft's activity, the
# upload sums of up-draft and up-photo, photo's manifest, 3 pins, the staged chunks of
# up-draft (1) then up-photo (3), photo's committed upload; sessions (4): 2 clients, 2 LRU.
KV = 8
PHOTO_CHUNKS = KV + 9  # the pass is at up-photo's first staged chunk after this many
RECORDS = 8 + 12 + 4


def apply(steps: list[Step]) -> Callable[[LmdbStore], None]:
    def op(s: LmdbStore) -> None:
        run(s, entries(steps, s.last_index() + 1), len(steps))

    return op


def install(s: LmdbStore) -> None:
    """Replace the state with a snapshot of another store's (the same entries plus one)."""
    src = memory_store()
    run(src, entries([*BASE, (b"", 0, Put(b"z", b"from the snapshot"))]), 100)
    with src.open_snapshot(500) as source:
        s.begin_snapshot_install(source.meta)
        for seq, chunk in enumerate(source.chunks()):
            s.stage_snapshot_chunk(seq, chunk)
        s.finish_snapshot_staging(source.chunk_count, source.records)
    meta = source.meta
    s.install_snapshot(HardState(2, "", meta.index), [], Snapshot(meta=meta))


@dataclass(frozen=True)
class Scenario:
    """Read `first` records, do `op`, then read the rest `per` at a time: `status`."""

    first: int
    op: Callable[[LmdbStore], None]
    status: str = "ok"
    per: int = 2


SCENARIOS: dict[str, Scenario] = {
    "nothing changes": Scenario(5, lambda s: None),
    "overwrite and delete behind the position": Scenario(
        4, apply([(b"", 0, Put(b"b", b"new")), (b"", 0, Delete(b"a"))])
    ),
    "a new key behind the position": Scenario(4, apply([(b"", 0, Put(b"bb", b"new"))])),
    "changes ahead of the position": Scenario(
        2, apply([(b"", 0, Put(b"f", b"new")), (b"", 0, Delete(b"e"))])
    ),
    "a client's write behind the position (its key and session)": Scenario(
        KV + 13, apply([(b"client-1", 2, Put(b"a", b"later"))]), per=1
    ),
    "a whole upload dropped behind the position": Scenario(
        KV + 12, apply([(b"", 0, FileDelete(b"photo"))])
    ),
    "a whole upload dropped ahead of the position": Scenario(
        3, apply([(b"", 0, FileDelete(b"photo"))])
    ),
    "an upload dropped while the pass is inside its chunks": Scenario(
        PHOTO_CHUNKS + 1, apply([(b"", 0, FileDelete(b"photo"))]), status="skipped"
    ),
    "an upload aborted behind the position": Scenario(
        PHOTO_CHUNKS, apply([(b"", 0, FileAbort(b"up-draft", 0))])
    ),
    "many batches meanwhile": Scenario(
        6,
        lambda s: [apply([(b"c%d" % i, 1, Put(b"%c" % (97 + i % 9), b"x"))])(s) for i in range(40)],
        per=1,
    ),
    "a snapshot installed: the pass starts over": Scenario(KV, install),
}


def read(p: ScrubPass, n: int) -> Verdict | None:
    got = 0
    while got < n:
        chunk, verdict = p.step(min(n - got, 1000), 1 << 30)
        got += chunk.records
        if verdict is not None:
            return verdict
    return None


def finish(p: ScrubPass, per: int) -> Verdict:
    while True:
        verdict = read(p, per)
        if verdict is not None:
            return verdict


@pytest.mark.parametrize("name", SCENARIOS)
def test_a_pass_stays_exact_while_writes_go_on(name: str, tmp_path: Path) -> None:
    sc = SCENARIOS[name]
    s = lmdb_store(tmp_path / "d")
    try:
        run(s, entries(BASE), 3)
        with s.scrub_pass() as p:
            assert read(p, sc.first) is None
            sc.op(s)
            v = finish(p, sc.per)
        assert v.status == sc.status
        assert (v.index, v.stored) == s.state_hash()
        if v.status == "ok":
            assert v.computed == v.stored == stream_hash(s)
    finally:
        s.close()


kv_steps = st.lists(
    st.tuples(
        st.sampled_from([b"", b"client-a", b"client-b"]),
        st.sampled_from([b"a", b"b", b"c", b"d", b"e", b"bb", b"zz"]),
        st.none() | st.binary(max_size=4),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(1, 4), kv_steps), min_size=1, max_size=8))
def test_any_interleaving_of_pieces_and_writes_hashes_right(
    plan: list[tuple[int, list[tuple[bytes, bytes, bytes | None]]]],
) -> None:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="rkv-scrubprop-") as d:
        s = lmdb_store(Path(d) / "n")
        seqs: dict[bytes, int] = {}
        try:
            run(s, entries(BASE), 5)
            with s.scrub_pass() as p:
                verdict = None
                for n, writes in plan:
                    steps: list[Step] = []
                    for client, key, value in writes:
                        seq = seqs[client] = seqs.get(client, 1) + 1 if client else 0
                        cmd = Delete(key) if value is None else Put(key, value)
                        steps.append((client, seq, cmd))
                    apply(steps)(s)
                    verdict = read(p, n)
                    if verdict is not None:
                        break
                if verdict is None:
                    verdict = finish(p, 3)
            assert verdict.status == "ok"
            assert verdict.computed == stream_hash(s) == s.state_hash()[1]
        finally:
            s.close()


@dataclass(frozen=True)
class Damage:
    db: bytes
    key: Callable[[LmdbStore], bytes]
    what: str


def _pinned_log_key(s: LmdbStore) -> bytes:
    skey = kvdb.staged_key(b"up-photo", 1)
    raw = s._read(lambda txn: txn.get(skey, db=s._dbs.files))
    ref = kvdb.decode_staged_any(raw[4:])[1]
    assert isinstance(ref, tuple)
    return struct.pack(">Q", ref[0])


DAMAGES = {
    "a value": Damage(b"kv", lambda s: b"c", "key b'c'"),
    "a session": Damage(b"sessions", lambda s: kvdb.session_key(b"client-1"), "session"),
    "a session order record": Damage(
        b"sessions", lambda s: kvdb.session_lru_key(7, b"client-1"), "session order"
    ),
    "a manifest": Damage(b"files", lambda s: kvdb.manifest_key(b"photo"), "manifest"),
    "a copied chunk": Damage(b"files", lambda s: kvdb.staged_key(b"up-photo", 2), "staged chunk 2"),
    "a chunk kept in the log": Damage(b"log", _pinned_log_key, "log record"),
    "an upload sum": Damage(b"files", lambda s: kvdb.upload_sum_key(b"up-draft"), "upload sum"),
}


@pytest.mark.parametrize("name", DAMAGES)
def test_a_damaged_record_is_named_and_not_hashed(name: str, tmp_path: Path) -> None:
    dmg = DAMAGES[name]
    s = lmdb_store(tmp_path / "d")
    run(s, entries(BASE), 100)
    key = dmg.key(s)
    s.close()
    flip_bit(tmp_path / "d", dmg.db, key, -1)
    s = lmdb_store(tmp_path / "d")
    try:
        with s.scrub_pass() as p:
            damaged = []
            while True:
                chunk, v = p.step(3, 1 << 20)
                damaged += chunk.damaged
                if v is not None:
                    break
        assert v.status == "damaged" and v.damaged == 1
        assert [(e.db, e.key) for e in damaged] == [(dmg.db.decode(), key)]
        assert dmg.what in damaged[0].what
        assert v.records == RECORDS  # every record read, the damaged one too
    finally:
        s.close()


def test_a_record_changed_with_a_valid_seal_is_a_mismatch_until_corrected(tmp_path: Path) -> None:
    s = lmdb_store(tmp_path / "d")
    run(s, entries(BASE), 100)
    raw = kvdb.encode_record(kvdb.Record(b"not what was applied", 3, 3, 1))
    s.close()
    put_raw(tmp_path / "d", b"kv", b"c", seal(b"c", raw))
    s = lmdb_store(tmp_path / "d")
    try:
        before = s.state_hash()
        v = finish_pass(s)
        assert v.status == "mismatch" and v.stored == before[1]
        assert v.computed == stream_hash(s) != before[1]
        assert s.correct_state_hash(v.computed - v.stored) == (before[0], v.computed)
        assert s.state_hash() == (before[0], v.computed)
        assert s.state_hashes() == [(before[0], v.computed)]
        assert finish_pass(s).status == "ok"
        # the running hash goes on from the corrected value: overwriting the record (with
        # the metadata it had) heals it, the hash is a healthy replica's again
        apply([(b"", 0, Put(b"c", b"v-c"))])(s)
        good = memory_store()
        run(good, entries([*BASE, (b"", 0, Put(b"c", b"v-c"))]), 100)
        assert s.state_hash() == good.state_hash()
        assert s.state_hash()[1] == stream_hash(s)
    finally:
        s.close()
    s = lmdb_store(tmp_path / "d")
    try:
        assert finish_pass(s).status == "ok"  # the correction is stored
    finally:
        s.close()


def finish_pass(s: LmdbStore) -> Verdict:
    with s.scrub_pass() as p:
        return finish(p, 4)


def test_one_pass_at_a_time_and_tracking_stops_with_it(tmp_path: Path) -> None:
    s = lmdb_store(tmp_path / "d")
    try:
        run(s, entries(BASE), 100)
        p = s.scrub_pass()
        with pytest.raises(Exception, match="open already"):
            s.scrub_pass()
        assert s._tracker is not None
        p.close()
        assert s._tracker is None
        finish_pass(s)
    finally:
        s.close()


def test_a_change_not_handed_over_makes_the_hash_unusable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A piece never uses a state whose changes it did not get (bounded wait)."""
    monkeypatch.setattr(scrubdb, "DELIVERY_WAIT", 0.05)
    s = lmdb_store(tmp_path / "d")
    try:
        run(s, entries(BASE), 100)
        with s.scrub_pass() as p:
            read(p, 3)
            tracker, s._tracker = s._tracker, None  # the apply below hands nothing over
            apply([(b"", 0, Put(b"a", b"changed behind"))])(s)
            s._tracker = tracker
            v = finish(p, 5)
        assert v.status == "skipped"
    finally:
        s.close()
