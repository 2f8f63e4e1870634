"""Both stores record the same changes for watchers (take_changes): the same entries applied
to the LMDB store and to the memory twin give identical Change lists, in the same order,
because the recording lives in the shared apply logic (rkv.store.changes). Also: a snapshot
install records one "reset" on both, and recording is off by default on both."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from rkv.codec import (
    Cas,
    Command,
    Delete,
    FileChunk,
    FileCommit,
    FileDelete,
    LeaseExpire,
    LeaseGrant,
    LeaseRevoke,
    Put,
    PutLease,
    Request,
    encode_request,
)
from rkv.raft.types import Entry, HardState
from rkv.store.commands import Change
from rkv.txn import Compare, OpAppend, OpDelete, OpDeletePrefix, OpGet, OpIncr, OpPut, Txn

from .harness import Harness, Store
from .test_store_snapshot import fill, transfer

DATA = b"file bytes"
SHA = hashlib.sha256(DATA).digest()
DATA2 = b"other bytes!"
SHA2 = hashlib.sha256(DATA2).digest()

# Each scenario: batches of (command, term) applied in order (a batch is one apply call).
Batch = list[tuple[Command, int]]
SCENARIOS: dict[str, list[Batch]] = {
    "put, overwrite, delete": [
        [(Put(b"a", b"1"), 1)],
        [(Put(b"a", b"2"), 1), (Put(b"b", b"x"), 1), (Delete(b"a"), 1)],
        [(Delete(b"nothing"), 1)],
    ],
    "cas and failed cas": [
        [(Put(b"a", b"1"), 1), (Cas(b"a", b"no", b"2"), 1), (Cas(b"a", b"1", b"3"), 1)],
    ],
    "txn: delete prefix, incr, append, else branch": [
        [(Put(b"p/1", b"x"), 1), (Put(b"p/2", b"y"), 1), (Put(b"s", b"ab"), 1)],
        [
            (
                Txn(
                    (Compare(b"p/1", "value", "==", b"x"),),
                    (OpDeletePrefix(b"p/"), OpIncr(b"n", 5), OpAppend(b"s", b"c"), OpGet(b"n")),
                    (OpPut(b"else", b"ran"),),
                ),
                1,
            )
        ],
        [(Txn((Compare(b"n", "value", "==", b"0"),), (), (OpPut(b"n", b"6"), OpDelete(b"s"))), 1)],
    ],
    "lease revoke and expiry delete attached keys": [
        [(LeaseGrant(1, 100), 2), (PutLease(b"k1", b"v", 1), 2), (PutLease(b"k2", b"w", 1), 2)],
        [(LeaseGrant(2, 100), 2), (PutLease(b"k3", b"z", 2), 2), (Put(b"k1", b"free"), 2)],
        [(LeaseExpire(2, ((1, 1),)), 2)],  # k2 goes with it; k1 was detached by the put
        [(LeaseRevoke(2), 2)],
    ],
    "file commit, replace, delete": [
        [(FileChunk(b"f", b"u1", 0, DATA), 1), (FileCommit(b"f", b"u1", len(DATA), 1, SHA), 1)],
        [(FileChunk(b"f", b"u2", 0, DATA2), 1)],
        [(FileCommit(b"f", b"u2", len(DATA2), 1, SHA2), 1), (FileDelete(b"f"), 1)],
    ],
}


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Store, Store]]:
    hl, hm = Harness("lmdb", tmp_path / "l"), Harness("memory", tmp_path / "m")
    lm, mem = hl.open(), hm.open()
    lm.record_changes = mem.record_changes = True
    yield lm, mem
    hl.close_all()
    hm.close_all()


def apply_batch(s: Store, batch: Batch) -> None:
    i = s.applied_index()
    entries = [
        Entry(term, i + n, encode_request(Request(b"", 0, cmd)))
        for n, (cmd, term) in enumerate(batch, 1)
    ]
    s.apply(entries)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_both_stores_record_the_same_changes(pair: tuple[Store, Store], name: str) -> None:
    lm, mem = pair
    recorded = 0
    for batch in SCENARIOS[name]:
        apply_batch(lm, batch)
        apply_batch(mem, batch)
        got = lm.take_changes()
        assert mem.take_changes() == got, (name, batch)
        recorded += len(got)
    assert recorded > 0  # the scenario changed something: the comparison has content
    assert lm.get_record(b"nothing") is None


def test_lease_expiry_records_the_attached_keys(pair: tuple[Store, Store]) -> None:
    """One concrete case spelled out, so equality cannot hide two identical omissions."""
    lm, mem = pair
    for s in pair:
        apply_batch(s, SCENARIOS["lease revoke and expiry delete attached keys"][0])
        s.take_changes()
        apply_batch(s, [(LeaseExpire(2, ((1, 1),)), 2)])
    want = [
        Change(4, "delete", b"k1", None, b"v"),
        Change(4, "delete", b"k2", None, b"w"),
    ]
    assert sorted(lm.take_changes(), key=lambda c: c.key) == want
    assert sorted(mem.take_changes(), key=lambda c: c.key) == want


def test_an_install_records_a_reset(pair: tuple[Store, Store], tmp_path: Path) -> None:
    src_h = Harness("memory", tmp_path / "src")
    src = src_h.open()
    fill(src, 5)
    top = src.applied_index()
    for dst in pair:
        apply_batch(dst, [(Put(b"old", b"x"), 1)])
        dst.take_changes()
        snap = transfer(src, dst)
        dst.install_snapshot(HardState(2, "", snap.meta.index), [], snap)
        assert dst.take_changes() == [Change(top, "reset", b"")]
    src_h.close_all()


def test_off_by_default(tmp_path: Path) -> None:
    for kind in ("lmdb", "memory"):
        h = Harness(kind, tmp_path / kind)
        s = h.open()
        apply_batch(s, [(Put(b"a", b"1"), 1)])
        assert s.take_changes() == []
        h.close_all()
