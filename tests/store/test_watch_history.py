"""The durable watch history (rkv.store.history) as the LMDB store keeps it: written by the
apply transaction itself (one record per apply that changed something), bounded by count and
by bytes (whole records dropped, oldest first, several at a time), reset by a snapshot
install, kept across a close and reopen, exactly once when entries whose apply was lost are
applied again; the record codec round-trips."""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Callable
from pathlib import Path

import lmdb
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rkv.codec import Delete, Put, Request, encode_request
from rkv.raft.types import Entry, HardState
from rkv.store import LmdbStore, open_store, seal
from rkv.store import history as watchdb
from rkv.store.commands import Change
from rkv.store.errors import CorruptionError, IntegrityError

from .test_store_snapshot import fill, transfer

TOP = 1 << 62


def open_at(path: Path, voters: tuple[str, ...] = ("n1",)) -> LmdbStore:
    return open_store(path, cluster_id="c", node_id="n1", voters=voters)


def entries(s: LmdbStore, *commands: object) -> list[Entry]:
    i = s.last_index()
    return [
        Entry(1, i + n, encode_request(Request(b"", 0, c)))  # type: ignore[arg-type]
        for n, c in enumerate(commands, 1)
    ]


def write(s: LmdbStore, *commands: object, group: bool = True) -> None:
    """Log and apply `commands` as one batch (save_and_apply, as the node does)."""
    es = entries(s, *commands)
    if group:
        s.save_and_apply(HardState(1, "", es[-1].index), es, es)
    else:
        s.save(HardState(1, "", es[-1].index), es)
        s.apply(es)


def everything(s: LmdbStore, after: int = 0) -> list[Change]:
    return list(s.read_history(after, s.applied_index(), TOP).changes)


def records(s: LmdbStore) -> int:
    env: lmdb.Environment = s._env
    with env.begin() as txn:
        return int(txn.stat(s._watch_db)["entries"])


def test_the_apply_writes_one_record_per_transaction(tmp_path: Path) -> None:
    s = open_at(tmp_path / "d")
    write(s, Put(b"a", b"1"), Put(b"b", b"1"), Put(b"a", b"2"))
    write(s, Delete(b"zz"))  # changed nothing: no record
    write(s, Delete(b"a"), Put(b"c", b"3"), group=False)
    assert records(s) == 2
    assert everything(s) == [
        Change(1, "put", b"a", b"1", None),
        Change(2, "put", b"b", b"1", None),
        Change(3, "put", b"a", b"2", b"1"),
        Change(5, "delete", b"a", None, b"2"),
        Change(6, "put", b"c", b"3", None),
    ]
    assert s.history_first() == 1
    # from the middle of a record, up to a revision, bounded
    assert [c.revision for c in everything(s, 2)] == [3, 5, 6]
    got = s.read_history(1, 5, TOP)
    assert ([c.revision for c in got.changes], got.through) == ([2, 3, 5], 5)
    got = s.read_history(0, 6, 1)  # stops after the first record
    assert ([c.revision for c in got.changes], got.through) == ([1, 2, 3], 3)
    s.close()


def test_it_survives_a_close_and_reopen(tmp_path: Path) -> None:
    s = open_at(tmp_path / "d")
    for i in range(20):
        write(s, Put(b"k%d" % (i % 3), b"v%d" % i))
    before = everything(s)
    s.close()
    s = open_at(tmp_path / "d", ())
    assert s.history_first() == 1
    assert everything(s) == before
    write(s, Put(b"k0", b"after"))
    assert everything(s, 20) == [Change(21, "put", b"k0", b"after", b"v18")]
    s.close()


