"""Log replication and commit: Figure 2 (AppendEntries), §5.3, §5.4.2 (Figure 8), flow control."""

from __future__ import annotations

import pytest

from rkv.raft.errors import LogSafetyError
from rkv.raft.progress import ProgressState
from rkv.raft.types import Entry, HardState, Message, MessageType, Role

from .cluster import Cluster, drain, make_leader, node, terms_log

MT = MessageType


def append(
    prev: int, prev_term: int, ents: list[Entry], commit: int = 0, term: int = 3, frm: str = "n2"
) -> Message:
    return Message(
        MT.APPEND,
        to="n1",
        frm=frm,
        term=term,
        index=prev,
        log_term=prev_term,
        entries=tuple(ents),
        commit=commit,
    )


def test_replicates_and_commits_on_all_nodes() -> None:
    c = Cluster(5)
    c.elect("n1")
    for k in range(20):
        c["n1"].propose(b"v%d" % k)
    c.stabilize()
    want = [b"v%d" % k for k in range(20)]
    for i in c.ids:
        assert c.applied_data(i) == want
        assert c[i].status().commit == 21


def test_applied_entries_are_in_order_and_exactly_once() -> None:
    c = Cluster(3)
    c.elect("n1")
    for k in range(30):
        c["n1"].propose(b"%d" % k)
        if k % 7 == 0:
            c.stabilize()
    c.stabilize()
    for i in c.ids:
        idx = [e.index for e in c.boxes[i].applied]
        assert idx == list(range(1, 32))


def test_proposals_between_readies_coalesce_into_one_append_per_follower() -> None:
    c = Cluster(3)
    c.elect("n1")
    for k in range(10):
        c["n1"].propose(b"x%d" % k)
    rd = c["n1"].ready()
    apps = [m for m in rd.messages if m.type == MT.APPEND]
    assert sorted(m.to for m in apps) == ["n2", "n3"]
    assert all(len(m.entries) == 10 for m in apps)
    assert rd.entries == apps[0].entries  # sent before being durable (thesis §10.2.1)
    c["n1"].advance(rd)


def test_propose_on_follower_raises_with_leader_hint() -> None:
    from rkv.raft.errors import ProposalDropped

    c = Cluster(3)
    c.elect("n1")
    with pytest.raises(ProposalDropped) as ei:
        c["n2"].propose(b"x")
    assert ei.value.leader == "n1"


def test_leader_counts_itself_only_after_advance() -> None:
    c = Cluster(3)
    c.elect("n1")
    leader = c["n1"]
    idx = leader.propose(b"x")
    rd = leader.ready()  # entries handed out, not yet "durable"
    for m in rd.messages:
        c["n2"].step(m) if m.to == "n2" else None
    c.process("n2")
    acks = [m for m in c.queue if m.to == "n1"]
    c.queue.clear()
    for m in acks:
        leader.step(m)
    # n2 has it durably, n1 does not yet: 1 of 3 is no majority
    assert leader.status().commit == idx - 1
    c.boxes["n1"].storage.append(rd.entries)
    leader.advance(rd)
    assert leader.status().commit == idx


def test_single_node_commits_only_after_persisting() -> None:
    n, st = node(voters=("n1",))
    n.campaign()
    drain(n, st)
    idx = n.propose(b"a")
    rd = n.ready()
    assert rd.entries[-1].index == idx and rd.committed_entries == ()
    assert rd.hard_state is None or rd.hard_state.commit < idx
    st.append(rd.entries)
    n.advance(rd)
    rd = n.ready()
    assert [e.index for e in rd.committed_entries] == [idx]
    assert rd.hard_state is not None and rd.hard_state.commit == idx


def test_append_response_is_a_persisted_message() -> None:
    n, _ = node(hs=HardState(term=3))
    n.step(append(0, 0, [Entry(3, 1, b"a")]))
    rd = n.ready()
    assert rd.messages == ()
    assert [m.type for m in rd.persisted_messages] == [MT.APPEND_RESP]
    assert rd.entries == (Entry(3, 1, b"a"),)


# -- follower log rules -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prev", "prev_term", "accepted"),
    [(0, 0, True), (2, 2, True), (3, 2, True), (2, 1, False), (4, 2, False), (3, 3, False)],
)
def test_consistency_check(prev: int, prev_term: int, accepted: bool) -> None:
    n, st = node(entries=terms_log([1, 2, 2]), hs=HardState(term=3))
    n.step(append(prev, prev_term, [Entry(3, prev + 1)]))
    (resp,) = drain(n, st)
    assert resp.reject is (not accepted)
    if accepted:
        assert resp.index == prev + 1
        assert n.status().last_index == prev + 1


