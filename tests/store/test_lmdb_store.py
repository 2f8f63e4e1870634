"""LMDB-specific behaviour: identity and schema checks, the data-dir lock, map growth,
corruption detection, and a real full disk (a 2 MiB tmpfs)."""

from __future__ import annotations

import os
import random
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import lmdb
import pytest

from rkv.codec import Put, Request, encode_request
from rkv.raft.types import ConfState, Entry, HardState
from rkv.store import (
    BackupCopy,
    CorruptionError,
    LmdbStore,
    StoreError,
    StoreFullError,
    StoreIdentityError,
    adopt_backup_copy,
    open_store,
)
from rkv.store.seal import seal

from .harness import CLUSTER, NODE, VOTERS


def opened(path: Path, **kw: object) -> LmdbStore:
    args: dict[str, object] = {"cluster_id": CLUSTER, "node_id": NODE, "voters": VOTERS}
    args.update(kw)
    return open_store(path, **args)  # type: ignore[arg-type]


def put_entries(start: int, n: int, value_size: int, term: int = 1) -> list[Entry]:
    return [
        Entry(
            term=term,
            index=i,
            data=encode_request(Request(b"", 0, Put(b"k%08d" % i, bytes([i % 251]) * value_size))),
        )
        for i in range(start, start + n)
    ]


def write(s: LmdbStore, entries: list[Entry]) -> None:
    s.save(HardState(entries[-1].term, NODE, entries[-1].index), entries)
    s.apply(entries)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "node"


def raw_env(path: Path) -> lmdb.Environment:
    return lmdb.open(str(path), max_dbs=8)


# --- identity ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cluster", "node"),
    [("other-cluster", NODE), (CLUSTER, "n2"), ("other-cluster", "n2")],
)
def test_identity_refusal(path: Path, cluster: str, node: str) -> None:
    opened(path).close()
    with pytest.raises(StoreIdentityError) as ei:
        opened(path, cluster_id=cluster, node_id=node)
    msg = str(ei.value)
    assert "\n" not in msg
    assert repr(CLUSTER) in msg and repr(NODE) in msg
    assert repr(cluster) in msg and repr(node) in msg
    # the refusal left the dir unlocked and intact
    s = opened(path)
    assert s.cluster_id == CLUSTER and s.node_id == NODE
    s.close()


def test_stored_voters_win_over_arguments(path: Path) -> None:
    opened(path).close()
    s = opened(path, voters=("z",))
    assert s.initial_state()[1] == ConfState(VOTERS)
    s.close()


@pytest.mark.parametrize("version", [0, 4])
def test_schema_version_checked(path: Path, version: int) -> None:
    """A schema this rkv neither reads nor upgrades (0, or one from a newer rkv) is refused,
    and the refusal changes nothing (schema 1 is upgraded: test_schema_migration.py)."""
    opened(path).close()
    env = raw_env(path)
    with env.begin(write=True) as txn:
        txn.put(b"schema", struct.pack(">I", version), db=env.open_db(b"meta", txn=txn))
    env.close()
    for _ in range(2):
        with pytest.raises(StoreIdentityError, match=f"schema version {version}"):
            opened(path)


def test_data_dir_is_locked_while_open(path: Path) -> None:
    s = opened(path)
    with pytest.raises(StoreError, match="in use"):
        opened(path)
    s.close()
    opened(path).close()


def test_not_an_lmdb_dir(path: Path) -> None:
    path.mkdir()
    (path / "data.mdb").write_bytes(b"this is not lmdb" * 1000)
    with pytest.raises(StoreError):
        opened(path)


# --- map growth ----------------------------------------------------------------------------


def test_map_grows_as_needed(path: Path) -> None:
    initial = 1 << 16
    s = opened(path, map_size=initial)
    for b in range(12):
        write(s, put_entries(1 + b * 20, 20, 10_000))  # ~2.4 MB in all, twice (log and kv)
    st = s.stats()
    assert st["map_size"] > initial
    assert st["applied_index"] == 240
    s.close()
    s = opened(path, map_size=initial)  # a smaller map than the file is fine on reopen
    assert s.get(b"k%08d" % 240) == bytes([240 % 251]) * 10_000
    assert len(s.entries(1, 241)) == 240
    s.close()


