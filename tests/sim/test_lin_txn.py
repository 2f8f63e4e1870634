"""Transactions in the linearizability checker (rkv.sim.linearizability, rkv.sim.lingroups):
hand-made atomicity anomalies, accepted concurrency, and the search against a brute-force
checker (every order of every subset of the unknown ops) on small random multi-key
histories, in both directions."""

from __future__ import annotations

import itertools
from collections.abc import Hashable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rkv.sim.linearizability import Operation, OpKind, Verdict, check_history


def get(c: int, key: str, out: str | None, call: float, ret: float | None) -> Operation:
    return Operation(c, OpKind.GET, key, None, out, call, ret)


def put(c: int, key: str, v: str, call: float, ret: float | None) -> Operation:
    return Operation(c, OpKind.PUT, key, v, None, call, ret)


def txn(
    c: int,
    key: str,
    exp: str | None,
    new: str,
    others: tuple[str, ...],
    ok: bool | None,
    call: float,
    ret: float | None,
) -> Operation:
    return Operation(c, OpKind.TXN, key, (exp, new, others), ok, call, ret)


ANOMALIES = {
    # a reader sees the txn's write of a, then (strictly later) the old b: not atomic
    "torn write": [
        txn(1, "a", None, "x", ("b",), True, 0, 10),
        get(2, "a", "x", 1, 2),
        get(2, "b", None, 3, 4),
    ],
    # the txn says its compare held, but a was already "p" before it started
    "wrong success": [
        put(1, "a", "p", 0, 1),
        txn(2, "a", None, "x", ("b",), True, 2, 3),
    ],
    # the txn says its compare failed, but nothing else wrote a: it must have held
    "wrong failure": [txn(1, "a", None, "x", ("b",), False, 0, 1)],
    # a failed txn must not write
    "failed txn wrote": [
        put(1, "a", "p", 0, 1),
        txn(2, "a", None, "x", ("b",), False, 2, 3),
        get(3, "b", "x", 4, 5),
    ],
}

ACCEPTED = {
    "atomic": [
        txn(1, "a", None, "x", ("b",), True, 0, 10),
        get(2, "a", "x", 1, 2),
        get(2, "b", "x", 3, 4),
    ],
    "concurrent reader sees before": [
        txn(1, "a", None, "x", ("b",), True, 0, 10),
        get(2, "a", None, 1, 2),
        get(2, "b", None, 3, 4),
    ],
    "unknown txn may have happened": [
        txn(1, "a", None, "x", ("b",), None, 0, None),
        get(2, "b", "x", 5, 6),
        get(2, "a", "x", 7, 8),
    ],
    "unknown txn may not have happened": [
        txn(1, "a", None, "x", ("b",), None, 0, None),
        get(2, "b", None, 5, 6),
    ],
    "chained groups": [
        txn(1, "a", None, "1", ("b",), True, 0, 1),
        txn(2, "b", "1", "2", ("c",), True, 2, 3),
        get(3, "c", "2", 4, 5),
        get(3, "a", "1", 6, 7),
        put(4, "z", "9", 0, 1),  # a key no txn touches: its own search
        get(4, "z", "9", 2, 3),
    ],
}


@pytest.mark.parametrize("name", list(ANOMALIES))
def test_rejects(name: str) -> None:
    res = check_history(ANOMALIES[name])
    assert res.verdict is Verdict.ILLEGAL, res.describe()
    assert brute_force(ANOMALIES[name]) is False
    assert "not linearizable" in res.describe()


@pytest.mark.parametrize("name", list(ACCEPTED))
def test_accepts(name: str) -> None:
    res = check_history(ACCEPTED[name])
    assert res.verdict is Verdict.OK, res.describe()
    assert brute_force(ACCEPTED[name]) is True


def test_groups_are_keyed_by_their_keys() -> None:
    res = check_history(ACCEPTED["chained groups"])
    assert set(res.keys) == {("a", "b", "c"), "z"}


