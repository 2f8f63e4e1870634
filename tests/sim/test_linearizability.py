"""Tests for rkv.sim.linearizability: hand-made anomalies, accepted concurrency, properties.

The strongest test is the comparison with a brute-force checker (every permutation) on
small random histories, which pins the search and its prunings in both directions.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Hashable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rkv.sim.linearizability import (
    CheckResult,
    History,
    Operation,
    OpKind,
    Verdict,
    check_history,
)

K = b"k"


def put(c: int, v: bytes, call: float, ret: float | None, key: bytes = K) -> Operation:
    return Operation(c, OpKind.PUT, key, v, None, call, ret)


def get(c: int, out: bytes | None, call: float, ret: float | None, key: bytes = K) -> Operation:
    return Operation(c, OpKind.GET, key, None, out, call, ret)


def delete(c: int, existed: bool, call: float, ret: float | None, key: bytes = K) -> Operation:
    return Operation(c, OpKind.DELETE, key, None, existed, call, ret)


def cas(
    c: int,
    expected: bytes | None,
    new: bytes,
    swapped: bool,
    call: float,
    ret: float | None,
    key: bytes = K,
) -> Operation:
    return Operation(c, OpKind.CAS, key, (expected, new), swapped, call, ret)


# ---------------------------------------------------------------- a sequential oracle


def apply(state: Any, op: Operation) -> tuple[bool, Any]:
    """The sequential model, written independently of the checker's inlined one."""
    if op.kind is OpKind.PUT:
        return True, op.input
    if op.kind is OpKind.GET:
        return op.unknown or op.output == state, state
    if op.kind is OpKind.DELETE:
        return op.unknown or op.output == (state is not None), None
    expected, new = op.input
    swapped = state == expected
    return op.unknown or op.output == swapped, new if swapped else state


def valid_sequence(seq: list[Operation], initial: Any = None) -> bool:
    state = initial
    for op in seq:
        ok, state = apply(state, op)
        if not ok:
            return False
    return True


def respects_real_time(seq: list[Operation]) -> bool:
    """No op appears after one that was invoked strictly after it returned."""
    for i, a in enumerate(seq):
        for b in seq[i + 1 :]:
            if b.return_time is not None and b.return_time < a.call_time:
                return False
    return True


def brute_force(ops: list[Operation]) -> bool:
    """Linearizable iff some subset containing every known-outcome op has a valid order."""
    by_key: dict[Hashable, list[Operation]] = {}
    for op in ops:
        by_key.setdefault(op.key, []).append(op)
    for key_ops in by_key.values():
        known = [op for op in key_ops if not op.unknown]
        optional = [op for op in key_ops if op.unknown]
        found = False
        for r in range(len(optional) + 1):
            for extra in itertools.combinations(optional, r):
                for perm in itertools.permutations(known + list(extra)):
                    seq = list(perm)
                    if respects_real_time(seq) and valid_sequence(seq):
                        found = True
                        break
                if found:
                    break
            if found:
                break
        if not found:
            return False
    return True


def assert_witness(result: CheckResult, ops: list[Operation]) -> None:
    """An OK verdict must come with a valid order containing every known-outcome op."""
    assert result.ok, result.describe()
    for key, kr in result.keys.items():
        seq = list(kr.linearization)
        assert valid_sequence(seq), f"witness for {key!r} is not a valid sequence"
        assert respects_real_time(seq), f"witness for {key!r} breaks real-time order"
        known = {id(op) for op in ops if op.key == key and not op.unknown}
        assert known <= {id(op) for op in seq}


# ---------------------------------------------------------------- hand-made tables