@pytest.mark.parametrize(
    ("bounds", "value_len", "most_records"),
    [
        (watchdb.Bounds(changes=100), 1, 100 + 64 + 1),  # by count: slack of max(64, 1/8)
        (watchdb.Bounds(changes=10**6, bytes=200_000), 1000, 200_000 // 2100 + 1),  # by bytes
    ],
    ids=["count", "bytes"],
)
def test_trimmed_to_the_bounds_whole_records_oldest_first_rarely(
    tmp_path: Path, bounds: watchdb.Bounds, value_len: int, most_records: int
) -> None:
    s = open_at(tmp_path / "d")
    s.history_bounds = bounds
    counts = []
    for _ in range(600):  # each a put of k over its previous value
        write(s, Put(b"k", b"x" * value_len))
        counts.append(records(s))
    assert max(counts) <= most_records
    trims = sum(1 for a, b in itertools.pairwise(counts) if b < a)
    assert 1 <= trims <= 600 // 8  # several records at a time, not one per apply
    first = s.history_first()
    assert first > 1
    # what is held is whole from `first` on; below it: nothing, and the read says so
    assert [c.revision for c in everything(s, first - 1)] == list(range(first, 601))
    below = s.read_history(first - 2, 600, TOP)
    assert (below.first, below.changes) == (first, ())
    s.close()
    assert open_at(tmp_path / "d", ()).history_first() == first  # the meta record


def test_a_snapshot_install_clears_it_and_records_the_reset_point(tmp_path: Path) -> None:
    src = open_store(tmp_path / "src", cluster_id="c", node_id="n1", voters=("n1", "n2"))
    dst = open_store(tmp_path / "dst", cluster_id="c", node_id="n2", voters=("n1", "n2"))
    fill(src, 30)
    fill(dst, 5, tag=b"old")  # history of its own, from before
    assert everything(dst)
    snap = transfer(src, dst)
    dst.install_snapshot(HardState(2, "", snap.meta.index), [], snap)
    index = snap.meta.index
    assert dst.history_first() == index + 1
    assert everything(dst, index) == [] and records(dst) == 0
    got = dst.read_history(0, index, TOP)
    assert (got.first, got.changes) == (index + 1, ())
    # the next apply is held from the reset point on, and all survives a reopen
    e = Entry(2, index + 1, encode_request(Request(b"", 0, Put(b"new", b"1"))))
    dst.save_and_apply(HardState(2, "", index + 1), [e], [e])
    dst.close()
    dst = open_store(tmp_path / "dst", cluster_id="c", node_id="n2", voters=())
    assert dst.history_first() == index + 1
    assert everything(dst, index) == [Change(index + 1, "put", b"new", b"1", None)]
    src.close()
    dst.close()


def test_a_lost_apply_applied_again_is_recorded_once(tmp_path: Path) -> None:
    """The apply transaction is not durable by itself: a power loss may undo it (and its
    history record with it), and the restart applies the entries again, maybe batched
    otherwise. The data dir copied before the apply stands for the disk after that loss."""
    s = open_at(tmp_path / "d")
    write(s, Put(b"a", b"0"))
    es = entries(s, *(Put(b"a", b"%d" % i) for i in range(1, 7)))
    s.save(HardState(1, "", es[-1].index), es)
    s.close()
    shutil.copytree(tmp_path / "d", tmp_path / "lost")
    s = open_at(tmp_path / "d", ())
    s.apply(es)  # one transaction, then lost
    want = everything(s)
    s.close()
    s = open_at(tmp_path / "lost", ())
    assert s.applied_index() == 1 and [c.revision for c in everything(s)] == [1]
    s.apply(es[:2])  # applied again, in two batches
    s.apply(es[2:])
    assert everything(s) == want
    assert [c.revision for c in want] == list(range(1, 8))
    s.close()


def _flip_last_bit(raw: bytes) -> bytes:
    return raw[:-1] + bytes([raw[-1] ^ 1])


def _sealed_garbage(raw: bytes) -> bytes:
    # a record whose seal matches but whose payload is not a batch (a writer's bug, not rot)
    return seal.seal((1).to_bytes(8, "big"), b"\x00\x00\x00\x01" + b"\x00" * 8 + b"\xc1")


@pytest.mark.parametrize(
    ("damage", "error", "match"),
    [
        (_flip_last_bit, IntegrityError, "watch history record 1 failed its checksum"),
        (_sealed_garbage, CorruptionError, "watch history"),
    ],
)
def test_a_damaged_record_is_never_served(
    tmp_path: Path, damage: Callable[[bytes], bytes], error: type[Exception], match: str
) -> None:
    s = open_at(tmp_path / "d")
    write(s, Put(b"a", b"value-1"))
    key = (1).to_bytes(8, "big")
    with s._env.begin(write=True) as txn:
        raw = txn.get(key, db=s._watch_db)
        assert raw is not None and b"value-1" in raw
        txn.put(key, damage(raw), db=s._watch_db)
    with pytest.raises(error, match=match):
        everything(s)
    s.close()


changes_st = st.lists(
    st.tuples(
        st.integers(0, 3),
        st.sampled_from(watchdb.KINDS),
        st.binary(min_size=1, max_size=20),
        st.none() | st.binary(max_size=40),
        st.none() | st.binary(max_size=40),
    ),
    min_size=1,
    max_size=30,
)


@given(st.integers(1, 1 << 40), changes_st)
def test_the_record_codec_round_trips(
    first: int, raw: list[tuple[int, str, bytes, bytes | None, bytes | None]]
) -> None:
    rev, batch = first, []
    for n, (step, kind, key, value, prev) in enumerate(raw):
        rev += step if n else 0  # revisions in order, the first at `first`
        batch.append(Change(rev, kind, key, value, prev))
    encoded = watchdb.encode_batch(batch)
    n, size, span = watchdb.decode_header(encoded)
    assert (n, size, span) == (len(batch), sum(map(watchdb.held_size, batch)), rev - first)
    assert watchdb.decode_batch(first, encoded) == batch
