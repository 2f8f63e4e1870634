"""The state hash (rkv/store/state_hash.py): the LMDB store and the memory twin give the same
value for the same applied entries whatever the apply batches, the running (incremental)
value equals the one computed from the records (the snapshot stream's, and a scrub pass's),
any change to a counted record changes it, storage details (pins, compaction, a snapshot
install) do not, and it survives restarts, installs and the schema upgrade."""

from __future__ import annotations

import hashlib
import shutil
import struct
from pathlib import Path

import lmdb
import pytest

from rkv.codec import (
    Cas,
    Command,
    Delete,
    FileAbort,
    FileChunk,
    FileCommit,
    FileDelete,
    LeaseCheckpoint,
    LeaseExpire,
    LeaseGrant,
    LeaseRenew,
    LeaseRevoke,
    Put,
    PutLease,
    Request,
    decode_snapshot_chunk,
    encode_request,
)
from rkv.raft import confchange
from rkv.raft.confchange import ConfChangeType
from rkv.raft.types import ConfState, Entry, EntryType, HardState, Snapshot
from rkv.store import LmdbStore, MemoryStore, open_store
from rkv.store import kv as kvdb
from rkv.store import state_hash as sh
from rkv.store.scrub import Verdict
from rkv.store.seal import seal
from rkv.store.snapshot import Staging

from .harness import CLUSTER, NODE, VOTERS, Harness, Store

Step = tuple[bytes, int, Command] | Entry  # (client id, seq, command), or a raw entry
BIG = 6000  # > kv.PIN_MIN: a chunk this long is kept in its log record (LMDB)


def upload(key: bytes, upload_id: bytes, parts: list[bytes], client: bytes = b"") -> list[Step]:
    blob = b"".join(parts)
    steps: list[Step] = [(client, 0, FileChunk(key, upload_id, n, p)) for n, p in enumerate(parts)]
    sha = hashlib.sha256(blob).digest()
    steps.append((client, 0, FileCommit(key, upload_id, len(blob), len(parts), sha)))
    return steps


def conf_entry(node: str) -> Entry:
    change = confchange.ConfChange(ConfChangeType.ADD_LEARNER, node)
    data = confchange.encode(confchange.ConfChangeEntry(change, ConfState(VOTERS, (node,))))
    return Entry(1, 0, data, EntryType.CONF_CHANGE)