ILLEGAL: list[tuple[str, list[Operation]]] = [
    (
        "stale read after an acknowledged write",
        [put(1, b"a", 0, 10), put(1, b"b", 20, 30), get(2, b"a", 40, 50)],
    ),
    (
        "stale read concurrent with nothing, after write returned",
        [
            put(1, b"a", 0, 10),
            put(2, b"b", 5, 15),
            get(3, b"a", 16, 17),
            get(3, b"b", 18, 19),
            get(3, b"a", 20, 21),
        ],
    ),
    (
        "lost write: acknowledged write never visible",
        [put(1, b"a", 0, 10), put(2, b"b", 20, 30), get(3, b"a", 40, 50), get(3, b"a", 60, 70)],
    ),
    ("read of a value never written", [put(1, b"a", 0, 10), get(2, b"z", 0, 20)]),
    ("read of a value before anything was written", [get(2, b"a", 0, 5), put(1, b"a", 10, 20)]),
    ("read of absent after a write", [put(1, b"a", 0, 10), get(2, None, 11, 12)]),
    (
        "two concurrent cas from the same expected both succeed",
        [put(1, b"a", 0, 10), cas(2, b"a", b"b", True, 20, 30), cas(3, b"a", b"c", True, 20, 30)],
    ),
    (
        "cas succeeds although the current value differs",
        [put(1, b"a", 0, 10), cas(2, b"x", b"b", True, 20, 30)],
    ),
    (
        "cas expecting absent succeeds on a present key",
        [put(1, b"a", 0, 10), cas(2, None, b"b", True, 20, 30)],
    ),
    (
        "cas fails although the value matched",
        [put(1, b"a", 0, 10), cas(2, b"a", b"b", False, 20, 30)],
    ),
    (
        "cas result invisible to a later read",
        [put(1, b"a", 0, 10), cas(2, b"a", b"b", True, 20, 30), get(3, b"a", 40, 50)],
    ),
    ("delete says existed on an absent key", [delete(1, True, 0, 10)]),
    (
        "delete says existed twice",
        [put(1, b"a", 0, 1), delete(1, True, 2, 10), delete(2, True, 2, 10)],
    ),
    ("delete says absent on a present key", [put(1, b"a", 0, 10), delete(2, False, 20, 30)]),
    (
        "read sees a deleted value",
        [put(1, b"a", 0, 10), delete(2, True, 20, 30), get(3, b"a", 40, 50)],
    ),
    (
        "unknown write observed, but before it was invoked",
        [get(1, b"a", 0, 10), put(2, b"a", 20, None)],
    ),
    (
        "unknown write seen, then unseen without another write",
        [put(1, b"a", 0, 10), put(2, b"b", 20, None), get(3, b"b", 30, 40), get(3, b"a", 50, 60)],
    ),
    (
        "reads on one client go back in time",
        [
            put(1, b"a", 0, 100),
            put(2, b"b", 0, 100),
            get(3, b"a", 10, 20),
            get(3, b"b", 30, 40),
            get(3, b"a", 50, 60),
        ],
    ),
    (
        "anomaly on one key among healthy keys",
        [
            put(1, b"a", 0, 10, key=b"x"),
            get(2, b"a", 20, 30, key=b"x"),
            put(1, b"a", 0, 10, key=b"y"),
            get(2, None, 20, 30, key=b"y"),
        ],
    ),
]

