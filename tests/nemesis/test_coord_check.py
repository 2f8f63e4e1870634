"""The watcher and fenced-store checks of the nemesis (`--watchers`, `--locks`) have teeth:
hand-made records with one fault each (a missing, duplicated, out-of-order, misplaced or
phantom event; a stale token accepted; interleaved holders; a wrong final token) fail,
their unharmed twins and the excusable cases (a write in a Compacted watcher's gap, a write
of unknown outcome seen or not) pass."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from rkv.nemesis.coord_check import FenceAttempt, WatchLog, check_fence, check_watchers
from rkv.sim.linearizability import Operation

END = 14


def op(kind: str, key: bytes, inp: Any, out: Any, t0: float, t1: float | None) -> Operation:
    return Operation("c", kind, key, inp, out, t0, t1)


def history() -> list[Operation]:
    """Acknowledged: a (rev 11), b (rev 12), c by cas (rev 13); unknown outcome: u (rev 14,
    applied); a cas answered False (it wrote nothing: no event)."""
    return [
        op("put", b"e1", b"a", None, 0, 1),
        op("put", b"e1", b"b", None, 2, 3),
        op("cas", b"e2", (None, b"c"), True, 4, 5),
        op("cas", b"e2", (b"zz", b"never"), False, 4, 5),
        op("put", b"e2", b"u", None, 6, None),
    ]


def events() -> list[tuple[int, str, bytes, bytes | None]]:
    return [
        (11, "put", b"e1", b"a"),
        (12, "put", b"e1", b"b"),
        (13, "put", b"e2", b"c"),
        (14, "put", b"e2", b"u"),
    ]


def log(name: str, evs: list[tuple[int, str, bytes, bytes | None]]) -> WatchLog:
    w = WatchLog(name)
    w.start(11)
    w.events = list(evs)
    w.saw(END)
    return w


def drop(i: int) -> Callable[[list[Any]], list[Any]]:
    return lambda evs: evs[:i] + evs[i + 1 :]


WATCH_CASES: list[tuple[str, Callable[[list[Any]], list[Any]], str | None]] = [
    ("unharmed", lambda evs: evs, None),
    ("missing acknowledged", drop(1), "missing"),
    ("missing unknown outcome", drop(3), None),
    ("duplicated", lambda evs: [*evs[:2], evs[1], *evs[2:]], "twice"),
    ("duplicated unknown outcome", lambda evs: [*evs, evs[3]], "twice"),
    ("out of order", lambda evs: [evs[1], evs[0], *evs[2:]], "after one at"),
    ("wrong value", lambda evs: [(11, "put", b"e1", b"a2"), *evs[1:]], "never written"),
    ("wrong key", lambda evs: [(11, "put", b"e2", b"a"), *evs[1:]], "written to"),
    ("cas answered False seen", lambda evs: [*evs[:3], (14, "put", b"e1", b"never")], "never"),
]


@pytest.mark.parametrize(("name", "harm", "expect"), WATCH_CASES, ids=[c[0] for c in WATCH_CASES])
def test_watch_check(name: str, harm: Callable[[list[Any]], list[Any]], expect: str | None) -> None:
    """One of two watchers is harmed; the other saw everything."""
    v = check_watchers(history(), [log("w0", events()), log("w1", harm(events()))], END)
    if expect is None:
        assert v.problems == [], v.problems
    else:
        assert v.problems, name
        assert any(expect in p for p in v.problems), v.problems


def test_counts() -> None:
    v = check_watchers(history(), [log("w0", events()), log("w1", events())], END)
    assert (v.checked_writes, v.events, v.skipped, v.unplaced) == (3, 8, 0, 0)


def test_missing_in_every_watcher_is_caught_when_a_watcher_had_no_gap() -> None:
    evs = drop(0)(events())
    v = check_watchers(history(), [log("w0", evs), log("w1", evs)], END)
    assert any("no watcher saw it" in p for p in v.problems), v.problems


def gapped_log() -> WatchLog:
    """A watcher Compacted after revision 11 that restarted from a scan at 12."""
    w = WatchLog("w1", compacted=1, restarts=1)
    w.start(11)
    w.events = [events()[0]]
    w.saw(11)
    w.start(13)
    w.events += events()[2:]
    w.saw(END)
    return w


def test_compacted_gap_excuses_only_its_revisions() -> None:
    """w1 got Compacted after revision 11 and restarted from a scan at 12: it could not see
    b (12), which w0 places there; it must still see c (13)."""
    gapped = gapped_log()
    v = check_watchers(history(), [log("w0", events()), gapped], END)
    assert v.problems == [] and v.skipped == 1
    gapped.events.pop(1)  # c (13) is inside its second segment: missing
    v = check_watchers(history(), [log("w0", events()), gapped], END)
    assert any("revision 13" in p and "missing" in p for p in v.problems), v.problems


def test_write_no_one_saw_is_unplaced_when_every_watcher_had_a_gap() -> None:
    gapped = gapped_log()
    v = check_watchers(history(), [gapped], END)
    assert v.problems == [] and v.unplaced == 1


def test_watcher_that_stopped_early_fails() -> None:
    w = log("w0", events())
    w.segments[-1][1] = 13
    w.events.pop()
    v = check_watchers(history(), [w], END)
    assert any("stopped at revision 13" in p for p in v.problems), v.problems


def test_event_outside_coverage_fails() -> None:
    w = log("w0", [(9, "put", b"e1", b"a"), *events()[1:]])
    v = check_watchers(history(), [w], END)
    assert any("outside what it watched" in p for p in v.problems), v.problems


def fa(holder: str, token: int, outcome: str, rev: int, late: bool = False) -> FenceAttempt:
    return FenceAttempt(holder, token, late, outcome, rev)


FENCE_CASES: list[tuple[str, list[FenceAttempt], int | None, str | None]] = [
    (
        "turns",
        [fa("l0", 5, "accepted", 6), fa("l0", 5, "accepted", 7), fa("l1", 8, "accepted", 9)],
        8,
        None,
    ),
    (
        "late write refused",
        [fa("l0", 5, "accepted", 6), fa("l1", 8, "accepted", 9), fa("l0", 5, "refused", 10, True)],
        8,
        None,
    ),
    (
        "late write with no newer holder accepted",
        [fa("l0", 5, "accepted", 6), fa("l0", 5, "accepted", 10, True)],
        5,
        None,
    ),
    (
        "unknown outcome with a higher token left in the store",
        [fa("l0", 5, "accepted", 6), fa("l1", 8, "unknown", 0)],
        8,
        None,
    ),
    (
        "stale token accepted",
        [fa("l0", 5, "accepted", 6), fa("l1", 8, "accepted", 9), fa("l0", 5, "accepted", 10, True)],
        8,
        "stale token accepted",
    ),
    (
        "interleaved holders",
        [fa("l0", 5, "accepted", 6), fa("l1", 8, "accepted", 7), fa("l0", 5, "accepted", 8)],
        8,
        "overlap",
    ),
    (
        "final token not the highest accepted",
        [fa("l0", 5, "accepted", 6), fa("l1", 8, "accepted", 9)],
        5,
        "ends with token 5",
    ),
]


@pytest.mark.parametrize(
    ("name", "attempts", "final", "expect"), FENCE_CASES, ids=[c[0] for c in FENCE_CASES]
)
def test_fence_check(
    name: str, attempts: list[FenceAttempt], final: int | None, expect: str | None
) -> None:
    problems = check_fence(attempts, final)
    if expect is None:
        assert problems == [], problems
    else:
        assert any(expect in p for p in problems), (name, problems)