PROGRAMS: dict[str, list[Step]] = {
    "puts and overwrites": [(b"", 0, Put(b"k%d" % (i % 7), b"v%d" % i)) for i in range(30)],
    "deletes and cas": [
        (b"", 0, Put(b"a", b"1")),
        (b"", 0, Put(b"b", b"2")),
        (b"", 0, Delete(b"a")),
        (b"", 0, Delete(b"missing")),
        (b"", 0, Cas(b"b", b"2", b"3")),
        (b"", 0, Cas(b"b", b"2", b"4")),
        (b"", 0, Cas(b"c", None, b"new")),
        (b"", 0, Put(b"a", b"again")),
    ],
    "sessions, retries and stale requests": [
        (b"client-1", 1, Put(b"x", b"1")),
        (b"client-2", 1, Put(b"y", b"1")),
        (b"client-1", 1, Put(b"x", b"retried")),
        (b"client-1", 2, Delete(b"x")),
        (b"client-1", 1, Put(b"x", b"stale")),
        (b"client-2", 2, Cas(b"y", b"0", b"no")),
    ],
    "session eviction": [(b"client-%d" % i, 1, Put(b"k", b"%d" % i)) for i in range(6)],
    "small file": upload(b"note", b"up-note", [b"n" * 100, b"o" * 10]),
    "chunks kept in the log": upload(b"photo", b"up-photo", [b"A" * BIG, b"B" * BIG]),
    "file overwritten, then deleted": [
        *upload(b"f", b"up-1", [b"1" * BIG, b"2" * 10]),
        *upload(b"f", b"up-2", [b"3" * 50]),
        (b"", 0, FileDelete(b"f")),
        (b"", 0, FileDelete(b"f")),
        (b"", 0, Put(b"left", b"over")),
    ],
    "upload aborted, another in progress": [
        (b"", 0, FileChunk(b"g", b"up-a", 0, b"x" * BIG)),
        (b"", 0, FileChunk(b"g", b"up-a", 1, b"y" * 20)),
        (b"", 0, FileAbort(b"up-a", 0)),
        (b"", 0, FileChunk(b"h", b"up-b", 0, b"z" * BIG)),
    ],
    "chunk staged again with other data": [
        (b"", 0, FileChunk(b"r", b"up-r", 0, b"first" * 2000)),
        (b"", 0, FileChunk(b"r", b"up-r", 0, b"second" * 10)),
        (b"", 0, FileChunk(b"r", b"up-r", 0, b"third" * 2000)),
        *upload(b"r", b"up-r", [b"third" * 2000])[1:],
    ],
    "leases: grant, attach, checkpoint, renew, expire, revoke": [
        (b"", 0, LeaseGrant(0, 5000)),
        (b"", 0, LeaseGrant(40, 9000)),
        (b"client-1", 1, PutLease(b"l/a", b"1", 1)),
        (b"", 0, PutLease(b"l/b", b"2", 1)),
        (b"", 0, PutLease(b"l/c", b"3", 40)),
        (b"", 0, LeaseCheckpoint(((1, 1, 3000), (40, 2, 100)))),
        (b"", 0, Put(b"l/b", b"plain")),
        (b"client-1", 2, LeaseRenew(40)),
        (b"", 0, LeaseExpire(1, ((1, 1),))),
        (b"", 0, LeaseGrant(0, 700)),
        (b"", 0, PutLease(b"l/d", b"4", 10)),
        (b"", 0, LeaseRevoke(40)),
    ],
    "bad commit, noops, conf change, garbage": [
        (b"", 0, FileChunk(b"b", b"up-bad", 0, b"q" * 30)),
        (b"", 0, FileCommit(b"b", b"up-bad", 31, 1, b"\x00" * 32)),
        Entry(1, 0, b""),
        conf_entry("n4"),
        Entry(1, 0, b"\xc1 not a command"),
        (b"client-9", 1, FileCommit(b"b", b"up-bad", 30, 2, b"\x00" * 32)),
    ],
}
MAX_SESSIONS = 4  # "session eviction" evicts


def entries(steps: list[Step], start: int = 1) -> list[Entry]:
    out = []
    for i, s in enumerate(steps):
        index = start + i
        if isinstance(s, Entry):
            out.append(Entry(s.term, index, s.data, s.type))
        else:
            client, seq, cmd = s
            out.append(Entry(1, index, encode_request(Request(client, seq, cmd))))
    return out


def run(s: Store, es: list[Entry], batch: int) -> None:
    """Log the entries, then apply them in batches of `batch`."""
    s.save(HardState(1, "", es[-1].index), es)
    for i in range(0, len(es), batch):
        s.apply(es[i : i + batch])


def stream_hash(s: Store) -> int:
    """The state hash computed from scratch: over the records of the store's snapshot stream."""
    with s.open_snapshot(4096) as src:
        return sh.hash_records(r for c in src.chunks() for r in decode_snapshot_chunk(c))


def scrub(s: LmdbStore, max_records: int = 3) -> Verdict:
    with s.scrub_pass() as p:
        while True:
            _, verdict = p.step(max_records, 1 << 20)
            if verdict is not None:
                return verdict


def lmdb_store(path: Path) -> LmdbStore:
    return open_store(
        path, cluster_id=CLUSTER, node_id=NODE, voters=VOTERS, max_sessions=MAX_SESSIONS
    )


def memory_store() -> MemoryStore:
    return MemoryStore(CLUSTER, NODE, VOTERS, max_sessions=MAX_SESSIONS)


@pytest.mark.parametrize("name", PROGRAMS)
def test_both_stores_agree_whatever_the_batches(name: str, tmp_path: Path) -> None:
    es = entries(PROGRAMS[name])
    stores: list[Store] = []
    for i, batch in enumerate((1, 3, len(es))):
        for s in (lmdb_store(tmp_path / str(i)), memory_store()):
            run(s, es, batch)
            stores.append(s)
    try:
        want = stores[0].state_hash()
        assert want[0] == len(es) and want[1] != 0
        for s in stores:
            assert s.state_hash() == want, type(s).__name__
            assert stream_hash(s) == want[1]  # incremental == from scratch
        for s in stores[::2]:
            assert isinstance(s, LmdbStore)
            v = scrub(s)
            assert (v.status, v.index, v.computed) == ("ok", len(es), want[1])
    finally:
        for s in stores:
            s.close()


