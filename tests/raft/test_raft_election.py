"""Elections, terms and votes: Figure 2 (RequestVote, Rules for Servers) and §5.2, §9.6, §6.4.1."""

from __future__ import annotations

import random

import pytest

from rkv.raft.config import Config
from rkv.raft.rawnode import RawNode
from rkv.raft.types import NONE, Entry, HardState, Message, MessageType, Role

from .cluster import Cluster, drain, node

MT = MessageType


def test_single_node_elects_itself_and_commits_noop() -> None:
    n, st = node(voters=("n1",))
    for _ in range(20):
        n.tick()
    drain(n, st)
    s = n.status()
    assert s.role == Role.LEADER and s.term == 1 and s.commit == 1
    assert st.entries(1, 2) == [Entry(term=1, index=1)]  # the no-op


@pytest.mark.parametrize("seed", range(8))
def test_election_timeout_is_randomized_in_T_2T(seed: int) -> None:
    n, _ = node(seed=seed, pre_vote=False, election_tick=10)
    ticks = 0
    while n.status().role == Role.FOLLOWER:
        n.tick()
        ticks += 1
        assert ticks < 20
    assert 10 <= ticks < 20


def test_timeouts_differ_across_seeds() -> None:
    seen = set()
    for seed in range(20):
        n, _ = node(seed=seed, pre_vote=False)
        t = 0
        while n.status().role == Role.FOLLOWER:
            n.tick()
            t += 1
        seen.add(t)
    assert len(seen) > 3


def test_candidate_increments_term_votes_for_itself_and_requests_votes() -> None:
    n, _st = node(pre_vote=False)
    n.campaign()
    rd = n.ready()
    assert rd.hard_state == HardState(term=1, vote="n1", commit=0)
    # the vote for ourselves must be durable before the requests leave
    assert rd.messages == ()
    assert sorted(m.to for m in rd.persisted_messages) == ["n2", "n3"]
    assert all(m.type == MT.VOTE and m.term == 1 for m in rd.persisted_messages)


def test_prevote_does_not_change_term_or_vote() -> None:
    n, _ = node(pre_vote=True)
    n.campaign()
    rd = n.ready()
    s = n.status()
    assert s.role == Role.PRE_CANDIDATE and s.term == 0 and s.vote == NONE
    assert rd.hard_state is None
    assert [m.type for m in rd.messages] == [MT.PRE_VOTE, MT.PRE_VOTE]
    assert all(m.term == 1 for m in rd.messages)


def vote_req(
    t: MessageType, term: int, index: int, log_term: int, frm: str = "n2", ctx: bytes = b""
) -> Message:
    return Message(t, to="n1", frm=frm, term=term, index=index, log_term=log_term, context=ctx)


LOG = [Entry(1, 1), Entry(2, 2)]  # our last (index, term) = (2, 2)


@pytest.mark.parametrize(
    ("cand_index", "cand_term", "granted"),
    [
        (2, 2, True),  # same log
        (3, 2, True),  # longer, same last term
        (1, 3, True),  # higher last term wins even if shorter
        (1, 2, False),  # shorter with same last term
        (5, 1, False),  # lower last term loses even if longer
        (0, 0, False),
    ],
)
def test_vote_only_for_up_to_date_candidate(cand_index: int, cand_term: int, granted: bool) -> None:
    n, st = node(entries=LOG, hs=HardState(term=2), pre_vote=False)
    n.step(vote_req(MT.VOTE, 3, cand_index, cand_term))
    msgs = drain(n, st)
    assert len(msgs) == 1 and msgs[0].type == MT.VOTE_RESP
    assert msgs[0].reject is (not granted)
    assert n.status().term == 3  # the higher term is adopted either way
    assert n.status().vote == ("n2" if granted else NONE)


def test_vote_at_most_once_per_term_but_repeatable_for_same_candidate() -> None:
    n, st = node(pre_vote=False)
    n.step(vote_req(MT.VOTE, 1, 0, 0, frm="n2"))
    n.step(vote_req(MT.VOTE, 1, 0, 0, frm="n3"))
    n.step(vote_req(MT.VOTE, 1, 0, 0, frm="n2"))  # duplicate request: grant again
    msgs = drain(n, st)
    assert [(m.to, m.reject) for m in msgs] == [("n2", False), ("n3", True), ("n2", False)]


def test_vote_response_is_persisted_message_and_vote_is_in_hard_state() -> None:
    n, _ = node(pre_vote=False)
    n.step(vote_req(MT.VOTE, 1, 0, 0))
    rd = n.ready()
    assert rd.messages == ()
    assert [m.type for m in rd.persisted_messages] == [MT.VOTE_RESP]
    assert rd.hard_state == HardState(term=1, vote="n2", commit=0)
    assert rd.must_sync