def test_map_size_limit_is_store_full_and_harmless(path: Path) -> None:
    s = opened(path, map_size=1 << 16, max_map_size=1 << 20)
    last = 0
    with pytest.raises(StoreFullError):
        for _b in range(100):
            es = put_entries(last + 1, 10, 10_000)
            write(s, es)
            last = es[-1].index
    # the refused write changed nothing, and the store still works
    assert s.applied_index() == last
    assert s.last_index() in (last, last + 10)  # the failing batch was either save or apply
    assert s.get(b"k%08d" % last) is not None
    assert s.get(b"k%08d" % (last + 1)) is None
    s.close()
    # with a higher limit the same data dir continues where it stopped
    s = opened(path, map_size=1 << 16, max_map_size=1 << 24)
    assert s.applied_index() == last
    write(s, put_entries(last + 1, 10, 10_000))
    assert s.get(b"k%08d" % (last + 10)) is not None
    s.close()


# --- corruption --------------------------------------------------------------------------


def test_flipped_byte_in_log_entry_is_detected(path: Path) -> None:
    s = opened(path)
    s.save(None, put_entries(1, 3, 100))
    s.close()
    env = raw_env(path)
    with env.begin(write=True) as txn:
        db = env.open_db(b"log", txn=txn)
        key = struct.pack(">Q", 2)
        stored = txn.get(key, db=db)
        assert stored is not None
        value = bytearray(stored)
        value[-10] ^= 0x40  # inside the value bytes of the Put
        txn.put(key, bytes(value), db=db)
    env.close()
    s = opened(path)
    with pytest.raises(CorruptionError):
        s.entries(1, 4)
    with pytest.raises(CorruptionError):
        s.term(2)
    assert s.entries(3, 4) == put_entries(3, 1, 100)  # the rest is readable
    s.close()


def test_flipped_byte_in_data_file_is_detected(path: Path) -> None:
    """The same through the file itself: find a stored entry's bytes in data.mdb and flip one."""
    s = opened(path)
    marker = b"\xab" * 64
    s.save(None, [Entry(1, 1, b"x"), Entry(1, 2, marker), Entry(1, 3, b"y")])
    s.close()
    data = bytearray((path / "data.mdb").read_bytes())
    pos = data.find(marker)
    assert pos > 0
    data[pos + 10] ^= 0x01
    (path / "data.mdb").write_bytes(bytes(data))
    s = opened(path)
    assert s.entries(1, 2) == [Entry(1, 1, b"x")]
    with pytest.raises(CorruptionError):
        s.entries(1, 4)
    s.close()


def test_hole_in_log_is_detected_on_open(path: Path) -> None:
    s = opened(path)
    s.save(None, put_entries(1, 5, 10))
    s.close()
    env = raw_env(path)
    with env.begin(write=True) as txn:
        txn.delete(struct.pack(">Q", 3), db=env.open_db(b"log", txn=txn))
    env.close()
    with pytest.raises(CorruptionError):
        opened(path)


def test_garbage_kv_record_is_corruption(path: Path) -> None:
    """A record whose seal matches but whose payload does not decode (written so by a bug,
    not by the disk) is corruption too (a damaged one: tests/store/test_integrity.py)."""
    s = opened(path)
    s.close()
    env = raw_env(path)
    with env.begin(write=True) as txn:
        txn.put(b"k", seal(b"k", b"\xc1not msgpack"), db=env.open_db(b"kv", txn=txn))
    env.close()
    s = opened(path)
    with pytest.raises(CorruptionError):
        s.get(b"k")
    s.close()


