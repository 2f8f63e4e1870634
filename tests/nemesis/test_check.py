"""The nemesis's judging step has teeth: hand-made histories and replica states with one
injected fault each (stale read, lost acknowledged write, divergent replica) are reported;
their unharmed twins are not."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rkv.nemesis import check_histories, compare_replicas, lost_acknowledged_writes
from rkv.sim.linearizability import Operation


def op(
    client: str, kind: str, key: bytes, inp: Any, out: Any, t0: float, t1: float | None
) -> Operation:
    return Operation(client, kind, key, inp, out, t0, t1)


def base() -> list[Operation]:
    """Two keys; on k: put a, put b (after a returned), get b, cas b->c, delete."""
    return [
        op("w1", "put", b"k", b"a", None, 0, 1),
        op("w2", "put", b"k", b"b", None, 2, 3),
        op("r1", "get", b"k", None, b"b", 4, 5),
        op("w1", "cas", b"k", (b"b", b"c"), True, 6, 7),
        op("w2", "put", b"j", b"x", None, 0, 10),
        op("r2", "get", b"j", None, b"x", 11, 12),
    ]


def test_clean_history_passes() -> None:
    hc = check_histories(base())
    assert hc.ok
    assert hc.histories == 2
    assert hc.operations == 6


@pytest.mark.parametrize(
    ("injected", "why"),
    [
        # a read of an overwritten value after the overwrite was acknowledged
        (op("r3", "get", b"k", None, b"a", 8, 9), "stale read"),
        # a read of a value nobody wrote
        (op("r3", "get", b"k", None, b"zz", 8, 9), "phantom"),
        # an acknowledged write that a later read does not see (lost)
        (op("r3", "get", b"j", None, None, 13, 14), "lost write"),
        # a cas that claims to have swapped on a value already replaced
        (op("w3", "cas", b"k", (b"a", b"d"), True, 8, 9), "cas on stale value"),
    ],
)
def test_injected_anomaly_is_a_violation(injected: Operation, why: str) -> None:
    hc = check_histories([*base(), injected])
    assert not hc.ok, why
    assert len(hc.violations) == 1
    assert repr(injected.key) in hc.violations[0]


def test_unknown_outcomes_are_not_violations() -> None:
    # an unknown write may take effect late: a read seeing it after the cas is fine
    ops = [*base(), op("w3", "put", b"k", b"late", None, 6.5, None)]
    ops.append(op("r3", "get", b"k", None, b"late", 8, 9))
    assert check_histories(ops).ok


@pytest.mark.parametrize(
    ("final", "lost"),
    [
        ({b"k": b"c"}, 0),
        ({b"k": b"a"}, 2),  # b and c were acknowledged after a returned
        ({b"k": b"b"}, 1),  # c lost
        ({b"k": b"nobody"}, 1),
        ({b"k": None}, 0),  # absent: left to the linearizability check
    ],
)
def test_lost_acknowledged_writes(final: dict[bytes, bytes | None], lost: int) -> None:
    assert len(lost_acknowledged_writes(base(), final)) == lost


def test_acknowledged_delete_after_the_final_writer_is_lost() -> None:
    ops = [*base(), op("w3", "delete", b"k", None, True, 8, 9)]
    assert len(lost_acknowledged_writes(ops, {b"k": b"c"})) == 1
    assert lost_acknowledged_writes(ops, {b"k": None}) == []


def test_unknown_writer_of_final_value_proves_nothing_lost() -> None:
    ops = [*base(), op("w3", "put", b"k", b"late", None, 0.5, None)]
    assert lost_acknowledged_writes(ops, {b"k": b"late"}) == []


def status(commit: int, applied: int, last: int) -> dict[str, int]:
    return {"commit": commit, "applied": applied, "last_index": last}


@pytest.mark.parametrize(
    ("statuses", "values", "problems"),
    [
        ({"a": status(5, 5, 5), "b": status(5, 5, 5)}, {"a": {b"k": b"1"}, "b": {b"k": b"1"}}, 0),
        ({"a": status(5, 5, 5), "b": status(4, 4, 5)}, {"a": {b"k": b"1"}, "b": {b"k": b"1"}}, 1),
        ({"a": status(5, 4, 5), "b": status(5, 4, 5)}, {"a": {b"k": b"1"}, "b": {b"k": b"1"}}, 2),
        ({"a": status(5, 5, 5), "b": status(5, 5, 5)}, {"a": {b"k": b"1"}, "b": {b"k": b"2"}}, 1),
        ({"a": status(5, 5, 5)}, {"a": {b"k": b"1"}}, 1),  # b never answered
    ],
)
def test_compare_replicas(statuses: dict[str, Any], values: dict[str, Any], problems: int) -> None:
    assert len(compare_replicas(statuses, values, ["a", "b"])) == problems


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from([b"a", b"b", b"c", None]), min_size=1, max_size=12))
def test_sequential_histories_pass_and_a_stale_read_fails(values: list[bytes | None]) -> None:
    """A strictly sequential history of puts/deletes, each followed by a correct read, is
    clean; replacing the last read's answer with an earlier, different value is not."""
    ops: list[Operation] = []
    t = 0.0
    n = 0
    for v in values:
        if v is None:
            ops.append(op("w", "delete", b"k", None, bool(ops) and _cur(ops) is not None, t, t + 1))
        else:
            n += 1
            val = v + str(n).encode()
            ops.append(op("w", "put", b"k", val, None, t, t + 1))
        ops.append(op("r", "get", b"k", None, _cur(ops), t + 2, t + 3))
        t += 4
    assert check_histories(ops).ok
    last = ops[-1].output
    earlier = {o.output for o in ops[:-1] if o.kind == "get"} - {last}
    if earlier:
        stale = sorted(earlier, key=repr)[0]
        ops.append(op("r", "get", b"k", None, stale, t, t + 1))
        assert not check_histories(ops).ok


def _cur(ops: list[Operation]) -> bytes | None:
    for o in reversed(ops):
        if o.kind == "put":
            return o.input  # type: ignore[no-any-return]
        if o.kind == "delete":
            return None
    return None