LEGAL: list[tuple[str, list[Operation]]] = [
    ("empty history", []),
    ("read of an absent key", [get(1, None, 0, 10)]),
    (
        "concurrent writes read in one order",
        [put(1, b"a", 0, 10), put(2, b"b", 0, 10), get(3, b"a", 20, 30)],
    ),
    (
        "concurrent writes read in the other order",
        [put(1, b"a", 0, 10), put(2, b"b", 0, 10), get(3, b"b", 20, 30)],
    ),
    (
        "unknown write that later becomes visible",
        [put(1, b"a", 0, 10), put(2, b"b", 20, None), get(3, b"a", 30, 40), get(3, b"b", 50, 60)],
    ),
    (
        "unknown write that never becomes visible",
        [put(1, b"a", 0, 10), put(2, b"b", 20, None), get(3, b"a", 30, 40), get(3, b"a", 500, 600)],
    ),
    (
        "unknown cas that never happened, with a delete around",
        [
            put(1, b"a", 0, 10),
            cas(2, b"a", b"b", False, 20, None),
            delete(3, True, 30, 40),
            get(3, None, 50, 60),
        ],
    ),
    (
        "unknown delete that happened",
        [put(1, b"a", 0, 10), delete(2, False, 20, None), get(3, None, 30, 40)],
    ),
    (
        "overlapping reads see old then new around a concurrent write",
        [put(1, b"a", 0, 10), put(2, b"b", 20, 60), get(3, b"a", 25, 35), get(4, b"b", 30, 40)],
    ),
    (
        "overlapping reads see new then old (read linearized before the write)",
        [put(1, b"a", 0, 10), put(2, b"b", 20, 60), get(3, b"b", 25, 35), get(4, b"a", 22, 40)],
    ),
    ("touching intervals are concurrent", [put(1, b"a", 0, 10), get(2, None, 10, 20)]),
    (
        "cas chain",
        [
            cas(1, None, b"a", True, 0, 10),
            cas(2, b"a", b"b", True, 20, 30),
            cas(3, b"a", b"c", False, 20, 30),
            get(4, b"b", 40, 50),
        ],
    ),
    (
        "concurrent cas, one wins",
        [put(1, b"a", 0, 10), cas(2, b"a", b"b", True, 20, 30), cas(3, b"a", b"c", False, 20, 30)],
    ),
    (
        "delete then recreate",
        [
            put(1, b"a", 0, 1),
            delete(1, True, 2, 3),
            delete(2, False, 4, 5),
            put(1, b"a", 6, 7),
            get(2, b"a", 8, 9),
        ],
    ),
    (
        "same value written twice, both unknown",
        [
            put(1, b"a", 0, None),
            put(2, b"a", 5, None),
            get(3, b"a", 10, 20),
            delete(3, True, 30, 40),
            get(3, None, 50, 60),
        ],
    ),
    (
        "float times and infinity",
        [put(1, b"a", 0.5, math.inf), get(2, b"a", 1.0, 1.5)],
    ),
]


@pytest.mark.parametrize(("name", "ops"), ILLEGAL, ids=[n for n, _ in ILLEGAL])
def test_rejects_anomaly(name: str, ops: list[Operation]) -> None:
    result = check_history(ops)
    assert result.verdict is Verdict.ILLEGAL
    assert not result.ok
    assert brute_force(ops) is False  # the table itself is right
    text = result.describe()
    assert "not linearizable" in text
    bad = result.failures[0]
    assert bad.stuck is not None
    assert repr(bad.key) in text
    assert bad.stuck.describe() in text


@pytest.mark.parametrize(("name", "ops"), LEGAL, ids=[n for n, _ in LEGAL])
def test_accepts_linearizable(name: str, ops: list[Operation]) -> None:
    result = check_history(ops)
    assert brute_force(ops) is True
    assert_witness(result, ops)


def test_only_the_broken_key_fails() -> None:
    ops = ILLEGAL[-1][1]
    result = check_history(ops)
    assert result.keys[b"x"].ok
    assert result.keys[b"y"].verdict is Verdict.ILLEGAL
    assert [r.key for r in result.failures] == [b"y"]


def test_explanation_names_the_ops_around_the_failure() -> None:
    ops = [put(1, b"a", 0, 10), put(2, b"b", 20, 30), get(3, b"a", 40, 50)]
    result = check_history(ops)
    kr = result.keys[K]
    assert kr.stuck is ops[2]
    assert kr.state == b"b"
    assert list(kr.linearization) == ops[:2]
    text = result.describe()
    assert "[40, 50]" in text and "b'b'" in text


def test_initial_values() -> None:
    ops = [get(1, b"a", 0, 10)]
    assert not check_history(ops).ok
    assert check_history(ops, initial={K: b"a"}).ok


def test_unknown_reads_are_dropped() -> None:
    ops = [put(1, b"a", 0, 10), get(2, b"never", 20, None)]
    result = check_history(ops)
    assert result.ok
    assert result.keys[K].operations == 1