# --- a real full disk ---------------------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs. Mounting needs root; if it fails, the test fails (it does not skip)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_refuses_the_write_and_keeps_the_store_usable(tiny_disk: Path) -> None:
    filler = tiny_disk / "filler"
    filler.write_bytes(b"\0" * (512 << 10))
    path = tiny_disk / "node"
    s = opened(path)
    failed = False
    for _ in range(200):
        try:
            start = s.last_index() + 1
            es = put_entries(start, 4, 8_000)
            s.save(HardState(1, NODE, es[-1].index), es)
            s.apply(s.entries(s.applied_index() + 1, s.last_index() + 1))
        except StoreFullError:
            failed = True
            break
    assert failed, "2 MiB filled without StoreFullError"
    applied, last = s.applied_index(), s.last_index()
    assert applied > 0 and last >= applied
    # everything committed before the failure is intact and readable
    assert len(s.entries(1, last + 1)) == last
    assert [k for k, _ in s.scan(b"k", 10_000)] == [b"k%08d" % i for i in range(1, applied + 1)]
    # once space is freed the same store object continues
    filler.unlink()
    if applied < last:
        s.apply(s.entries(applied + 1, last + 1))
    write(s, put_entries(s.last_index() + 1, 2, 100))
    final = s.applied_index()
    assert final == s.last_index() > last
    s.close()
    s = opened(path)
    assert s.applied_index() == final
    assert len(s.scan(b"k", 10_000)) == final
    s.close()
    os.sync()


# --- threads --------------------------------------------------------------------------------


def test_concurrent_readers_and_writers_across_map_growth(path: Path) -> None:
    """The node calls the store from worker threads: reads run while save/apply commit and
    while the map is resized, and see only committed states."""
    s = opened(path, map_size=1 << 16)
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                applied = s.applied_index()
                items = s.scan(b"k", 10_000)
                # apply commits whole batches, and a read never sees a partial one
                assert len(items) % 10 == 0
                assert len(items) >= applied
                s.stats()
                time.sleep(0.001)  # leave the GIL to the writers now and then
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        pending: list[list[Entry]] = []
        saver_done = threading.Event()

        def saver() -> None:
            try:
                for b in range(30):
                    es = put_entries(1 + b * 10, 10, 1_000)
                    s.save(HardState(1, NODE, es[-1].index), es)
                    pending.append(es)
            except BaseException as e:
                errors.append(e)
            finally:
                saver_done.set()

        st = threading.Thread(target=saver)
        st.start()
        applied_batches = 0
        while applied_batches < 30 and not errors:
            if applied_batches < len(pending):
                s.apply(pending[applied_batches])
                applied_batches += 1
            elif saver_done.is_set():
                break
            else:
                time.sleep(0.001)
        st.join()
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors
    assert s.applied_index() == 300
    assert s.stats()["map_size"] > 1 << 16
    s.close()


def test_recent_entries_served_from_memory_match_the_disk(path: Path) -> None:
    """The last saved entries are kept in memory (the leader applies what it just saved):
    whatever mix of memory and disk serves a read, it returns what a restart reads."""
    s = opened(path)
    for start in range(1, 5001, 500):  # more than the in-memory tail holds
        s.save(None, put_entries(start, 500, 40))
    s.save(None, put_entries(4990, 20, 40, term=2))  # replaces a suffix the tail holds
    s.save(None, put_entries(5010, 3, 4000, term=2))
    ranges = [(1, 5013), (900, 1100), (4000, 5013), (4995, 5000), (5010, 5013), (5012, 5013)]
    limits = [None, 0, 100, 10_000]
    before = [s.entries(lo, hi, m) for lo, hi in ranges for m in limits]
    assert s.entries(4989, 4991) == put_entries(4989, 1, 40) + put_entries(4990, 1, 40, term=2)
    s.close()
    s = opened(path)
    assert [s.entries(lo, hi, m) for lo, hi in ranges for m in limits] == before
    s.close()


def _kv_pages(path: Path, batches: list[list[int]]) -> int:
    """Leaf and branch pages of `kv` after applying puts of key numbers `batches` (one apply
    transaction per batch, in the given order within it). Values of 96 bytes: LMDB picks
    its split point differently for somewhat larger records (then even writes in place
    fill pages, and the 65-key case below would not show the half-full pages); with its
    4-byte seal (schema 2) a record of a 100-byte value is just past that line."""
    s = opened(path)
    try:
        index = 0
        for keys in batches:
            entries = []
            for k in keys:
                index += 1
                data = encode_request(Request(b"", 0, Put(b"key/%06d" % k, b"v" * 96)))
                entries.append(Entry(term=1, index=index, data=data))
            write(s, entries)
        with s._env.begin() as txn:
            st = txn.stat(s._dbs.kv)
        return int(st["leaf_pages"] + st["branch_pages"])
    finally:
        s.close()


