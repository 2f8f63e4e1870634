"""Seeds that once failed, replayed with the real core: each was a bug until its root cause
was found and fixed, and stays here so it cannot come back unnoticed.

A seed's meaning can shift when the simulator's use of randomness changes; the scripted
tests named beside each seed pin the interleaving itself.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from rkv.sim.cluster import SimParams
from rkv.sim.runner import run_seed

REGRESSIONS = [
    # (seed, nodes, membership, compact_every, ticks (0: the default);
    #  what it found, the scripted test that pins it)
    pytest.param(
        9120063,
        5,
        False,
        0,
        0,
        id="ack-of-an-entry-a-newer-leader-truncated (tests/raft/test_stale_responses.py, "
        "tests/sim/test_stale_acks.py)",
    ),
    pytest.param(
        9203218,
        5,
        False,
        0,
        0,
        id="checker: a node of an older term may drop what a later leader committed "
        "(tests/sim/test_invariants.py)",
    ),
    pytest.param(
        877307055,
        3,
        True,
        0,
        0,
        id="a stale voter ignored the election of a promoted learner: no leader "
        "(tests/raft/test_membership.py)",
    ),
    pytest.param(
        846944260,
        5,
        True,
        20,
        0,
        id="compaction between stepping a snapshot and installing it named the snapshot's "
        "configuration (Replica.compaction_index)",
    ),
    pytest.param(
        355805954,
        3,
        True,
        0,
        100,
        id="a new node crashed before its cleared recovery flag was durable and the leader "
        "removed itself: two voters waited on each other (the simulator removes no voter "
        "while a node recovers; docs/operations.md, replaced disks)",
    ),
]


@pytest.mark.parametrize(("seed", "nodes", "membership", "compact_every", "ticks"), REGRESSIONS)
def test_seed_passes(
    seed: int, nodes: int, membership: bool, compact_every: int, ticks: int
) -> None:
    params = SimParams(nodes=nodes, membership=membership, compact_every=compact_every)
    if ticks:
        params = replace(params, ticks=ticks)
    res = run_seed(seed, nodes, params=params)
    assert res.ok, res.failure.report() if res.failure else ""


def test_a_recovering_node_takes_the_commit_of_an_overlapping_append() -> None:
    """Seed 600417665 (7 nodes, --disk-replace --compact-every 20): a replaced disk, caught up
    by a snapshot and the log to 119 of 120, never learned that 120 committed. Heartbeats
    bring a recovering node no commit index, and the one APPEND that carried it overlapped
    what the node had committed, which the core answered without reading the commit
    (tests/raft/test_recovery.py pins it)."""
    params = SimParams(nodes=7, compact_every=20, disk_replace=True)
    res = run_seed(600417665, 7, params=params)
    assert res.ok, res.failure.report() if res.failure else ""
