"""The watch checks in the simulator (rkv.sim.watch): every node's store records its changes
for watchers, and the run checks each node's stream (order, previous values), the streams
against each other, and the acknowledged writes against every stream. Broken recordings
(a change dropped, duplicated, two reordered, a wrong previous value) are caught on some
seed, reproducibly; the checker's rules on hand-made streams."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from rkv.sim.cluster import Cluster, SimParams
from rkv.sim.invariants import InvariantViolation
from rkv.sim.runner import Failure, run_seed
from rkv.sim.watch import AckedWrite, WatchChecker
from rkv.store.changes import ChangeRecorder
from rkv.store.commands import Change, Record

PARAMS = replace(SimParams(), ticks=300, txn_fraction=0.3, lease_fraction=0.2)
EVERY = 7  # the broken variants misbehave at revisions divisible by this


def test_runs_record_and_check_streams() -> None:
    c = Cluster(1, PARAMS)
    c.run()
    assert set(c.watch.streams) == set(c.nodes)
    for s in c.watch.streams.values():
        assert len(s.groups) > 20  # every node's stream held the run's writes
    assert len(c.watch.first) >= max(len(s.groups) for s in c.watch.streams.values())


# -- broken recordings -----------------------------------------------------------------------


def drop_one(monkeypatch: pytest.MonkeyPatch) -> None:
    real = ChangeRecorder.key

    def key(self: ChangeRecorder, key: bytes, rec: Record | None, old: Record | None) -> None:
        if self.index % EVERY:
            real(self, key, rec, old)

    monkeypatch.setattr(ChangeRecorder, "key", key)


def duplicate_one(monkeypatch: pytest.MonkeyPatch) -> None:
    real = ChangeRecorder.key

    def key(self: ChangeRecorder, key: bytes, rec: Record | None, old: Record | None) -> None:
        real(self, key, rec, old)
        if self.index % EVERY == 0 and self.out:
            self.out.append(self.out[-1])

    monkeypatch.setattr(ChangeRecorder, "key", key)


def reorder_two(monkeypatch: pytest.MonkeyPatch) -> None:
    """A change goes before the previous entry's last change (in one apply batch)."""
    real = ChangeRecorder.key

    def key(self: ChangeRecorder, key: bytes, rec: Record | None, old: Record | None) -> None:
        real(self, key, rec, old)
        out = self.out
        if self.index % EVERY == 0 and len(out) >= 2 and out[-2].revision < self.index:
            out[-2], out[-1] = out[-1], out[-2]

    monkeypatch.setattr(ChangeRecorder, "key", key)


def wrong_prev(monkeypatch: pytest.MonkeyPatch) -> None:
    real = ChangeRecorder.key

    def key(self: ChangeRecorder, key: bytes, rec: Record | None, old: Record | None) -> None:
        real(self, key, rec, old)
        c = self.out[-1] if self.out else None
        if self.index % EVERY == 0 and c is not None and c.prev is not None:
            self.out[-1] = replace(c, prev=c.prev + b"?")

    monkeypatch.setattr(ChangeRecorder, "key", key)


BROKEN: list[tuple[Callable[[pytest.MonkeyPatch], None], set[str]]] = [
    (drop_one, {"watch-prev", "watch-missing", "watch-state"}),
    (duplicate_one, {"watch-order"}),
    (reorder_two, {"watch-order", "watch-prev"}),  # whichever it meets first
    (wrong_prev, {"watch-prev"}),
]


def first_failure(params: SimParams) -> Failure:
    for seed in range(1, 16):
        res = run_seed(seed, 3, params=params)
        if res.failure is not None:
            return res.failure
    pytest.fail("no seed failed: the watch checks missed the broken recording")


@pytest.mark.parametrize(("broken", "expected"), BROKEN, ids=[b.__name__ for b, _ in BROKEN])
def test_a_broken_recording_is_caught(
    monkeypatch: pytest.MonkeyPatch,
    broken: Callable[[pytest.MonkeyPatch], None],
    expected: set[str],
) -> None:
    broken(monkeypatch)
    f = first_failure(PARAMS)
    assert f.invariant in expected, f.report()
    again = run_seed(f.seed, f.nodes, params=PARAMS).failure
    assert again is not None and again.report() == f.report()


# -- the checker's rules, on hand-made streams -------------------------------------------------


def put(r: int, key: bytes, value: bytes, prev: bytes | None = None) -> Change:
    return Change(r, "put", key, value, prev)


def violation(fn: Callable[[], None]) -> str:
    with pytest.raises(InvariantViolation) as e:
        fn()
    return e.value.invariant


def test_order_rules() -> None:
    w = WatchChecker()
    w.feed("n1", [put(1, b"a", b"1"), put(2, b"a", b"2", b"1")])
    assert violation(lambda: w.feed("n1", [put(2, b"b", b"x")])) == "watch-order"
    w2 = WatchChecker()
    assert violation(lambda: w2.feed("n1", [put(1, b"a", b"1"), put(1, b"a", b"2")])) == (
        "watch-order"
    )
    w3 = WatchChecker()
    w3.feed("n1", [put(3, b"a", b"1")])
    assert violation(lambda: w3.feed("n1", [Change(2, "reset", b"")])) == "watch-order"


def test_a_restart_may_only_replay_identically() -> None:
    w = WatchChecker()
    w.feed("n1", [put(1, b"a", b"1"), put(2, b"a", b"2", b"1"), put(3, b"b", b"x")])
    w.restart("n1", 1)  # the store durably applied only up to 1
    w.feed("n1", [put(2, b"a", b"2", b"1")])  # the same again: fine
    assert violation(lambda: w.feed("n1", [put(3, b"b", b"y")])) == "watch-order"


def test_prev_and_divergence() -> None:
    w = WatchChecker()
    w.feed("n1", [put(1, b"a", b"1")])
    assert violation(lambda: w.feed("n1", [put(2, b"a", b"2", b"0")])) == "watch-prev"
    assert violation(lambda: w.feed("n2", [put(1, b"a", b"other")])) == "watch-diverged"
    # after a reset the stream does not know a key's value until it changes
    w.feed("n3", [Change(5, "reset", b""), put(6, b"a", b"3", b"2")])


def test_missing_rules() -> None:
    stores = {"n1": {b"a": b"2"}, "n2": {b"a": b"2"}}
    acked = [AckedWrite(1, "put", b"a", b"1", "put a=1"), AckedWrite(3, "put", b"a", b"2", "x")]
    w = WatchChecker()
    w.feed("n1", [put(1, b"a", b"1"), put(3, b"a", b"2", b"1")])
    w.feed("n2", [Change(2, "reset", b""), put(3, b"a", b"2", b"1")])  # 1 is in its gap
    w.finish(acked, stores)
    w.feed("n2", [put(4, b"b", b"z")])  # n1 never got to 4: not its concern
    stores["n2"][b"b"] = b"z"
    w.finish(acked, stores)
    w.feed("n1", [put(5, b"c", b"q")])  # n1 reached 5 without recording 4
    stores["n1"][b"c"] = b"q"
    assert violation(lambda: w.finish(acked, stores)) == "watch-missing"


def test_state_rule() -> None:
    w = WatchChecker()
    w.feed("n1", [put(1, b"a", b"1")])
    assert violation(lambda: w.finish([], {"n1": {b"a": b"2"}})) == "watch-state"
