"""The verdict of a replica comparison (rkv/compare.py `compare`), from each member's
(applied index, state hash) pairs: the newest index every member that answered holds, the
strict majority's hash agrees, the rest differ; members that cannot be compared say why."""

from __future__ import annotations

import pytest

from rkv.compare import (
    AGREES,
    DIFFERS,
    NOT_COMPARED,
    UNREACHABLE,
    compare,
    pairs_frame,
    pairs_from_frame,
)
from rkv.errors import BadRequest

A, B, C = "a:1", "b:1", "c:1"
Answers = dict[str, list[tuple[int, int]] | str]

CASES: dict[str, tuple[Answers, int | None, dict[str, str]]] = {
    "all agree at the newest common index": (
        {
            A: [(64, 1), (128, 2), (140, 3)],
            B: [(64, 1), (128, 2), (150, 4)],
            C: [(128, 2), (130, 9)],
        },
        128,
        {A: AGREES, B: AGREES, C: AGREES},
    ),
    "one of three differs": (
        {A: [(64, 1), (70, 5)], B: [(64, 1), (70, 5)], C: [(64, 1), (70, 6)]},
        70,
        {A: AGREES, B: AGREES, C: DIFFERS},
    ),
    "two members, two hashes: nobody can tell which": (
        {A: [(10, 1)], B: [(10, 2)]},
        10,
        {A: DIFFERS, B: DIFFERS},
    ),
    "three hashes": (
        {A: [(10, 1)], B: [(10, 2)], C: [(10, 3)]},
        10,
        {A: DIFFERS, B: DIFFERS, C: DIFFERS},
    ),
    "a member far behind is not compared": (
        {A: [(640, 1), (700, 2)], B: [(640, 1), (700, 2)], C: [(64, 7)]},
        700,
        {A: AGREES, B: AGREES, C: NOT_COMPARED},
    ),
    "a member just restarted, holding its current pair only": (
        {A: [(64, 1), (90, 2)], B: [(64, 1), (95, 3)], C: [(93, 8)]},
        64,
        {A: AGREES, B: AGREES, C: NOT_COMPARED},
    ),
    "an unreachable member": (
        {A: [(5, 1)], B: [(5, 1)], C: "connection refused"},
        5,
        {A: AGREES, B: AGREES, C: UNREACHABLE},
    ),
    "the only member that answered": (
        {A: [(5, 1)], B: "timeout", C: "timeout"},
        None,
        {A: NOT_COMPARED, B: UNREACHABLE, C: UNREACHABLE},
    ),
    "no index held by two members": (
        {A: [(5, 1)], B: [(6, 1)], C: [(7, 1)]},
        None,
        {A: NOT_COMPARED, B: NOT_COMPARED, C: NOT_COMPARED},
    ),
    "a single-member cluster": ({A: [(5, 1)]}, 5, {A: AGREES}),
    # (A and B differ at 80: the next comparison, once C has applied it, finds it)
    "the newest index all hold, not a newer one only some hold": (
        {A: [(64, 1), (80, 2)], B: [(64, 1), (80, 3)], C: [(64, 1)]},
        64,
        {A: AGREES, B: AGREES, C: AGREES},
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_verdicts(name: str) -> None:
    answers, index, want = CASES[name]
    got_index, verdicts = compare(answers)
    assert got_index == index
    assert {v.node: v.verdict for v in verdicts} == want
    for v in verdicts:
        assert (v.index is not None) == (v.verdict in (AGREES, DIFFERS))
        assert bool(v.reason) == (v.verdict != AGREES)
        if v.verdict in (AGREES, DIFFERS):
            assert v.hash == dict(answers[v.node])[index].to_bytes(16, "big").hex()  # type: ignore[arg-type, index]


def test_pairs_travel_as_16_bytes() -> None:
    pairs = [(64, 1), (70, (1 << 128) - 1)]
    assert pairs_from_frame(pairs_frame("a:1", pairs)) == pairs


@pytest.mark.parametrize(
    "hashes",
    [None, [[1, b"short"]], [["1", b"\x00" * 16]], [[1]], [[1, "not bytes" * 2]]],
)
def test_bad_answers_are_refused(hashes: object) -> None:
    with pytest.raises(BadRequest):
        pairs_from_frame({"t": "ok", "hashes": hashes})
