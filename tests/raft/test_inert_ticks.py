"""`Raft.inert_ticks`: the ticks it calls inert only advance counters, and where a tick's
effect is due (a campaign, a heartbeat, a RECOVER, a snapshot retry) it says so exactly.

The simulator skips looking for a Ready after such ticks (rkv.sim.cluster), so a wrong answer
here would silently change what a seed does; tests/sim/test_determinism.py and
bench/sim_identity.py check the consequence, these tests the query itself.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from rkv.raft.rawnode import RawNode
from rkv.raft.storage import MemoryStorage
from rkv.raft.types import HardState, Message, MessageType, Role

from .cluster import drain, make_leader, node

MT = MessageType


def fingerprint(n: RawNode) -> tuple[object, ...]:
    """Everything but the elapsed-tick counters that a tick could change."""
    r = n.raft
    log = r.log
    prs = tuple(sorted((p, pr.state, pr.match, pr.next) for p, pr in r.prs.items()))
    rec = r.recovery
    return (
        r.role,
        r.term,
        r.vote,
        r.leader,
        log.last_index(),
        log.committed,
        len(r.msgs),
        r.need_flush,
        len(r.read_states),
        r.lead_transferee,
        prs,
        None if rec is None else rec.knows_term,
        n.has_ready(),
    )


def check_inert_then_due(n: RawNode, st: MemoryStorage, rounds: int = 6) -> list[int]:
    """Tick through `rounds` due ticks: before each, the k ticks inert_ticks() promised change
    nothing but counters (and inert_ticks() itself changes nothing); the tick after them does
    something. Returns the k of each round."""
    seen = []
    for _ in range(rounds):
        drain(n, st)
        k = n.raft.inert_ticks()
        before = fingerprint(n)
        assert n.raft.inert_ticks() == k and fingerprint(n) == before  # pure
        for i in range(k):
            n.tick()
            assert fingerprint(n) == before, f"inert tick {i + 1} of {k} changed something"
            assert n.raft.inert_ticks() == k - i - 1
        n.tick()
        assert fingerprint(n) != before or n.raft.role == Role.LEADER, "the due tick did nothing"
        seen.append(k)
    return seen


def follower() -> tuple[RawNode, MemoryStorage]:
    return node(election_tick=10, heartbeat_tick=2)


def candidate() -> tuple[RawNode, MemoryStorage]:
    n, st = node(election_tick=10, heartbeat_tick=2, pre_vote=False)
    n.campaign()
    return n, st


def recovering() -> tuple[RawNode, MemoryStorage]:
    return node(hs=HardState(recovering=True), election_tick=10, heartbeat_tick=3)


def leader() -> tuple[RawNode, MemoryStorage]:
    return make_leader(election_tick=10, heartbeat_tick=3, check_quorum=False)


@pytest.mark.parametrize(
    "make",
    [follower, candidate, recovering, leader],
    ids=["follower", "candidate", "recovering", "leader"],
)
def test_inert_ticks_are_inert_and_the_next_one_is_due(
    make: Callable[[], tuple[RawNode, MemoryStorage]],
) -> None:
    n, st = make()
    ks = check_inert_then_due(n, st)
    assert max(ks) > 0, ks


def test_a_follower_campaigns_on_the_first_tick_past_its_inert_ones() -> None:
    n, st = follower()
    k = n.raft.inert_ticks()
    assert k == n.raft.randomized_timeout - 1
    for _ in range(k):
        n.tick()
    assert not n.has_ready()
    n.tick()
    assert any(m.type == MT.PRE_VOTE for m in drain(n, st))


def test_a_recovering_node_sends_recover_on_its_first_tick_then_every_heartbeat() -> None:
    n, st = recovering()
    assert n.raft.inert_ticks() == 0
    n.tick()
    assert {m.type for m in drain(n, st)} == {MT.RECOVER}
    assert n.raft.inert_ticks() == 2  # heartbeat_tick 3
    for _ in range(3):
        n.tick()
    assert {m.type for m in drain(n, st)} == {MT.RECOVER}


def test_a_leader_heartbeats_on_the_first_tick_past_its_inert_ones() -> None:
    n, st = leader()
    k = n.raft.inert_ticks()
    assert k == 2  # heartbeat_tick 3, just elected
    for _ in range(k):
        n.tick()
    assert not n.has_ready()
    n.tick()
    assert {m.type for m in drain(n, st)} == {MT.HEARTBEAT}


def test_a_leader_with_check_quorum_is_due_at_its_election_timeout() -> None:
    n, _st = make_leader(election_tick=10, heartbeat_tick=9)
    n.raft.election_elapsed = 5
    assert n.raft.inert_ticks() == 4
    for p in n.raft.peers():
        n.raft.prs[p].recent_active = False  # no peer was heard from
    for _ in range(4):
        n.tick()
    assert n.raft.role == Role.LEADER
    n.tick()  # it steps down
    assert n.raft.role != Role.LEADER


def test_a_snapshot_in_flight_bounds_a_leaders_inert_ticks() -> None:
    n, _st = make_leader(election_tick=10, heartbeat_tick=9, check_quorum=False)
    pr = n.raft.prs["n2"]
    pr.become_snapshot(5)
    pr.snapshot_ticks = 7
    assert n.raft.inert_ticks() == 2
    before = fingerprint(n)
    n.tick()
    n.tick()
    assert fingerprint(n) == before
    n.tick()  # the snapshot's retry: probe again
    assert fingerprint(n) != before


def test_a_node_that_cannot_campaign_has_only_inert_ticks() -> None:
    """A joining node (no configuration yet, so not a voter) never campaigns."""
    n, _st = node(voters=())
    assert n.raft.inert_ticks() >= 1 << 20
    before = fingerprint(n)
    for _ in range(100):
        n.tick()
    assert fingerprint(n) == before


def test_inputs_change_the_answer() -> None:
    """A heartbeat from a leader restarts the election timer: more inert ticks than before."""
    n, st = follower()
    for _ in range(5):
        n.tick()
    k = n.raft.inert_ticks()
    n.step(Message(MT.HEARTBEAT, to="n1", frm="n2", term=1))
    drain(n, st)
    assert n.raft.inert_ticks() > k