def test_conflict_truncates_suffix_and_appends() -> None:
    n, st = node(entries=terms_log([1, 1, 2, 2, 2]), hs=HardState(term=3))
    n.step(append(2, 1, [Entry(3, 3, b"new")]))
    drain(n, st)
    assert n.status().last_index == 3
    assert st.entries(1, 4) == [Entry(1, 1), Entry(1, 2), Entry(3, 3, b"new")]


def test_stale_matching_append_does_not_truncate() -> None:
    n, st = node(entries=terms_log([1, 1, 1, 1, 1]), hs=HardState(term=1))
    # a delayed APPEND carrying only entries 2..3, which we already have
    n.step(append(1, 1, [Entry(1, 2), Entry(1, 3)], term=1))
    (resp,) = drain(n, st)
    assert not resp.reject and resp.index == 3  # acks what was sent, not its log length
    assert n.status().last_index == 5


def test_truncating_committed_entry_fails_loudly() -> None:
    n, _st = node(entries=terms_log([1, 1, 1]), hs=HardState(term=1, commit=3))
    with pytest.raises(LogSafetyError):
        n.raft.log.maybe_append(1, 1, 3, [Entry(2, 2)])


@pytest.mark.parametrize(
    ("leader_commit", "ents_to", "want_commit"),
    [(10, 3, 3), (2, 3, 2), (3, 3, 3), (0, 3, 0)],
)
def test_follower_commit_is_min_of_leader_commit_and_last_new(
    leader_commit: int, ents_to: int, want_commit: int
) -> None:
    n, st = node(entries=terms_log([1, 1, 1, 1, 1]), hs=HardState(term=1))
    # the message only covers entries 1..ents_to; our entries 4..5 are not vouched for
    n.step(append(0, 0, terms_log([1] * ents_to), commit=leader_commit, term=1))
    drain(n, st)
    assert n.status().commit == want_commit


def test_append_below_commit_acks_commit() -> None:
    n, st = node(entries=terms_log([1, 1, 1]), hs=HardState(term=1, commit=3))
    n.step(append(1, 1, [Entry(1, 2)], term=1))
    (resp,) = drain(n, st)
    assert not resp.reject and resp.index == 3


FOLLOWER = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]


@pytest.mark.parametrize(
    ("prev", "prev_term", "commit", "hint", "hint_term"),
    [
        (12, 8, 0, 10, 0),  # follower shorter: its last index, no term
        (10, 8, 0, 8, 6),  # conflicting term 6 starts at 8
        (7, 7, 0, 6, 5),  # conflicting term 5 starts at 6
        (5, 5, 0, 4, 4),
        (3, 2, 0, 1, 1),
        (9, 7, 8, 9, 6),  # search never goes at or below commit
    ],
)
def test_reject_hint_is_first_index_of_conflicting_term(
    prev: int, prev_term: int, commit: int, hint: int, hint_term: int
) -> None:
    n, st = node(entries=terms_log(FOLLOWER), hs=HardState(term=8, commit=commit))
    n.step(append(prev, prev_term, [], term=8))
    (resp,) = drain(n, st)
    assert resp.reject and resp.index == prev
    assert (resp.reject_hint, resp.log_term) == (hint, hint_term)


LEADER = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]


@pytest.mark.parametrize(
    ("hint", "hint_term", "want_next"),
    [
        (5, 0, 6),  # follower's log ends at 5
        (6, 5, 8),  # we have term 5 up to 7: follower matches there
        (4, 3, 4),  # we have no term 3: skip the follower's whole term
        (2, 1, 4),  # term 1 up to 3 matches
        (8, 6, 10),  # clamped to the rejected index
    ],
)
def test_leader_skips_whole_terms_on_reject(hint: int, hint_term: int, want_next: int) -> None:
    n, _ = make_leader(terms_log(LEADER), term=6)
    pr = n.raft.prs["n2"]
    assert pr.next == 11 and pr.state == ProgressState.PROBE
    n.step(
        Message(
            MT.APPEND_RESP,
            to="n1",
            frm="n2",
            term=7,
            index=10,
            reject=True,
            reject_hint=hint,
            log_term=hint_term,
        )
    )
    assert pr.next == want_next


def test_divergent_follower_repaired_in_few_round_trips() -> None:
    # n3 was a leader of term 2 that appended 40 entries nobody else got
    c = Cluster(3, pre_vote=False, check_quorum=False)
    c.elect("n3")
    for k in range(5):
        c.propose("n3", b"common%d" % k)
    c.isolate("n3")
    for k in range(40):
        c["n3"].propose(b"lost%d" % k)
    c.stabilize()
    c.elect("n1")
    for k in range(50):
        c["n1"].propose(b"ok%d" % k)
    c.stabilize()
    c.elect("n2")  # a leader whose log is longer than n3's and that knows nothing of n3
    c.heal()
    c.delivered.clear()
    c.tick_all(3)
    rejects = [m for m in c.sent(MT.APPEND_RESP) if m.frm == "n3" and m.reject]
    assert 1 <= len(rejects) <= 2
    assert c.boxes["n3"].storage.last_index() == c.boxes["n1"].storage.last_index()
    assert c.applied_data("n3") == c.applied_data("n1")