def test_vote_survives_restart() -> None:
    n, st = node(pre_vote=False)
    n.step(vote_req(MT.VOTE, 1, 0, 0, frm="n2"))
    drain(n, st)
    n2 = RawNode(Config(id="n1", voters=("n1", "n2", "n3"), pre_vote=False), st, random.Random(1))
    n2.step(vote_req(MT.VOTE, 1, 0, 0, frm="n3"))
    msgs = drain(n2, st)
    assert msgs[0].reject and n2.status().vote == "n2"


def test_higher_term_message_makes_leader_step_down() -> None:
    c = Cluster(3, check_quorum=False)
    c.elect("n1")
    c["n1"].step(Message(MT.APPEND_RESP, to="n1", frm="n2", term=5))
    s = c["n1"].status()
    assert s.role == Role.FOLLOWER and s.term == 5 and s.vote == NONE and s.leader == NONE


@pytest.mark.parametrize("mtype", [MT.APPEND, MT.HEARTBEAT, MT.VOTE, MT.PRE_VOTE, MT.SNAPSHOT])
def test_lower_term_requests_are_rejected_with_our_term_and_change_nothing(
    mtype: MessageType,
) -> None:
    n, st = node(entries=LOG, hs=HardState(term=3, vote="n3"), pre_vote=False)
    before = n.status()
    n.step(Message(mtype, to="n1", frm="n2", term=2, index=2, log_term=2))
    msgs = drain(n, st)
    assert len(msgs) == 1 and msgs[0].reject and msgs[0].term == 3 and msgs[0].to == "n2"
    assert n.status() == before


@pytest.mark.parametrize("mtype", [MT.APPEND_RESP, MT.VOTE_RESP, MT.HEARTBEAT_RESP])
def test_lower_term_responses_are_ignored(mtype: MessageType) -> None:
    n, st = node(entries=LOG, hs=HardState(term=3), pre_vote=False)
    before = n.status()
    n.step(Message(mtype, to="n1", frm="n2", term=2))
    assert drain(n, st) == [] and n.status() == before


def test_candidate_wins_with_majority_and_appends_noop() -> None:
    c = Cluster(5, pre_vote=False)
    c.elect("n3")
    s = c["n3"].status()
    assert s.term == 1 and s.last_index == 1 and s.commit == 1
    assert c.boxes["n3"].storage.entries(1, 2) == [Entry(term=1, index=1)]
    for i in c.ids:
        assert c[i].status().leader == "n3"


def test_candidate_loses_with_majority_reject() -> None:
    n, st = node(pre_vote=False)
    n.campaign()
    drain(n, st)
    n.step(Message(MT.VOTE_RESP, to="n1", frm="n2", term=1, reject=True))
    assert n.status().role == Role.CANDIDATE
    n.step(Message(MT.VOTE_RESP, to="n1", frm="n3", term=1, reject=True))
    assert n.status().role == Role.FOLLOWER and n.status().term == 1


def test_candidate_steps_down_on_append_from_same_term_leader() -> None:
    n, st = node(pre_vote=False)
    n.campaign()
    drain(n, st)
    n.step(Message(MT.APPEND, to="n1", frm="n2", term=1, index=0, log_term=0))
    s = n.status()
    assert s.role == Role.FOLLOWER and s.leader == "n2" and s.term == 1


def test_split_vote_then_new_election() -> None:
    n, st = node(pre_vote=False, election_tick=10)
    n.campaign()
    drain(n, st)
    for _ in range(20):
        n.tick()
    assert n.status().term == 2 and n.status().role == Role.CANDIDATE


# -- election timer resets (checklist: only on grant, leader contact, starting an election) --


def elapsed(n: RawNode) -> int:
    return n.raft.election_elapsed


def test_timer_not_reset_on_rejected_vote() -> None:
    n, st = node(entries=LOG, hs=HardState(term=2), pre_vote=False, check_quorum=False)
    for _ in range(5):
        n.tick()
    n.step(vote_req(MT.VOTE, 3, 1, 1))  # stale log: rejected
    drain(n, st)
    assert elapsed(n) == 5


def test_timer_reset_on_granted_vote() -> None:
    n, _st = node(pre_vote=False, check_quorum=False)
    for _ in range(5):
        n.tick()
    n.step(vote_req(MT.VOTE, 1, 0, 0))
    assert elapsed(n) == 0


def test_timer_reset_on_heartbeat_from_leader_only() -> None:
    n, _ = node(pre_vote=False)
    for _ in range(5):
        n.tick()
    n.step(Message(MT.HEARTBEAT_RESP, to="n1", frm="n2", term=0))
    assert elapsed(n) == 5
    n.step(Message(MT.HEARTBEAT, to="n1", frm="n2", term=1))
    assert elapsed(n) == 0 and n.status().leader == "n2"


def test_timer_not_reset_by_prevote_grant() -> None:
    n, st = node(pre_vote=True, check_quorum=False)
    for _ in range(5):
        n.tick()
    n.step(vote_req(MT.PRE_VOTE, 1, 0, 0))
    msgs = drain(n, st)
    assert msgs[0].type == MT.PRE_VOTE_RESP and not msgs[0].reject
    assert elapsed(n) == 5