def test_budget_gives_unknown_never_ok() -> None:
    ops = [txn(c, "a", None, f"v{c}", ("b",), None, 0, None) for c in range(12)]
    ops.append(get(99, "b", "v3", 100, 101))
    ops.append(get(99, "a", "nobody", 102, 103))
    assert check_history(ops, max_steps=50).verdict is Verdict.UNKNOWN
    assert check_history(ops).verdict is Verdict.ILLEGAL


# ---------------------------------------------------------------- a brute-force oracle


def step(state: dict[Hashable, Any], op: Operation) -> bool:
    """The sequential model, written apart from the checker's; False if the output cannot
    be given here (an unknown op's output is free)."""
    cur = state.get(op.key)
    known = op.return_time is not None
    if op.kind is OpKind.GET:
        return cur == op.output
    if op.kind is OpKind.PUT:
        state[op.key] = op.input
        return True
    if op.kind is OpKind.DELETE:
        state[op.key] = None
        return not known or (cur is not None) == op.output
    if op.kind is OpKind.CAS:
        ok = cur == op.input[0]
        if ok:
            state[op.key] = op.input[1]
        return not known or ok == op.output
    ok = cur == op.input[0]
    if ok:
        for k in (op.key, *op.input[2]):
            state[k] = op.input[1]
    return not known or ok == op.output


def brute_force(ops: list[Operation]) -> bool:
    known = [op for op in ops if op.return_time is not None]
    unknown = [op for op in ops if op.return_time is None]
    for r in range(len(unknown) + 1):
        for extra in itertools.combinations(unknown, r):
            chosen = known + list(extra)
            for order in itertools.permutations(chosen):
                if not respects_real_time(order):
                    continue
                state: dict[Hashable, Any] = {}
                if all(step(state, op) for op in order):
                    return True
    return False


def respects_real_time(order: tuple[Operation, ...]) -> bool:
    for i, a in enumerate(order):
        for b in order[i + 1 :]:
            # b placed after a, but b returned before a was invoked
            if b.return_time is not None and b.return_time < a.call_time:
                return False
    return True


KEYS = ("a", "b", "c")
VALUES = (None, "1", "2")


@st.composite
def histories(draw: st.DrawFn) -> list[Operation]:
    ops = []
    for c in range(draw(st.integers(1, 6))):
        key = draw(st.sampled_from(KEYS))
        call = draw(st.integers(0, 10))
        known = draw(st.booleans()) or draw(st.booleans())
        ret = call + draw(st.integers(0, 6)) if known else None
        kind = draw(st.sampled_from(["get", "put", "delete", "cas", "txn"]))
        if kind == "get":
            if not known:
                continue  # an unknown read constrains nothing (the checker drops it)
            ops.append(get(c, key, draw(st.sampled_from(VALUES)), call, ret))
        elif kind == "delete":
            out = draw(st.booleans()) if known else None
            ops.append(Operation(c, OpKind.DELETE, key, None, out, call, ret))
        elif kind == "put":
            ops.append(put(c, key, draw(st.sampled_from(VALUES[1:])), call, ret))
        elif kind == "cas":
            inp = (draw(st.sampled_from(VALUES)), draw(st.sampled_from(VALUES[1:])))
            out = draw(st.booleans()) if known else None
            ops.append(Operation(c, OpKind.CAS, key, inp, out, call, ret))
        else:
            others = tuple(k for k in KEYS if k != key and draw(st.booleans()))
            out = draw(st.booleans()) if known else None
            exp, new = draw(st.sampled_from(VALUES)), draw(st.sampled_from(VALUES[1:]))
            ops.append(txn(c, key, exp, new, others, out, call, ret))
    return ops


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories())
def test_agrees_with_brute_force(ops: list[Operation]) -> None:
    res = check_history(ops)
    assert res.verdict is not Verdict.UNKNOWN
    assert res.ok == brute_force(ops), res.describe()


def test_the_random_histories_are_both_legal_and_illegal() -> None:
    """The property above is worth something only if both verdicts come up often."""
    verdicts = []

    @settings(max_examples=200, deadline=None, database=None)
    @given(histories())
    def collect(ops: list[Operation]) -> None:
        verdicts.append(check_history(ops).ok)

    collect()
    assert 0.2 < sum(verdicts) / len(verdicts) < 0.9