def test_stale_append_response_ignored() -> None:
    n, _st = make_leader(terms_log([1, 1]), term=1)
    n.step(Message(MT.APPEND_RESP, to="n1", frm="n2", term=2, index=3))
    pr = n.raft.prs["n2"]
    assert pr.match == 3 and pr.state == ProgressState.REPLICATE
    n.step(Message(MT.APPEND_RESP, to="n1", frm="n2", term=2, index=2))
    assert pr.match == 3
    # a stale rejection (for prev below match) must not move next backwards
    nxt = pr.next
    n.step(Message(MT.APPEND_RESP, to="n1", frm="n2", term=2, index=2, reject=True))
    assert pr.match == 3 and pr.next == nxt and pr.state == ProgressState.REPLICATE


def test_match_comes_from_what_was_sent() -> None:
    c = Cluster(3)
    c.elect("n1")
    c.propose("n1", b"a")
    pr = c["n1"].raft.prs["n2"]
    assert pr.match == 2 == c["n1"].status().last_index


# -- commit rule ---------------------------------------------------------------------------


def test_figure8_earlier_term_entry_not_committed_by_counting_replicas() -> None:
    # n1 has index 2 from term 2; it is elected at term 4 and appends its no-op at 3
    n, _st = make_leader(terms_log([1, 2]), term=3)
    assert n.status().term == 4 and n.status().last_index == 3
    n.step(Message(MT.APPEND_RESP, to="n1", frm="n2", term=4, index=2))
    # index 2 is on a majority (n1, n2) but is of term 2: not committed
    assert n.status().commit == 0
    n.step(Message(MT.APPEND_RESP, to="n1", frm="n2", term=4, index=3))
    assert n.status().commit == 3  # committing 3 commits 2 indirectly


def test_figure8_scenario_in_cluster() -> None:
    """Figure 8 (a)-(e): an entry of an earlier term stored on a majority is not committed by
    counting replicas, and indeed may be overwritten by a later leader."""
    c = Cluster(5, pre_vote=False, check_quorum=False, max_size_per_msg=1)
    c.elect("n1")  # term 1, no-op 1@1 everywhere
    # (a) n1 replicates index 2 (term 1) to n2 only
    c.partition(["n1", "n2"], ["n3", "n4", "n5"])
    c.propose("n1", b"a")
    # (b) n5 is elected at term 2 by n3, n4; its no-op 2@2 stays on n5
    c.heal()
    c.isolate("n1")
    c.cut.update({("n5", "n2"), ("n2", "n5")})
    c.filter = lambda m: not (m.type == MT.APPEND and m.frm == "n5")
    c.elect("n5")
    assert c["n5"].status().term == 2
    # (c) n1 is elected at term 3 and gets index 2 onto n3: a majority (n1, n2, n3) holds it,
    # but its own no-op (index 3) reaches nobody
    c.heal()
    c.filter = None
    c.isolate("n5")
    c.tick_all(1)  # n1's heartbeat meets term 2: n1 steps down
    assert c["n1"].status().role == Role.FOLLOWER

    def hold_index3(m: Message) -> bool:
        # a probe that the follower will reject anyway (it lacks index 2) may pass
        lacks2 = c.boxes[m.to].storage.last_index() < 2
        return not (m.type == MT.APPEND and m.frm == "n1" and m.entries[-1:] and not lacks2)

    c.filter = hold_index3
    c.elect("n1")
    assert c["n1"].status().term == 3
    for i in ("n1", "n2", "n3"):
        assert c.boxes[i].storage.term(2) == 1
    assert c["n1"].status().commit == 1  # not committed: not of the current term
    # (d) n1 fails; n5 (last term 2) is elected by n2, n3, n4 and overwrites index 2
    c.filter = None
    c.heal()
    c.isolate("n1")
    c.tick_all(1)  # n5's heartbeat meets term 3: n5 steps down
    c.elect("n5")
    for i in ("n2", "n3", "n4", "n5"):
        assert c.boxes[i].storage.term(2) == 2
        assert b"a" not in c.applied_data(i)
    assert c["n5"].status().commit >= 3


# -- flow control --------------------------------------------------------------------------


def test_probe_state_sends_one_append_until_response() -> None:
    n, st = make_leader(terms_log([1, 1]), term=1)
    assert n.raft.prs["n2"].is_paused()  # the first probe is in flight
    n.propose(b"a")
    n.propose(b"b")
    msgs = drain(n, st)
    assert not [m for m in msgs if m.type == MT.APPEND and m.to == "n2"]
    # a heartbeat response unpauses the probe
    n.step(Message(MT.HEARTBEAT_RESP, to="n1", frm="n2", term=2))
    msgs = drain(n, st)
    assert len([m for m in msgs if m.type == MT.APPEND and m.to == "n2"]) == 1