def test_checkpoints_are_at_the_same_indexes_whatever_the_batches(tmp_path: Path) -> None:
    n = 3 * sh.CHECKPOINT_EVERY + 5
    es = entries([(b"c%d" % (i % 5), i + 1, Put(b"k%d" % (i % 11), b"%d" % i)) for i in range(n)])
    a, b = lmdb_store(tmp_path / "a"), memory_store()
    try:
        run(a, es, 7)
        run(b, es, 50)
        marks = [i * sh.CHECKPOINT_EVERY for i in (1, 2, 3)]
        assert [i for i, _ in a.state_hashes()] == [*marks, n]
        assert a.state_hashes() == b.state_hashes()
        # every checkpoint is the hash of the state at that index
        for i, h in a.state_hashes():
            c = memory_store()
            run(c, es[:i], 1000)
            assert c.state_hash() == (i, h)
    finally:
        a.close()


# Two programs that differ in one thing, which a replica could get wrong: the hash differs.
VARIANTS: dict[str, tuple[list[Step], list[Step]]] = {
    "a value's byte": (
        [(b"", 0, Put(b"k", b"value"))],
        [(b"", 0, Put(b"k", b"valuf"))],
    ),
    "a key": ([(b"", 0, Put(b"k1", b"v"))], [(b"", 0, Put(b"k2", b"v"))]),
    "a key's mod index (same keys and values)": (
        [(b"", 0, Put(b"k", b"v")), (b"", 0, Put(b"other", b""))],
        [(b"", 0, Put(b"other", b"")), (b"", 0, Put(b"k", b"v"))],
    ),
    "a key's version": (
        [(b"", 0, Put(b"k", b"v")), (b"", 0, Put(b"x", b"v"))],
        [(b"", 0, Put(b"k", b"v")), (b"", 0, Put(b"k", b"v"))],
    ),
    "a session's result": (
        [(b"", 0, Put(b"k", b"1")), (b"client", 1, Cas(b"k", b"1", b"1"))],
        [(b"", 0, Put(b"k", b"2")), (b"client", 1, Cas(b"k", b"1", b"2"))],
    ),
    "a file chunk's byte": (
        upload(b"f", b"up", [b"A" * BIG]),
        upload(b"f", b"up", [b"A" * (BIG - 1) + b"B"]),
    ),
    "an upload's id": (upload(b"f", b"up1", [b"A" * 10]), upload(b"f", b"up2", [b"A" * 10])),
    "a staged chunk's file key": (
        [(b"", 0, FileChunk(b"f", b"up", 0, b"x"))],
        [(b"", 0, FileChunk(b"g", b"up", 0, b"x"))],
    ),
}


@pytest.mark.parametrize("name", VARIANTS)
def test_any_change_to_a_record_changes_the_hash(name: str, tmp_path: Path) -> None:
    one, other = VARIANTS[name]
    hashes = set()
    for i, steps in enumerate((one, other)):
        s = lmdb_store(tmp_path / str(i))
        try:
            run(s, entries(steps), 1)
            hashes.add(s.state_hash())
        finally:
            s.close()
    assert len(hashes) == 2


def test_pins_and_compaction_do_not_count(tmp_path: Path) -> None:
    """A chunk kept in its log record (LMDB) or copied (memory, or LMDB when the log has no
    record for it) hashes the same; compacting the log past it changes nothing."""
    es = entries(PROGRAMS["chunks kept in the log"] + [(b"", 0, Put(b"after", b"x"))])
    pinned, copied = lmdb_store(tmp_path / "p"), lmdb_store(tmp_path / "c")
    try:
        run(pinned, es, len(es))
        for e in es:  # no log records: every chunk is stored by copy
            copied.apply([e])
        assert pinned.stats()["pinned_bytes"] == 2 * BIG
        assert copied.stats()["pinned_bytes"] == 0
        assert pinned.state_hash() == copied.state_hash()
        before = pinned.state_hash()
        pinned.compact(len(es))
        assert pinned.state_hash() == before == copied.state_hash()
        assert scrub(pinned).status == "ok"
    finally:
        pinned.close()
        copied.close()


