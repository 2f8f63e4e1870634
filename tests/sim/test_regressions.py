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
    # (seed, nodes, membership, compact_every, ticks (0: the default), disk_replace;
    #  what it found, the scripted test that pins it)
    pytest.param(
        9120063,
        5,
        False,
        0,
        0,
        False,
        id="ack-of-an-entry-a-newer-leader-truncated (tests/raft/test_stale_responses.py, "
        "tests/sim/test_stale_acks.py)",
    ),
    pytest.param(
        9203218,
        5,
        False,
        0,
        0,
        False,
        id="checker: a node of an older term may drop what a later leader committed "
        "(tests/sim/test_invariants.py)",
    ),
    pytest.param(
        877307055,
        3,
        True,
        0,
        0,
        False,
        id="a stale voter ignored the election of a promoted learner: no leader "
        "(tests/raft/test_membership.py)",
    ),
    pytest.param(
        846944260,
        5,
        True,
        20,
        0,
        False,
        id="compaction between stepping a snapshot and installing it named the snapshot's "
        "configuration (Replica.compaction_index)",
    ),
    pytest.param(
        355805954,
        3,
        True,
        0,
        100,
        False,
        id="a new node crashed before its cleared recovery flag was durable and the leader "
        "removed itself: two voters waited on each other (the simulator removes no voter "
        "while a node recovers; docs/operations.md, replaced disks)",
    ),
    pytest.param(
        600417665,
        7,
        False,
        20,
        0,
        True,
        id="a replaced disk caught up to 119 of 120 never learned that 120 committed: "
        "heartbeats brought a recovering node no commit index (a recovering node now follows "
        "only leaders above every answered term, so heartbeats bring it)",
    ),
    pytest.param(
        570488088,
        3,
        True,
        20,
        0,
        True,
        id="n4's removal committed but only n4 applied it and left; n1 and n2 restarted "
        "counting n4, n3's disk was replaced and a recovering node never voted: no leader "
        "(it now votes, once every voter answered, for a log as up to date as theirs; "
        "tests/raft/test_recovery.py)",
    ),
]


@pytest.mark.parametrize(
    ("seed", "nodes", "membership", "compact_every", "ticks", "disk_replace"), REGRESSIONS
)
def test_seed_passes(
    seed: int, nodes: int, membership: bool, compact_every: int, ticks: int, disk_replace: bool
) -> None:
    params = SimParams(
        nodes=nodes, membership=membership, compact_every=compact_every, disk_replace=disk_replace
    )
    if ticks:
        params = replace(params, ticks=ticks)
    res = run_seed(seed, nodes, params=params)
    assert res.ok, res.failure.report() if res.failure else ""


LEASE_REGRESSIONS = [
    # (seed, nodes, membership, compact_every, disk_replace), all with --lease-fraction 0.3
    pytest.param(
        700100018,
        3,
        False,
        0,
        False,
        id="sim: the end waited for leases to go but not for puts acked meanwhile to apply "
        "(client-put-lost)",
    ),
    pytest.param(700100260, 3, False, 0, False, id="sim: the same, another interleaving"),
]


@pytest.mark.parametrize(
    ("seed", "nodes", "membership", "compact_every", "disk_replace"), LEASE_REGRESSIONS
)
def test_lease_seed_passes(
    seed: int, nodes: int, membership: bool, compact_every: int, disk_replace: bool
) -> None:
    params = SimParams(
        nodes=nodes,
        membership=membership,
        compact_every=compact_every,
        disk_replace=disk_replace,
        lease_fraction=0.3,
    )
    res = run_seed(seed, nodes, params=params)
    assert res.ok, res.failure.report() if res.failure else ""
