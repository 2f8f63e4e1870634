"""Skipping the Ready loop after inert ticks (rkv.sim.cluster, Raft.inert_ticks) changes no run:
the same seeds with the skip turned off (the core saying no tick is ever inert) give the same
full trace and stats, with elections, heartbeats, snapshots in flight, membership changes and
recovering nodes (replaced disks) among them."""

from __future__ import annotations

from dataclasses import replace

import pytest

from rkv.raft.core import Raft
from rkv.sim.runner import DEFAULT, SeedResult, run_seed

SHORT = replace(DEFAULT, ticks=300, full_trace=True)

CASES = [
    # at the default length: snapshots in flight while the leader ticks (seeds 3 and 4 have
    # them; at 300 ticks no seed of 1..30 does)
    pytest.param(
        3, replace(SHORT, ticks=DEFAULT.ticks, compact_every=20), range(3, 5), id="3-compact"
    ),
    pytest.param(5, SHORT, range(1, 3), id="5-plain"),
    pytest.param(3, replace(SHORT, membership=True), range(1, 4), id="3-membership"),
    pytest.param(3, replace(SHORT, disk_replace=True), range(1, 4), id="3-disk-replace"),
]


def runs(nodes: int, params: object, seeds: range) -> list[SeedResult]:
    return [run_seed(s, nodes, params=params) for s in seeds]  # type: ignore[arg-type]


@pytest.mark.parametrize(("nodes", "params", "seeds"), CASES)
def test_runs_are_the_same_without_the_skip(
    nodes: int, params: object, seeds: range, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0
    inert_ticks = Raft.inert_ticks

    def counted(self: Raft) -> int:
        nonlocal calls
        calls += 1
        return inert_ticks(self)

    monkeypatch.setattr(Raft, "inert_ticks", counted)
    skipping = runs(nodes, params, seeds)
    assert calls > 0, "the skip was never considered"
    monkeypatch.setattr(Raft, "inert_ticks", lambda self: 0)
    stepping = runs(nodes, params, seeds)
    for a, b in zip(skipping, stepping, strict=True):
        assert a.trace and a.trace == b.trace, f"seed {a.seed} differs"
        assert a.stats == b.stats
        assert (a.failure is None) == (b.failure is None)