def transfer(src: Store, dst: Store) -> Snapshot:
    with src.open_snapshot(700) as source:
        meta = source.meta
        dst.begin_snapshot_install(meta)
        for seq, chunk in enumerate(source.chunks()):
            dst.stage_snapshot_chunk(seq, chunk)
        dst.finish_snapshot_staging(source.chunk_count, source.records)
    return Snapshot(meta=meta)


@pytest.mark.parametrize("dst_kind", ["lmdb", "memory"])
@pytest.mark.parametrize("src_kind", ["lmdb", "memory"])
def test_an_installed_snapshot_has_the_source_hash(
    src_kind: str, dst_kind: str, tmp_path: Path
) -> None:
    steps = [step for p in PROGRAMS.values() for step in p if not isinstance(step, Entry)]
    es = entries(steps)
    src = Harness(src_kind, tmp_path / "src").open(max_sessions=MAX_SESSIONS)
    dst_h = Harness(dst_kind, tmp_path / "dst")
    dst = dst_h.open(max_sessions=MAX_SESSIONS)
    try:
        run(src, es, 10)
        run(dst, entries([(b"", 0, Put(b"old", b"state"))]), 1)  # replaced by the install
        snap = transfer(src, dst)
        dst.install_snapshot(HardState(1, "", snap.meta.index), [], snap)
        assert dst.state_hash() == src.state_hash() == (len(es), stream_hash(src))
        assert dst.state_hashes() == [src.state_hash()]
        if isinstance(dst, LmdbStore):
            assert scrub(dst).status == "ok"
        # and both go on alike: an upload whose chunks drop an installed upload's
        more = entries(
            [*upload(b"r", b"up-r2", [b"z" * BIG]), (b"", 0, FileDelete(b"photo"))], len(es) + 1
        )
        run(src, more, 2)
        run(dst, more, 2)
        assert dst.state_hash() == src.state_hash()
        dst = dst_h.reopen(dst)
        assert dst.state_hash() == src.state_hash()
        assert stream_hash(dst) == src.state_hash()[1]
    finally:
        src.close()
        dst_h.close_all()


def test_restart_keeps_the_hash_not_the_history(harness: Harness) -> None:
    s = harness.open()
    es = entries([(b"", 0, Put(b"k%d" % i, b"v")) for i in range(sh.CHECKPOINT_EVERY + 3)])
    run(s, es, 10)
    assert len(s.state_hashes()) == 2
    want = s.state_hash()
    s = harness.reopen(s)
    assert s.state_hash() == want
    assert s.state_hashes() == [want]


def _to_schema_2(path: Path) -> None:
    """What a data dir of schema 2 (the rkv before the state hash) holds: no state hash in
    meta, no upload sums."""
    env = lmdb.open(str(path), max_dbs=12)
    try:
        with env.begin(write=True) as txn:
            meta = env.open_db(b"meta", txn=txn)
            txn.put(b"schema", struct.pack(">I", 2), db=meta)
            assert txn.delete(kvdb.STATE_HASH_KEY, db=meta)
            for name in (b"files", b"files.1"):
                kvdb.delete_prefix(txn, env.open_db(name, txn=txn), b"h")
    finally:
        env.close()


def test_a_schema_2_data_dir_gets_its_hash_on_open(tmp_path: Path) -> None:
    steps = [step for p in PROGRAMS.values() for step in p]
    es = entries(steps)
    s = lmdb_store(tmp_path / "d")
    run(s, es, 5)
    want = s.state_hash()
    s.close()
    _to_schema_2(tmp_path / "d")
    s = lmdb_store(tmp_path / "d")
    try:
        assert s.upgraded_records == 0  # nothing rewritten, the hash added
        assert s.state_hash() == want
        assert scrub(s).status == "ok"
        # the upload sums were rebuilt: dropping an upload keeps the hash right
        more = entries(
            [(b"", 0, FileDelete(b"photo")), (b"", 0, FileAbort(b"up-b", 0))], len(es) + 1
        )
        run(s, more, 1)
        assert s.state_hash()[1] == stream_hash(s)
    finally:
        s.close()


