"""Transactions in the state machine (rkv.txn, rkv.store.txn_apply), on both stores: compares,
branches, every op, atomicity when an op fails, one revision per txn, exactly-once through
sessions, the state hash; and a property test: random txns applied to the LMDB store in
random batches and to the in-memory twin one at a time agree on results, records and hash."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rkv.codec import CodecError, Put, Request, decode_request, encode_request, unpack
from rkv.raft.types import Entry
from rkv.store import ApplyResult, Record
from rkv.txn import (
    MAX_OPS,
    NOT_A_FLOAT,
    NOT_AN_INTEGER,
    OVERFLOW,
    Compare,
    KeyValue,
    OpAppend,
    OpDelete,
    OpDeletePrefix,
    OpGet,
    OpIncr,
    OpIncrFloat,
    OpPut,
    Txn,
    TxnError,
    TxnResult,
)

from .harness import Harness, Store
from .test_store_conformance import apply, one


def result(r: ApplyResult) -> TxnResult:
    assert r.ok, r.error
    assert type(r.value) is bytes
    return TxnResult.from_wire(unpack(r.value))


def txn(s: Store, t: Txn, client: bytes = b"", seq: int = 0) -> ApplyResult:
    return one(s, t, client, seq)


def test_compares_choose_the_branch(store: Store) -> None:
    one(store, Put(b"a", b"1"))  # index 1
    one(store, Put(b"a", b"2"))  # index 2: version 2, create 1, mod 2
    for c, holds in [
        (Compare(b"a", "value", "==", b"2"), True),
        (Compare(b"a", "value", "!=", b"2"), False),
        (Compare(b"a", "value", "<", b"3"), True),
        (Compare(b"a", "value", ">", b"3"), False),
        (Compare(b"a", "version", "==", 2), True),
        (Compare(b"a", "create", "==", 1), True),
        (Compare(b"a", "mod", ">", 1), True),
        (Compare(b"a", "mod", "<", 2), False),
        (Compare(b"zz", "version", "==", 0), True),  # absent: version, create, mod 0
        (Compare(b"zz", "create", "==", 0), True),
        (Compare(b"zz", "value", "==", b""), False),  # a value compare on an absent key fails
        (Compare(b"zz", "value", "!=", b"x"), False),
    ]:
        r = result(txn(store, Txn((c,), (OpGet(b"a"),), (OpGet(b"zz"),))))
        assert r.succeeded is holds, c
        assert r.results == ((KeyValue(b"2", 1, 2, 2),) if holds else (None,)), c
    # every compare must hold
    both = (Compare(b"a", "value", "==", b"2"), Compare(b"zz", "version", ">", 0))
    assert not result(txn(store, Txn(both, (OpPut(b"b", b"x"),)))).succeeded
    assert store.get(b"b") is None


def test_ops_one_revision_and_results(store: Store) -> None:
    one(store, Put(b"p/1", b"x"))
    one(store, Put(b"p/2", b"y"))
    one(store, Put(b"n", b"41"))
    t = Txn(
        (),
        (
            OpPut(b"new", b"v"),
            OpGet(b"new"),  # sees the put before it
            OpDeletePrefix(b"p/"),
            OpGet(b"p/1"),
            OpIncr(b"n", 1),
            OpIncrFloat(b"f", b"0.1"),
            OpAppend(b"s", b"ab"),
            OpDelete(b"missing"),
        ),
    )
    r = result(txn(store, t))
    assert r.succeeded and r.revision == 4 == store.applied_index()
    assert r.results == (None, KeyValue(b"v", 4, 4, 1), 2, None, 42, b"0.1", 2, 0)
    assert store.scan(b"", 10) == [(b"f", b"0.1"), (b"n", b"42"), (b"new", b"v"), (b"s", b"ab")]
    assert store.get_record(b"n") == Record(b"42", 3, 4, 2)  # every write at the txn's index
    assert store.get_record(b"new") == Record(b"v", 4, 4, 1)
    r = result(txn(store, Txn((), (OpIncrFloat(b"f", b"0.2"), OpAppend(b"s", b"c")))))
    assert r.results == (b"0.3", 3)  # decimal, as Redis shows it
    assert store.get(b"s") == b"abc"


def test_delete_prefix_sees_earlier_entries_of_the_batch(store: Store) -> None:
    # the LMDB store holds a batch's kv writes back: delete_prefix must see them
    r = apply(
        store,
        encode_request(Request(b"", 0, Put(b"q/1", b"1"))),
        encode_request(Request(b"", 0, Put(b"q/2", b"2"))),
        encode_request(Request(b"", 0, Txn((), (OpDeletePrefix(b"q/"),)))),
        encode_request(Request(b"", 0, Put(b"q/3", b"3"))),
    )
    assert result(r[2]).results == (2,)
    assert store.scan(b"q/", 10) == [(b"q/3", b"3")]


@pytest.mark.parametrize(
    ("start", "op", "error"),
    [
        (b"abc", OpIncr(b"k", 1), NOT_AN_INTEGER),
        (b"01", OpIncr(b"k", 1), NOT_AN_INTEGER),
        (b" 1", OpIncr(b"k", 1), NOT_AN_INTEGER),
        (b"9223372036854775807", OpIncr(b"k", 1), OVERFLOW),
        (b"-9223372036854775808", OpIncr(b"k", -1), OVERFLOW),
        (b"1.5x", OpIncrFloat(b"k", b"1"), NOT_A_FLOAT),
        (b"nan", OpIncrFloat(b"k", b"1"), NOT_A_FLOAT),
    ],
)
def test_failing_op_changes_nothing(store: Store, start: bytes, op: OpIncr, error: str) -> None:
    one(store, Put(b"k", start))
    before = store.state_hash()[1]
    r = txn(store, Txn((), (OpPut(b"other", b"x"), op)), b"c1", 1)
    assert r == ApplyResult(ok=False, error=error)
    assert store.get(b"other") is None and store.get(b"k") == start
    assert store.state_hash()[1] != before  # only the session changed
    assert txn(store, Txn((), (OpPut(b"other", b"x"), op)), b"c1", 1) == r  # exactly once


def test_session_replays_the_first_result(harness: Harness) -> None:
    s = harness.open()
    t = Txn((Compare(b"ctr", "version", "==", 0),), (OpIncr(b"ctr", 5),), (OpIncr(b"ctr", 1),))
    first = result(txn(s, t, b"client", 7))
    assert first == TxnResult(True, 1, (5,))
    again = result(txn(s, t, b"client", 7))  # a retry: not applied again, same revision
    assert again == first and s.get(b"ctr") == b"5"
    s = harness.reopen(s)
    assert result(txn(s, t, b"client", 7)) == first
    assert result(txn(s, t, b"client", 8)) == TxnResult(False, 4, (6,))


def test_txn_bounds_and_wire() -> None:
    with pytest.raises(TxnError, match="written twice"):
        Txn((), (OpPut(b"a", b""), OpIncr(b"a", 1)))
    with pytest.raises(TxnError, match="deleted by prefix"):
        Txn((), (OpPut(b"ab", b""), OpDeletePrefix(b"a")))
    with pytest.raises(TxnError, match=f"at most {MAX_OPS} success ops"):
        Txn((), tuple(OpGet(b"k") for _ in range(MAX_OPS + 1)))
    with pytest.raises(TxnError, match="at most 16777216 bytes"):
        Txn((), (OpPut(b"a", b"x" * (10 << 20)), OpPut(b"b", b"x" * (7 << 20))))
    with pytest.raises(TxnError):
        Compare(b"a", "version", "==", b"1")
    with pytest.raises(TxnError):
        OpDeletePrefix(b"")
    with pytest.raises(TxnError, match="valid float"):
        OpIncrFloat(b"k", b"inf")
    t = Txn(
        (Compare(b"a", "value", "<", b"x"), Compare(b"b", "mod", "!=", 3)),
        (OpPut(b"a", b"1"), OpDelete(b"b"), OpIncrFloat(b"f", b"-1.5e3")),
        (OpGet(b"a"), OpDeletePrefix(b"p"), OpAppend(b"s", b""), OpIncr(b"i", -3)),
    )
    assert decode_request(encode_request(Request(b"c", 1, t))).command == t
    bad = encode_request(Request(b"c", 1, t)).replace(b"-1.5e3", b"-1.5e;")
    with pytest.raises(CodecError, match="bad txn"):
        decode_request(bad)


# --- property: the two stores agree ----------------------------------------------------------

KEYS = [b"a", b"ab", b"b", b"n", b"z"]
keys = st.sampled_from(KEYS)
values = st.sampled_from([b"", b"1", b"-2", b"x", b"10"])
compares = st.one_of(
    st.builds(Compare, keys, st.just("value"), st.sampled_from(["==", "!=", "<", ">"]), values),
    st.builds(
        Compare,
        keys,
        st.sampled_from(["version", "create", "mod"]),
        st.sampled_from(["==", "!=", "<", ">"]),
        st.integers(0, 6),
    ),
)
ops = st.one_of(
    st.builds(OpPut, keys, values),
    st.builds(OpDelete, keys),
    st.builds(OpDeletePrefix, st.sampled_from([b"a", b"b", b"z"])),
    st.builds(OpGet, keys),
    st.builds(OpIncr, keys, st.integers(-3, 3)),
    st.builds(OpIncrFloat, keys, st.sampled_from([b"0.5", b"-1", b"1e2"])),
    st.builds(OpAppend, keys, values),
)


@st.composite
def txns(draw: st.DrawFn) -> Txn | Put:
    if draw(st.booleans()):
        return Put(draw(keys), draw(values))
    branches = []
    for _ in range(2):
        chosen = draw(st.lists(ops, max_size=5))
        try:
            Txn((), tuple(chosen))
        except TxnError:
            chosen = [op for op in chosen if isinstance(op, OpGet)]
        branches.append(tuple(chosen))
    return Txn(tuple(draw(st.lists(compares, max_size=3))), branches[0], branches[1])


def state(s: Store) -> list[tuple[bytes, Record | None]]:
    return [(k, s.get_record(k)) for k in KEYS]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(txns(), st.booleans()), min_size=1, max_size=40))
def test_random_txns_agree_on_both_stores(program: list[tuple[Txn | Put, bool]]) -> None:
    d = tempfile.mkdtemp(prefix="rkv-txnprop-")
    lmdb_h = Harness("lmdb", Path(d) / "node")
    mem_h = Harness("memory", Path("/nonexistent"))
    try:
        batched, single = lmdb_h.open(), mem_h.open()
        got: list[ApplyResult] = []
        want: list[ApplyResult] = []
        batch: list[Entry] = []
        for i, (cmd, ends) in enumerate(program, start=1):
            e = Entry(term=1, index=i, data=encode_request(Request(b"c", i, cmd)))
            want += single.apply([e])
            batch.append(e)
            if ends or i == len(program):
                got += batched.apply(batch)
                batch = []
                assert state(batched) == state(single), i
                assert batched.state_hash() == single.state_hash(), i
        assert got == want
        assert batched.state_hashes() == single.state_hashes()
        batched = lmdb_h.reopen(batched)
        assert state(batched) == state(single)
        assert batched.state_hash() == single.state_hash()
    finally:
        lmdb_h.close_all()
        mem_h.close_all()
        shutil.rmtree(d)


def test_reads_with_their_revision(harness: Harness) -> None:
    s = harness.open()
    assert s.get_revision(b"a") == (None, 0)
    one(s, Put(b"a", b"1"))
    one(s, Put(b"b", b"2"))
    txn(s, Txn((), (OpDelete(b"b"),)))
    assert s.get_revision(b"a") == (b"1", 3)
    assert s.get_revision(b"") == (None, 3)  # no such key can exist
    assert s.scan_revision(b"", 10) == ([(b"a", b"1")], 3)
    s = harness.reopen(s)
    assert s.scan_revision(b"b", 10) == ([], 3)
