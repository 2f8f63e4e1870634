"""Scripted scenarios for behaviour of the Raft core that the seed sweeps found wanting.

Each test drives a small simulated cluster by hand (no random faults, no clients), so it shows
one behaviour of rkv.raft in isolation and keeps doing so when seeds shift with core changes.
Both below failed against the first RawNode (about 1 seed in 10 failed `liveness`: an idle
leader in replicate state never resent appends that were lost); the core now answers a lagging
follower's heartbeat response with an append, and these stay as regression tests.
"""

from __future__ import annotations

from dataclasses import replace

from rkv.sim.cluster import Cluster, SimParams
from rkv.sim.statemachine import ClientCommand, StoreStateMachine

QUIET = replace(SimParams(), clients=0)


def elect(c: Cluster, by: int = 400) -> str:
    c.start(faults=False, quiet_phase=False)
    c.run_until(by * c.p.tick_interval)
    leader = c.leader_id()
    assert leader, "no leader elected in a healthy cluster"
    return leader


def test_idle_leader_repairs_a_follower_whose_appends_were_lost() -> None:
    """A follower misses the last appends (its inbound link is cut while they are sent), then
    the link heals and nothing more is proposed. The leader must still bring it up to date
    (etcd does so by answering the heartbeat response of a lagging follower with an append,
    whose rejection resets the follower to probing)."""
    c = Cluster(7, replace(QUIET, nodes=3))
    leader = elect(c)
    iv = c.p.tick_interval
    follower = next(i for i in c.ids if i != leader)
    c.net.cut(leader, follower)
    for seq in (1, 2):
        c.propose(leader, StoreStateMachine().encode(ClientCommand("put", 0, seq, "k", f"v{seq}")))
    c.run_until(c.now + 30 * iv)
    committed = c.checker.committed_index
    assert committed >= 2, "the two other nodes should have committed the proposals"
    c.net.heal()
    c.run_until(c.now + 200 * iv)
    applied = {i: c.nodes[i].applied_index for i in c.ids}
    assert all(a >= committed for a in applied.values()), (
        f"after healing, an idle leader left a follower behind: committed {committed}, "
        f"applied {applied}"
    )


def test_restarted_follower_catches_up_without_new_proposals() -> None:
    """A follower crashes, entries are committed without it, it restarts; with no further
    proposals the leader must still replicate the missing entries to it."""
    c = Cluster(11, replace(QUIET, nodes=3))
    leader = elect(c)
    iv = c.p.tick_interval
    follower = next(i for i in c.ids if i != leader)
    c.crash(follower, restart=False)
    for seq in (1, 2, 3):
        c.propose(leader, StoreStateMachine().encode(ClientCommand("put", 0, seq, "k", f"v{seq}")))
    c.run_until(c.now + 30 * iv)
    committed = c.checker.committed_index
    c.restart(follower)
    c.run_until(c.now + 200 * iv)
    applied = {i: c.nodes[i].applied_index for i in c.ids}
    assert all(a >= committed for a in applied.values()), (
        f"restarted follower not caught up: committed {committed}, applied {applied}"
    )