def test_the_schema_1_fixture_gets_its_hash_too(tmp_path: Path) -> None:
    from .test_schema_migration import open_fixture, unpack_v1

    s = open_fixture(unpack_v1(tmp_path / "d"))
    try:
        index, value = s.state_hash()
        assert index == s.applied_index() and value == stream_hash(s)
        assert scrub(s).status == "ok"
        # the snapshot staged by the rkv of schema 1: no hash in its staging record
        raw = s._read(lambda txn: txn.get(kvdb.STAGING_KEY, db=s._dbs.meta))
        assert Staging.decode(raw).state_hash is None
    finally:
        s.close()


def test_a_snapshot_staged_before_schema_3_gets_its_hash_at_install(tmp_path: Path) -> None:
    """Staging that began under schema 2 (a staging record of 5 fields, no upload sums in
    the staged generation) goes on after the upgrade; the install computes the hash."""
    src, dst = memory_store(), lmdb_store(tmp_path / "dst")
    try:
        run(src, entries([step for p in PROGRAMS.values() for step in p]), 4)
        with src.open_snapshot(700) as source:
            meta = source.meta
            dst.begin_snapshot_install(meta)
            chunks = list(source.chunks())
            for seq, chunk in enumerate(chunks[:3]):
                dst.stage_snapshot_chunk(seq, chunk)

            def legacy(txn: lmdb.Transaction[bytes]) -> None:
                st = Staging.decode(txn.get(kvdb.STAGING_KEY, db=dst._dbs.meta))
                old = msgpack_list(st)
                txn.put(kvdb.STAGING_KEY, old, db=dst._dbs.meta)
                gen = dst._gens[st.gen]
                kvdb.delete_prefix(txn, gen.files, b"h")

            dst._write(legacy)
            for seq, chunk in enumerate(chunks[3:], start=3):
                dst.stage_snapshot_chunk(seq, chunk)
            dst.finish_snapshot_staging(source.chunk_count, source.records)
        dst.install_snapshot(HardState(1, "", meta.index), [], Snapshot(meta=meta))
        assert dst.state_hash() == src.state_hash()
        assert scrub(dst).status == "ok"
        more = entries([(b"", 0, FileDelete(b"photo"))], meta.index + 1)
        run(src, more, 1)
        run(dst, more, 1)  # a drop: the upload sums were rebuilt too
        assert dst.state_hash() == src.state_hash()
    finally:
        dst.close()


def msgpack_list(st: Staging) -> bytes:
    """A staging record as schema 2 wrote it (5 fields)."""
    from rkv.codec import pack, snapshot_meta_to_list

    return pack([st.gen, snapshot_meta_to_list(st.meta), st.next_seq, st.records, st.done])


def test_dropping_an_uncounted_record_is_still_caught_by_the_scrub(tmp_path: Path) -> None:
    """Upload sums are derived, not hashed: a wrong one makes the hash wrong only once the
    upload is dropped, and the next scrub pass then finds the mismatch."""
    s = lmdb_store(tmp_path / "d")
    try:
        run(s, entries(upload(b"f", b"up", [b"A" * BIG])), 1)
        hkey = kvdb.upload_sum_key(b"up")
        s._write(lambda txn: txn.put(hkey, seal(hkey, b"\x00" * 16), db=s._dbs.files))
        assert scrub(s).status == "ok"
        run(s, entries([(b"", 0, FileDelete(b"f"))], s.last_index() + 1), 1)
        v = scrub(s)
        assert v.status == "mismatch" and v.computed == stream_hash(s)
    finally:
        s.close()


def test_copies_of_a_data_dir_hash_alike(tmp_path: Path) -> None:
    """Sanity: the hash is a function of the records (a copied data dir agrees)."""
    s = lmdb_store(tmp_path / "a")
    run(s, entries(PROGRAMS["small file"]), 1)
    want = s.state_hash()
    s.close()
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    (tmp_path / "b" / "rkv.lock").unlink(missing_ok=True)
    c = lmdb_store(tmp_path / "b")
    try:
        assert c.state_hash() == want == (c.applied_index(), stream_hash(c))
    finally:
        c.close()
