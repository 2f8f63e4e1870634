"""Membership changes under the simulator's faults (`--membership`): new nodes join as
learners, are promoted, voters (the leader too) and learners are removed, while nodes crash,
partitions come and go and logs are compacted. Every run must keep all safety checks plus
the configuration ones; cores that break the rules of single-server changes must be caught.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest

from rkv.raft.confchange import ConfChange
from rkv.raft.config import Config
from rkv.raft.rawnode import RawNode
from rkv.sim.runner import DEFAULT, run_seed

PARAMS = replace(DEFAULT, ticks=600, membership=True)


@pytest.mark.parametrize(("nodes", "seeds", "compact_every"), [(3, 30, 0), (5, 12, 0), (3, 15, 6)])
def test_fault_runs_with_membership_changes_pass(
    nodes: int, seeds: int, compact_every: int
) -> None:
    params = replace(PARAMS, compact_every=compact_every)
    joined = removed = 0
    for seed in range(1, seeds + 1):
        r = run_seed(seed, nodes, params=params)
        assert r.failure is None, f"{r.failure.invariant}: {r.failure.detail}\n{r.failure.replay}"
        joined += r.stats.members_joined
        removed += r.stats.members_removed
    # the runs did change the membership, both ways
    assert joined > seeds // 3 and removed > seeds // 3


class TwoChangesAtOnce(RawNode):
    """Takes a change while an earlier one is not applied yet (drops etcd's pending rule)."""

    def propose_conf_change(self, cc: ConfChange) -> int:
        self.raft.pending_conf_index = 0
        return super().propose_conf_change(cc)


class ForgetsChangesOnRestart(RawNode):
    """Restarts with the configuration of the log's start, ignoring later applied changes."""

    def __init__(self, config: Config, storage: Any, rng: random.Random) -> None:
        super().__init__(config, storage, rng)
        r = self.raft
        r.voters, r.learners = r._conf_base.voters, r._conf_base.learners
        r._conf_history = []


@pytest.mark.parametrize(
    ("factory", "invariant"),
    [
        # two pending changes surface as either rule, whichever the seed breaks first
        (TwoChangesAtOnce, {"conf-pending", "conf-one-at-a-time"}),
        (ForgetsChangesOnRestart, {"conf-agreement"}),
    ],
)
def test_broken_membership_rules_are_caught(factory: type[RawNode], invariant: set[str]) -> None:
    failure = None
    for seed in range(1, 61):
        failure = run_seed(seed, 3, params=PARAMS, raw_node_factory=factory).failure
        if failure is not None:
            break
    assert failure is not None, f"{factory.__name__} passed 60 seeds"
    assert failure.invariant in invariant, failure.report()
    assert "--membership" in failure.replay
    # and it replays exactly from its seed
    again = run_seed(failure.seed, 3, params=PARAMS, raw_node_factory=factory).failure
    assert again is not None and (again.invariant, again.time) == (failure.invariant, failure.time)