# -- PreVote ------------------------------------------------------------------------------


def test_prevote_grant_does_not_change_term_and_response_carries_probe_term() -> None:
    n, st = node(entries=LOG, hs=HardState(term=2))
    n.step(vote_req(MT.PRE_VOTE, 3, 2, 2))
    msgs = drain(n, st)
    assert msgs == [Message(MT.PRE_VOTE_RESP, to="n2", frm="n1", term=3)]
    assert n.status().term == 2 and n.status().vote == NONE


def test_prevote_rejected_when_leader_heard_recently() -> None:
    n, st = node(entries=LOG, hs=HardState(term=2), check_quorum=False)
    n.step(Message(MT.HEARTBEAT, to="n1", frm="n3", term=2))
    drain(n, st)
    n.step(vote_req(MT.PRE_VOTE, 3, 2, 2))
    msgs = drain(n, st)
    assert msgs[0].reject and n.status().term == 2
    for _ in range(10):  # election_tick without hearing the leader
        n.tick()
    n.step(vote_req(MT.PRE_VOTE, 3, 2, 2))
    assert not drain(n, st)[0].reject


def test_prevote_rejected_for_stale_log() -> None:
    n, st = node(entries=LOG, hs=HardState(term=2))
    n.step(vote_req(MT.PRE_VOTE, 3, 1, 1))
    assert drain(n, st)[0].reject


def test_partitioned_node_with_prevote_does_not_disrupt_on_rejoin() -> None:
    c = Cluster(3)
    c.elect("n1")
    c.isolate("n3")
    c.tick_all(50)
    # n3 kept pre-campaigning without bumping its term
    assert c["n3"].status().term == 1
    assert c["n3"].status().role == Role.PRE_CANDIDATE
    c.heal()
    c.tick_all(5)
    assert c.leader() == "n1" and c["n1"].status().term == 1
    assert c["n3"].status().leader == "n1"


def test_without_prevote_partitioned_node_inflates_term() -> None:
    c = Cluster(3, pre_vote=False, check_quorum=False)
    c.elect("n1")
    c.isolate("n3")
    c.tick_all(50)
    assert c["n3"].status().term > 1


def test_prevote_majority_then_real_election() -> None:
    c = Cluster(3)
    c.elect("n2")
    assert c["n2"].status().term == 1
    types = [m.type for m in c.delivered]
    assert types.index(MT.PRE_VOTE) < types.index(MT.VOTE)


# -- CheckQuorum --------------------------------------------------------------------------


def test_leader_steps_down_without_quorum_activity() -> None:
    c = Cluster(3)
    c.elect("n1")
    c.isolate("n1")
    c.tick("n1", 10)  # first check: followers were active during the election
    c.tick("n1", 10)
    assert c["n1"].status().role == Role.FOLLOWER


def test_leader_stays_with_quorum_activity() -> None:
    c = Cluster(3)
    c.elect("n1")
    c.isolate("n3")
    c.tick_all(100)
    assert c.leader() == "n1" and c["n1"].status().term == 1


def test_follower_in_lease_ignores_vote_requests_with_check_quorum() -> None:
    n, st = node(entries=LOG, hs=HardState(term=2), pre_vote=False)
    n.step(Message(MT.HEARTBEAT, to="n1", frm="n3", term=2))
    drain(n, st)
    n.step(vote_req(MT.VOTE, 3, 5, 2))
    assert drain(n, st) == []
    assert n.status().term == 2 and n.status().leader == "n3"


def test_follower_in_lease_grants_transfer_vote() -> None:
    n, st = node(entries=LOG, hs=HardState(term=2), pre_vote=False)
    n.step(Message(MT.HEARTBEAT, to="n1", frm="n3", term=2))
    drain(n, st)
    n.step(vote_req(MT.VOTE, 3, 5, 2, ctx=b"transfer"))
    msgs = drain(n, st)
    assert msgs[-1].type == MT.VOTE_RESP and not msgs[-1].reject
    assert n.status().term == 3 and n.status().vote == "n2"


def test_non_voter_never_campaigns() -> None:
    n, _ = node(id="n9", voters=("n1", "n2", "n3"))
    for _ in range(100):
        n.tick()
    assert n.status().role == Role.FOLLOWER and n.status().term == 0


def test_messages_for_other_ids_are_ignored() -> None:
    n, _ = node(pre_vote=False)
    n.step(Message(MT.VOTE, to="n2", frm="n3", term=5))
    n.step(Message(MT.VOTE, to="n1", frm="n1", term=5))
    assert n.status().term == 0 and not n.has_ready()
    # a peer unknown to our (possibly stale) configuration is heard, by term
    n.step(Message(MT.VOTE, to="n1", frm="zz", term=5))
    assert n.status().term == 5