def test_replicate_state_inflight_window_capped() -> None:
    n, st = make_leader(max_inflight_msgs=2, max_size_per_msg=1)
    drain(n, st)
    n.step(Message(MT.APPEND_RESP, to="n1", frm="n2", term=1, index=1))
    pr = n.raft.prs["n2"]
    assert pr.state == ProgressState.REPLICATE
    for k in range(5):
        n.propose(b"e%d" % k)
    msgs = [m for m in drain(n, st) if m.type == MT.APPEND and m.to == "n2"]
    assert [len(m.entries) for m in msgs] == [1, 1]  # 1 entry per message, 2 in flight
    assert pr.is_paused()
    n.step(Message(MT.APPEND_RESP, to="n1", frm="n2", term=1, index=msgs[0].entries[-1].index))
    msgs = [m for m in drain(n, st) if m.type == MT.APPEND and m.to == "n2"]
    assert len(msgs) == 1 and msgs[0].entries[0].index == 4


def test_bytes_per_message_cap() -> None:
    n, st = make_leader(max_size_per_msg=100, max_inflight_msgs=100)
    drain(n, st)
    n.step(Message(MT.APPEND_RESP, to="n1", frm="n2", term=1, index=1))
    for _ in range(7):
        n.propose(b"x" * 30)  # 46 bytes each: two fit in 100
    n.propose(b"y" * 500)  # bigger than the cap alone: still sent, alone
    msgs = [m for m in drain(n, st) if m.type == MT.APPEND and m.to == "n2"]
    assert [len(m.entries) for m in msgs] == [2, 2, 2, 1, 1]
    for m in msgs:
        assert len(m.entries) == 1 or sum(e.size() for e in m.entries) <= 100
    got = [e.index for m in msgs for e in m.entries]
    assert got == list(range(2, 10))


def test_heartbeat_commit_is_min_of_match_and_commit() -> None:
    c = Cluster(3)
    c.elect("n1")
    c.isolate("n3")
    c.propose("n1", b"a")
    c.heal()
    c.delivered.clear()
    c.tick("n1")
    rd = c["n1"].ready()
    hb = {m.to: m.commit for m in rd.messages if m.type == MT.HEARTBEAT}
    assert hb == {"n2": 2, "n3": 1}
    c["n1"].advance(rd)


def test_full_window_freed_by_heartbeat_response() -> None:
    n, st = make_leader(max_inflight_msgs=1, max_size_per_msg=1)
    drain(n, st)
    n.step(Message(MT.APPEND_RESP, to="n1", frm="n2", term=1, index=1))
    n.propose(b"a")
    n.propose(b"b")
    drain(n, st)
    pr = n.raft.prs["n2"]
    assert pr.is_paused()
    n.step(Message(MT.HEARTBEAT_RESP, to="n1", frm="n2", term=1))
    assert not pr.is_paused()


def test_lost_appends_recovered_by_probe() -> None:
    c = Cluster(3)
    c.elect("n1")
    c.filter = lambda m: not (m.type == MT.APPEND and m.to == "n3")
    for k in range(5):
        c.propose("n1", b"%d" % k)
    c.filter = None
    c.tick_all(3)
    assert c.applied_data("n3") == c.applied_data("n1")


def test_restart_from_storage_redelivers_after_applied() -> None:
    c = Cluster(3)
    c.elect("n1")
    for k in range(6):
        c.propose("n1", b"%d" % k)
    box = c.boxes["n2"]
    box.applied = box.applied[:4]  # the state machine had applied only up to index 4
    c.restart("n2")
    s = c["n2"].status()
    assert s.applied == 4 and s.commit >= 4 and s.term == 1 and s.vote == "n1"
    c.tick_all(2)
    assert [e.index for e in box.applied] == list(range(1, 8))


def test_restart_rejects_applied_beyond_commit() -> None:
    import random

    from rkv.raft.config import Config
    from rkv.raft.rawnode import RawNode

    _, st = node(entries=terms_log([1, 1]), hs=HardState(term=1, commit=1))
    with pytest.raises(ValueError):
        RawNode(Config(id="n1", voters=("n1", "n2", "n3"), applied=2), st, random.Random(0))


def test_leader_steps_down_on_higher_term_append_resp_reject() -> None:
    n, _st = make_leader(terms_log([1]), term=1)
    n.step(Message(MT.APPEND_RESP, to="n1", frm="n2", term=9, reject=True))
    assert n.status().role == Role.FOLLOWER and n.status().term == 9