# ---------------------------------------------------------------- budget


def hard_illegal_history(width: int) -> list[Operation]:
    """Many concurrent writes of one value, then a read nobody wrote: every subset of the
    writes gets explored before the search gives up."""
    ops = [put(c, b"v%d" % c, 0, 100) for c in range(width)]
    ops += [get(100 + c, b"v%d" % c, 0, 100) for c in range(width)]
    ops.append(get(999, b"nobody", 50, 200))
    return ops


def test_step_budget_gives_unknown_never_ok() -> None:
    ops = hard_illegal_history(8)
    limited = check_history(ops, max_steps=50)
    assert limited.verdict is Verdict.UNKNOWN
    assert limited.unknown and not limited.ok
    assert "budget" in limited.describe()
    assert check_history(ops).verdict is Verdict.ILLEGAL


def test_timeout_budget_gives_unknown() -> None:
    result = check_history(hard_illegal_history(8), timeout=0.0)
    assert result.verdict is Verdict.UNKNOWN


def test_illegal_key_wins_over_unknown_key() -> None:
    ops = [*hard_illegal_history(8), get(1, b"z", 0, 1, key=b"other")]
    result = check_history(ops, max_steps=50)
    assert result.verdict is Verdict.ILLEGAL
    assert result.keys[b"other"].verdict is Verdict.ILLEGAL


# ---------------------------------------------------------------- History recorder


def test_history_logical_clock() -> None:
    h = History()
    w = h.invoke(1, "put", K, b"a")
    r = h.invoke(2, OpKind.GET, K)
    h.complete(w)
    h.complete(r, b"a")
    r2 = h.invoke(2, "get", K)
    h.complete(r2, None)  # stale: the put had returned before this read was invoked
    result = h.check()
    assert result.verdict is Verdict.ILLEGAL
    assert result.keys[K].stuck is not None and result.keys[K].stuck.id == r2


def test_history_fail_drops_and_timeout_is_unknown() -> None:
    h = History()
    w1 = h.invoke(1, "put", K, b"a", time=0)
    h.fail(w1)
    w2 = h.invoke(2, "put", K, b"b", time=1)
    h.timeout(w2)
    c = h.invoke(3, "cas", K, [b"b", b"c"], time=2)  # a list is accepted for cas
    h.complete(c, True, time=5)
    pending = h.invoke(4, "delete", K, time=6)  # never completed: unknown
    r = h.invoke(5, "get", K, time=7)
    h.complete(r, b"c", time=8)
    ops = h.operations()
    assert [op.id for op in ops] == [w2, c, pending, r]
    assert ops[0].unknown and ops[2].unknown and not ops[1].unknown
    assert ops[1].input == (b"b", b"c")
    assert h.check().ok
    assert len(h) == 5


def test_history_failed_write_must_not_be_visible() -> None:
    h = History()
    w = h.invoke(1, "put", K, b"a")
    h.fail(w)
    r = h.invoke(2, "get", K)
    h.complete(r, b"a")
    assert not h.check().ok


def test_history_misuse() -> None:
    h = History()
    op = h.invoke(1, "put", K, b"a")
    h.complete(op)
    with pytest.raises(ValueError, match="already"):
        h.complete(op)
    with pytest.raises(ValueError, match="already"):
        h.timeout(op)
    with pytest.raises(ValueError, match="every"):
        h.invoke(1, "get", K, time=3.0)
    with pytest.raises(ValueError):
        h.invoke(1, "scan", K)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": OpKind.PUT, "input": None}, "put of None"),
        ({"kind": OpKind.CAS, "input": b"x"}, "tuple"),
        ({"kind": OpKind.CAS, "input": (b"x", None)}, "None"),
        ({"call_time": 5, "return_time": 4}, "return_time"),
        ({"call_time": math.nan}, "NaN"),
    ],
)
def test_operation_validation(kwargs: dict[str, Any], match: str) -> None:
    base: dict[str, Any] = {
        "client": 1,
        "kind": OpKind.PUT,
        "key": K,
        "input": b"v",
        "output": None,
        "call_time": 0,
        "return_time": 1,
    }
    with pytest.raises(ValueError, match=match):
        Operation(**(base | kwargs))


