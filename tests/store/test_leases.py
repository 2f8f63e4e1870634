"""Leases in the state machine (rkv.store.lease_apply), on both stores: grant, renew, revoke,
checkpoint and expire (generation and term rules), attachment and detachment by every kind of
write, keys deleted with their lease in one revision (with watch changes), the events the
Lessor is given, snapshots and restarts; and a property test: random lease programs applied
to the LMDB store in random batches and to the twin one at a time agree on results, leases,
attachments and state hash, and the attachment index always matches the records."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rkv.codec import (
    Cas,
    Command,
    Delete,
    LeaseCheckpoint,
    LeaseExpire,
    LeaseGrant,
    LeaseRenew,
    LeaseRevoke,
    Put,
    PutLease,
    Request,
    Txn,
    encode_request,
    unpack,
)
from rkv.raft.types import Entry, HardState
from rkv.store import ApplyResult, LmdbStore, MemoryStore, open_store
from rkv.store.commands import Change
from rkv.store.leases import LeaseEvent, LeaseState
from rkv.txn import (
    KeyValue,
    OpAppend,
    OpDelete,
    OpDeletePrefix,
    OpGet,
    OpIncr,
    OpIncrFloat,
    OpPut,
    TxnResult,
)

from .harness import CLUSTER, NODE, VOTERS, Harness, Store
from .test_state_hash import Step, entries, run, stream_hash, transfer
from .test_store_conformance import one


def entry(s: Store, cmd: Command, term: int = 1) -> ApplyResult:
    """Apply `cmd` (no session) as the next entry, of term `term`."""
    e = Entry(term, s.applied_index() + 1, encode_request(Request(b"", 0, cmd)))
    return s.apply([e])[0]


def ok(r: ApplyResult) -> object:
    assert r.ok, r.error
    return r.value


def lease_of(s: Store, key: bytes) -> int | None:
    rec = s.get_record(key)
    return None if rec is None else rec.lease


def test_grant_assigns_the_index_or_takes_the_id(store: Store) -> None:
    assert ok(one(store, LeaseGrant(0, 5000))) == 1  # index 1
    assert ok(one(store, LeaseGrant(77, 9000))) == 77  # index 2
    r = one(store, LeaseGrant(77, 1))  # index 3
    assert (r.ok, r.error) == (False, "lease already exists")
    assert ok(one(store, LeaseGrant(0, 1))) == 4  # index 4
    assert store.leases() == [  # by id
        LeaseState(1, 5000, 1, 5000, 0),
        LeaseState(4, 1, 4, 1, 0),
        LeaseState(77, 9000, 2, 9000, 0),
    ]
    assert store.lease(77) == LeaseState(77, 9000, 2, 9000, 0)
    assert store.lease(78) is None


def test_assigned_id_colliding_with_a_chosen_one_is_refused(store: Store) -> None:
    assert ok(one(store, LeaseGrant(2, 100))) == 2  # index 1
    r = one(store, LeaseGrant(0, 100))  # index 2: its id would be 2
    assert (r.ok, r.error) == (False, "lease already exists")


def test_too_many_leases(harness: Harness) -> None:
    s = harness.open(max_leases=2)
    assert one(s, LeaseGrant(0, 10)).ok and one(s, LeaseGrant(0, 10)).ok
    r = one(s, LeaseGrant(0, 10))
    assert (r.ok, r.error) == (False, "too many leases")
    s = harness.reopen(s)  # the count is not kept on disk: counted again
    assert one(s, LeaseGrant(0, 10)).error == "too many leases"
    assert ok(one(s, LeaseRevoke(1))) is True
    assert ok(one(s, LeaseRenew(2))) == 10  # a renewal does not count
    assert ok(one(s, LeaseGrant(0, 10))) == 7
    assert one(s, LeaseGrant(0, 10)).error == "too many leases"


def test_renew_sets_gen_and_full_remaining(store: Store) -> None:
    ok(one(store, LeaseGrant(9, 3000)))
    ok(one(store, LeaseCheckpoint(((9, 1, 1000),))))
    assert store.lease(9) == LeaseState(9, 3000, 1, 1000, 0)
    assert ok(one(store, LeaseRenew(9))) == 3000
    assert store.lease(9) == LeaseState(9, 3000, 3, 3000, 0)
    r = one(store, LeaseRenew(10))
    assert (r.ok, r.error) == (False, "lease not found")


def test_checkpoint_only_lowers_and_needs_the_gen(store: Store) -> None:
    ok(one(store, LeaseGrant(9, 3000)))  # gen 1
    ok(one(store, LeaseGrant(8, 3000)))  # gen 2
    for items, want9, want8 in [
        (((9, 1, 2000), (8, 2, 2500)), 2000, 2500),
        (((9, 1, 2500),), 2000, 2500),  # higher: ignored
        (((9, 2, 100),), 2000, 2500),  # another gen: ignored
        (((9, 1, 0), (5, 1, 0)), 0, 2500),  # an unknown lease: ignored
    ]:
        assert one(store, LeaseCheckpoint(items)).ok
        assert (store.lease(9).remaining_ms, store.lease(8).remaining_ms) == (want9, want8)  # type: ignore[union-attr]


def test_expire_needs_the_term_and_the_gen(store: Store) -> None:
    ok(entry(store, LeaseGrant(1, 100), term=2))  # gen 1
    ok(entry(store, PutLease(b"k", b"v", 1), term=2))
    # proposed by the leader of term 2, committed in a term-3 entry: ignored
    assert ok(entry(store, LeaseExpire(2, ((1, 1),)), term=3)) == 0
    assert store.lease(1) is not None and store.get(b"k") == b"v"
    ok(entry(store, LeaseRenew(1), term=3))  # gen 4
    # proposed before the renewal (gen 1): the renewal wins
    assert ok(entry(store, LeaseExpire(3, ((1, 1),)), term=3)) == 0
    assert store.lease(1) is not None and store.get(b"k") == b"v"
    assert ok(entry(store, LeaseExpire(3, ((1, 4), (99, 1))), term=3)) == 1
    assert store.lease(1) is None and store.get(b"k") is None
    assert store.lease_keys(1) == []


def test_writes_attach_and_detach(store: Store) -> None:
    ok(one(store, LeaseGrant(1, 1000)))
    ok(one(store, LeaseGrant(2, 1000)))
    steps: list[tuple[Command, dict[bytes, int | None]]] = [
        (PutLease(b"a", b"1", 1), {b"a": 1}),
        (PutLease(b"b", b"1", 1), {b"a": 1, b"b": 1}),
        (PutLease(b"a", b"2", 2), {b"a": 2, b"b": 1}),  # moved to lease 2
        (Put(b"a", b"3"), {b"a": 0, b"b": 1}),  # a plain put detaches
        (PutLease(b"a", b"4", 1), {b"a": 1, b"b": 1}),
        (Cas(b"a", b"4", b"5"), {b"a": 0, b"b": 1}),  # so does a cas
        (PutLease(b"c", b"1", 2), {b"a": 0, b"b": 1, b"c": 2}),
        (Delete(b"b"), {b"a": 0, b"b": None, b"c": 2}),
        (Txn((), (OpPut(b"a", b"6", 2), OpPut(b"d", b"1", 1))), {b"a": 2, b"c": 2, b"d": 1}),
        (Txn((), (OpIncr(b"x", 1), OpPut(b"c", b"7"))), {b"a": 2, b"c": 0, b"d": 1}),
        (Txn((), (OpIncr(b"a", 1),)), {b"a": 2, b"c": 0, b"d": 1}),  # rmw ops keep it
        (Txn((), (OpAppend(b"a", b"0"), OpIncr(b"c", 1))), {b"a": 2, b"c": 0, b"d": 1}),
        (Txn((), (OpIncrFloat(b"d", b"0.5"),)), {b"a": 2, b"c": 0, b"d": 1}),
        (Txn((), (OpDelete(b"d"),)), {b"a": 2, b"c": 0, b"d": None}),
        (PutLease(b"p/1", b"1", 1), {b"a": 2, b"p/1": 1}),
        (Txn((), (OpDeletePrefix(b"p/"),)), {b"a": 2, b"p/1": None}),
    ]
    for cmd, want in steps:
        assert one(store, cmd).ok, cmd
        assert {k: lease_of(store, k) for k in want} == want, cmd
        for lid in (1, 2):
            assert store.lease_keys(lid) == sorted(
                k for k in {*want, b"b", b"c", b"d"} if lease_of(store, k) == lid
            ), (cmd, lid)
            assert all(lease_of(store, k) == lid for k in store.lease_keys(lid))


def test_a_txn_get_names_the_keys_lease(store: Store) -> None:
    ok(one(store, LeaseGrant(9, 1000)))
    ok(one(store, PutLease(b"a", b"1", 9)))
    ok(one(store, Put(b"b", b"2")))
    raw = ok(one(store, Txn((), (OpGet(b"a"), OpGet(b"b"), OpPut(b"a", b"3"), OpGet(b"a")))))
    assert isinstance(raw, bytes)
    wire = unpack(raw)
    assert [len(r) for r in wire[2] if r is not None] == [5, 4, 4]  # the lease only if attached
    got = TxnResult.from_wire(wire).results
    assert [r.lease for r in got if isinstance(r, KeyValue)] == [9, 0, 0]  # the put detached a


def test_a_missing_lease_writes_nothing(store: Store) -> None:
    ok(one(store, Put(b"a", b"1")))
    r = one(store, PutLease(b"a", b"2", 5))
    assert (r.ok, r.error) == (False, "lease not found")
    assert store.get(b"a") == b"1"
    r = one(store, Txn((), (OpPut(b"b", b"1"), OpPut(b"a", b"2", 5))))
    assert (r.ok, r.error) == (False, "lease not found")
    assert store.get(b"a") == b"1" and store.get(b"b") is None


def test_revoke_deletes_the_keys_in_one_revision(tmp_path: Path) -> None:
    s = open_store(tmp_path / "d", cluster_id="c", node_id="n1", voters=("n1",))
    try:
        s.record_changes = True
        ok(one(s, LeaseGrant(3, 1000)))
        ok(one(s, PutLease(b"x", b"1", 3)))
        ok(one(s, PutLease(b"y", b"2", 3)))
        ok(one(s, Put(b"z", b"3")))
        s.take_changes()
        assert ok(one(s, LeaseRevoke(3))) is True  # index 5
        assert sorted(s.take_changes(), key=lambda c: c.key) == [
            Change(5, "delete", b"x", None, b"1"),
            Change(5, "delete", b"y", None, b"2"),
        ]
        assert s.get(b"x") is None and s.get(b"y") is None and s.get(b"z") == b"3"
        assert ok(one(s, LeaseRevoke(3))) is False
        assert s.take_changes() == []
    finally:
        s.close()


def test_events_for_the_lessor(store: Store) -> None:
    ok(one(store, LeaseGrant(1, 1000)))  # 1
    ok(one(store, LeaseCheckpoint(((1, 1, 400),))))  # 2
    ok(one(store, LeaseCheckpoint(((1, 1, 900),))))  # 3: not lower, no event
    ok(one(store, LeaseRenew(1)))  # 4
    ok(one(store, LeaseRevoke(1)))  # 5
    ok(one(store, LeaseRevoke(1)))  # 6: nothing
    assert not one(store, LeaseRenew(1)).ok
    got = store.take_lease_events()
    assert not got.reset
    assert got.events == [
        LeaseEvent("set", 1, 1, 1000),
        LeaseEvent("checkpoint", 1, 1, 400),
        LeaseEvent("set", 1, 4, 1000),
        LeaseEvent("gone", 1),
    ]
    assert store.take_lease_events().events == []


def test_leases_survive_a_restart_and_a_snapshot(harness: Harness, tmp_path: Path) -> None:
    s = harness.open()
    steps: list[Step] = [
        (b"", 0, LeaseGrant(1, 1000)),
        (b"", 0, PutLease(b"k", b"v", 1)),
        (b"", 0, LeaseCheckpoint(((1, 1, 600),))),
    ]
    run(s, entries(steps), 1)
    s = harness.reopen(s)
    assert s.leases() == [LeaseState(1, 1000, 1, 600, 1)]
    assert s.lease_keys(1) == [b"k"] and lease_of(s, b"k") == 1
    for kind in ("lmdb", "memory"):
        dh = Harness(kind, tmp_path / f"dst-{kind}")
        d = dh.open()
        try:
            ok(one(d, LeaseGrant(5, 10)))  # replaced by the install
            d.take_lease_events()
            snap = transfer(s, d)
            d.install_snapshot(HardState(1, "", snap.meta.index), [], snap)
            assert d.take_lease_events().reset  # the Lessor starts over from leases()
            assert d.leases() == s.leases() and d.lease_keys(1) == [b"k"]
            assert d.state_hash() == s.state_hash() == (3, stream_hash(s))
            ok(one(d, LeaseRevoke(1)))
            assert d.get(b"k") is None
        finally:
            dh.close_all()


# --- property: both stores agree, and the index matches the records --------------------------

KEYS = [b"a", b"b", b"c", b"p/1", b"p/2"]
lids = st.integers(1, 4)
ops = st.one_of(
    st.builds(LeaseGrant, st.integers(0, 4), st.integers(1, 5000)),
    st.builds(LeaseRenew, lids),
    st.builds(LeaseRevoke, lids),
    st.builds(
        LeaseCheckpoint,
        st.lists(st.tuples(lids, st.integers(0, 12), st.integers(0, 5000)), max_size=3).map(tuple),
    ),
    st.builds(
        LeaseExpire,
        st.integers(1, 2),
        st.lists(st.tuples(lids, st.integers(0, 12)), max_size=3).map(tuple),
    ),
    st.builds(PutLease, st.sampled_from(KEYS), st.just(b"v"), lids),
    st.builds(Put, st.sampled_from(KEYS), st.just(b"w")),
    st.builds(Delete, st.sampled_from(KEYS)),
    st.builds(
        lambda k, lid: Txn((), (OpPut(k, b"t", lid),)), st.sampled_from(KEYS), st.integers(0, 4)
    ),
    st.just(Txn((), (OpDeletePrefix(b"p/"),))),
)


def check_index(s: Store) -> None:
    by_records: dict[int, list[bytes]] = {}
    for k in KEYS:
        lid = lease_of(s, k)
        if lid:
            by_records.setdefault(lid, []).append(k)
    leases = {x.id: x for x in s.leases()}
    for lid, keys in by_records.items():
        assert lid in leases  # no key outlives its lease
        assert s.lease_keys(lid) == sorted(keys)
        assert leases[lid].keys == len(keys)
    for lid in leases:
        assert s.lease_keys(lid) == sorted(by_records.get(lid, []))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(ops, st.integers(1, 2)), min_size=1, max_size=40), st.data())
def test_random_lease_programs_agree_on_both_stores(
    program: list[tuple[Command, int]], data: st.DataObject
) -> None:
    es = [
        Entry(term, i + 1, encode_request(Request(b"", 0, cmd)))
        for i, (cmd, term) in enumerate(program)
    ]
    d = tempfile.mkdtemp()
    try:
        a = open_store(Path(d) / "a", cluster_id=CLUSTER, node_id=NODE, voters=VOTERS)
        b = MemoryStore(CLUSTER, NODE, VOTERS)
        try:
            a.save(HardState(2, "", len(es)), es)
            b.save(HardState(2, "", len(es)), es)
            ra: list[ApplyResult] = []
            i = 0
            while i < len(es):
                n = data.draw(st.integers(1, 5))
                ra += a.apply(es[i : i + n])
                i += n
            rb = [b.apply([e])[0] for e in es]
            assert ra == rb
            assert a.leases() == b.leases()
            assert a.take_lease_events().events == b.take_lease_events().events
            assert a.state_hash() == b.state_hash()
            assert stream_hash(a) == stream_hash(b) == a.state_hash()[1]
            for s in (a, b):
                check_index(s)
                assert [s.get_record(k) for k in KEYS] == [a.get_record(k) for k in KEYS]
        finally:
            a.close()
            b.close()
    finally:
        shutil.rmtree(d)


def test_memory_and_lmdb_agree_is_not_vacuous() -> None:
    """The property above compares something: a lease program changes the hash."""
    s = MemoryStore(CLUSTER, NODE, VOTERS)
    before = s.state_hash()[1]
    ok(one(s, LeaseGrant(1, 10)))
    after_grant = s.state_hash()[1]
    ok(one(s, PutLease(b"k", b"v", 1)))
    assert len({before, after_grant, s.state_hash()[1]}) == 3
    assert isinstance(s, MemoryStore) and not isinstance(s, LmdbStore)