def test_a_batch_of_keys_in_any_order_fills_pages_like_keys_in_order(tmp_path: Path) -> None:
    """An apply batch writes its kv records in key order: keys that arrive interleaved (as
    from concurrent clients) fill LMDB's pages as well as keys that arrive in order, where
    written one by one in arrival order they would leave pages about half full (LMDB splits
    a full page in half unless the key goes at its end)."""
    n, batch = 2000, 500
    in_order = [list(range(i, i + batch)) for i in range(0, n, batch)]
    # each key late by up to 64 places (64 clients), from a fixed seed
    rng = random.Random(1)
    arrival = sorted(range(n), key=lambda k: k + rng.random() * 64)
    interleaved = [arrival[i : i + batch] for i in range(0, n, batch)]
    one_by_one = [[k] for k in arrival]
    sequential = _kv_pages(tmp_path / "seq", in_order)
    batched = _kv_pages(tmp_path / "batched", interleaved)
    unsorted = _kv_pages(tmp_path / "unsorted", one_by_one)
    assert batched <= sequential * 1.1, (batched, sequential)
    assert unsorted >= sequential * 1.3, (unsorted, sequential)  # what the sort avoids


@pytest.mark.parametrize(
    ("tail", "fills"),
    [
        (1, True),  # a readiness probe, a "z" key: lifted, the batches appended
        (64, True),  # kv.TAIL_MAX
        (65, False),  # more: written in place (each page they pass is split in half)
    ],
)
def test_batches_in_order_before_a_few_larger_keys_fill_pages(
    tmp_path: Path, tail: int, fills: bool
) -> None:
    """Batches of keys in order that all sort before a few stored keys (written first) fill
    pages as if those keys were not there, as long as there are at most TAIL_MAX of them."""
    n, batch = 4000, 500
    first = [[10_000_000 + i for i in range(tail)]]  # "key/1000000x" sorts after "key/00xxxx"
    in_order = [list(range(i, i + batch)) for i in range(0, n, batch)]
    alone = _kv_pages(tmp_path / "alone", in_order)
    after_tail = _kv_pages(tmp_path / "tail", first + in_order)
    tail_pages = _kv_pages(tmp_path / "only", first)
    if fills:
        assert after_tail <= (alone + tail_pages) * 1.1, (after_tail, alone, tail_pages)
    else:
        assert after_tail >= alone * 1.6, (after_tail, alone)


def test_a_backup_copy_adopted_as_a_new_single_node_store(path: Path, tmp_path: Path) -> None:
    s = opened(path)
    try:
        es = put_entries(1, 5, 10, term=3)
        s.save(HardState(3, NODE, 5), es)
        s.apply(es[:4])  # entry 5 is committed, not applied: the copy is as of index 4
        new = tmp_path / "new"
        new.mkdir()
        with (new / "data.mdb").open("wb") as f:
            assert s.write_backup(f) == BackupCopy(index=4, term=3, keys=4, files=0)
    finally:
        s.close()
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "data.mdb").write_bytes((new / "data.mdb").read_bytes())
    with pytest.raises(CorruptionError, match="applied index 4, expected 5"):
        adopt_backup_copy(wrong, index=5, term=3, cluster_id="c2", node_id="n:9")
    adopt_backup_copy(new, index=4, term=3, cluster_id="c2", node_id="n:9")
    with pytest.raises(StoreIdentityError):
        opened(new).close()
    r = open_store(new, cluster_id="c2", node_id="n:9", voters=())
    try:
        assert r.initial_state() == (HardState(3, "", 4), ConfState(("n:9",)))
        assert (r.applied_index(), r.first_index(), r.last_index()) == (4, 5, 4)
        assert r.get(b"k%08d" % 4) is not None and r.get(b"k%08d" % 5) is None
    finally:
        r.close()