# ---------------------------------------------------------------- generated histories

KINDS = ("put", "get", "delete", "cas")


def generate(
    rng: random.Random,
    n_ops: int,
    n_keys: int,
    clients: int,
    *,
    p_unknown: float = 0.0,
    values: int = 4,
    max_gap: int = 10,
    kinds: tuple[str, ...] = KINDS,
) -> list[Operation]:
    """A history from a real sequential execution: each client runs ops one after another;
    each op takes effect at a point inside its interval, in the order of those points.
    Unknown-outcome ops take effect or not, at random."""
    planned = []
    for c in range(clients):
        now = rng.randint(0, max_gap)
        for _ in range(n_ops // clients):
            call = now
            at = call + rng.randint(0, max_gap)
            ret = at + rng.randint(0, max_gap)
            planned.append((at, c, call, ret))
            now = ret + rng.randint(0, 3)
    planned.sort()
    store: dict[bytes, bytes] = {}
    ops = []
    for _at, c, call, ret in planned:
        key = b"k%d" % rng.randrange(n_keys)
        kind = rng.choice(kinds)
        v1 = b"%d" % rng.randrange(values)
        v2 = b"%d" % rng.randrange(values)
        unknown = rng.random() < p_unknown
        inp: Any = {
            "put": v1,
            "get": None,
            "delete": None,
            "cas": (v1 if v1 != b"0" else None, v2),
        }[kind]
        if unknown and rng.random() < 0.5:  # never took effect
            ops.append(Operation(c, kind, key, inp, None, call, None))
            continue
        cur = store.get(key)
        out: Any = None
        if kind == "put":
            store[key] = v1
        elif kind == "get":
            out = cur
        elif kind == "delete":
            out = cur is not None
            store.pop(key, None)
        else:
            out = cur == inp[0]
            if out:
                store[key] = inp[1]
        ops.append(Operation(c, kind, key, inp, out, call, None if unknown else ret))
    rng.shuffle(ops)
    return ops


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(
    seed=st.integers(0, 2**32),
    n_ops=st.integers(1, 60),
    clients=st.integers(1, 6),
    n_keys=st.integers(1, 3),
    p_unknown=st.sampled_from([0.0, 0.1, 0.3]),
    max_gap=st.sampled_from([0, 3, 10]),
)
def test_executed_histories_are_accepted(
    seed: int, n_ops: int, clients: int, n_keys: int, p_unknown: float, max_gap: int
) -> None:
    rng = random.Random(seed)
    ops = generate(rng, n_ops, n_keys, clients, p_unknown=p_unknown, max_gap=max_gap)
    assert_witness(check_history(ops), ops)


@SETTINGS
@given(
    seed=st.integers(0, 2**32),
    n_ops=st.integers(2, 60),
    clients=st.integers(1, 6),
    p_unknown=st.sampled_from([0.0, 0.1, 0.3]),
    data=st.data(),
)
def test_a_read_of_a_value_never_written_is_rejected(
    seed: int, n_ops: int, clients: int, p_unknown: float, data: st.DataObject
) -> None:
    rng = random.Random(seed)
    ops = generate(rng, n_ops, 2, clients, p_unknown=p_unknown)
    reads = [i for i, op in enumerate(ops) if op.kind is OpKind.GET and not op.unknown]
    if not reads:
        ops.append(get(99, None, 0, 1_000_000))
        reads = [len(ops) - 1]
    i = data.draw(st.sampled_from(reads))
    victim = ops[i]
    ops[i] = Operation(
        victim.client,
        victim.kind,
        victim.key,
        None,
        b"never written",
        victim.call_time,
        victim.return_time,
    )
    result = check_history(ops)
    assert result.verdict is Verdict.ILLEGAL
    assert result.keys[victim.key].verdict is Verdict.ILLEGAL


def small_history(draw: st.DrawFn) -> list[Operation]:
    n = draw(st.integers(1, 6))
    ops = []
    for c in range(n):
        kind = draw(st.sampled_from(KINDS))
        call = draw(st.integers(0, 8))
        ret = draw(st.one_of(st.none(), st.integers(call, 10)))
        val = st.sampled_from([b"a", b"b"])
        maybe = st.one_of(st.none(), val)
        if kind == "put":
            inp, out = draw(val), None
        elif kind == "get":
            inp, out = None, draw(maybe)
        elif kind == "delete":
            inp, out = None, draw(st.booleans())
        else:
            inp, out = (draw(maybe), draw(val)), draw(st.booleans())
        ops.append(Operation(c, kind, K, inp, out, call, ret))
    return ops


@settings(max_examples=200, deadline=None)
@given(st.composite(small_history)())
def test_agrees_with_brute_force(ops: list[Operation]) -> None:
    result = check_history(ops)
    assert result.ok == brute_force(ops), result.describe()
    if result.ok:
        assert_witness(result, ops)


def reference_search(ops: list[Operation]) -> bool:
    """Plain memoised search over (linearized set, value), without any of the checker's
    prunings or ordering: next may be any pending op invoked no later than the earliest
    pending known-outcome return. One key only."""
    n = len(ops)
    full = sum(1 << i for i in range(n) if not ops[i].unknown)
    seen: set[tuple[int, Any]] = set()
    todo: list[tuple[int, Any]] = [(0, None)]
    while todo:
        done, value = todo.pop()
        if done & full == full:
            return True
        if (done, value) in seen:
            continue
        seen.add((done, value))
        pending = [i for i in range(n) if not done >> i & 1]
        rets = [ops[i].return_time for i in pending if ops[i].return_time is not None]
        limit = min(rets, default=math.inf)
        for i in pending:
            if ops[i].call_time <= limit:
                ok, after = apply(value, ops[i])
                if ok:
                    todo.append((done | 1 << i, after))
    return False


@SETTINGS
@given(
    seed=st.integers(0, 2**32),
    n_ops=st.integers(4, 16),
    clients=st.integers(2, 6),
    p_unknown=st.sampled_from([0.0, 0.2, 0.4]),
    values=st.integers(1, 4),
    mutate=st.booleans(),
)
def test_agrees_with_reference_search(
    seed: int, n_ops: int, clients: int, p_unknown: float, values: int, mutate: bool
) -> None:
    """Executed histories, half of them with one output flipped, against a plain search."""
    rng = random.Random(seed)
    ops = generate(rng, n_ops, 1, clients, p_unknown=p_unknown, values=values, max_gap=5)
    if mutate and ops:
        i = rng.randrange(len(ops))
        o = ops[i]
        out: Any = None
        if o.kind is OpKind.GET:
            out = rng.choice([None, b"0", b"1", b"2"])
        elif o.kind in (OpKind.DELETE, OpKind.CAS):
            out = not o.output
        ops[i] = Operation(o.client, o.kind, o.key, o.input, out, o.call_time, o.return_time)
    result = check_history(ops)
    assert result.ok == reference_search(ops), result.describe()
    if result.ok:
        assert_witness(result, ops)


def test_deterministic() -> None:
    ops = generate(random.Random(7), 300, 3, 6, p_unknown=0.1)
    ops[10] = Operation(1, "get", b"k0", None, b"nope", 0, 5000)
    a, b = check_history(ops), check_history(ops)
    assert a.describe() == b.describe()
    assert [r.steps for r in a.keys.values()] == [r.steps for r in b.keys.values()]


def test_scale_5000_ops_10_keys_8_clients() -> None:
    ops = generate(random.Random(2024), 5000, 10, 8, p_unknown=0.01)
    assert len(ops) == 5000
    result = check_history(ops, timeout=120)
    assert_witness(result, ops)
