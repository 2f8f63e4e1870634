"""A voter whose storage is new recovers before it votes (rkv.raft.recovery, issue 20).

The scenario of the issue: a write is acknowledged by A and B while C is cut off; A and B
lose power; B's disk is replaced and B restarts under its old id; C's partition heals. A B
that votes as if it had never run elects C, without the write. With recovery, B refuses to
vote until it has heard from enough voters and caught up with a leader of their term: the
cluster waits for A, then serves the write.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterator

import pytest

from rkv.raft import core as core_mod
from rkv.raft import recovery as recovery_mod
from rkv.raft.config import Config
from rkv.raft.rawnode import RawNode
from rkv.raft.recovery import needed
from rkv.raft.storage import MemoryStorage
from rkv.raft.types import Entry, HardState, Message, MessageType, Role

from .cluster import Cluster, NodeBox, drain, make_leader, node

MT = MessageType
NEW = HardState(recovering=True)


def replace_disk(c: Cluster, i: str) -> None:
    """Node i restarts with a new, empty storage (a bootstrap member's new data dir)."""
    c.queue = deque(m for m in c.queue if m.to != i and m.frm != i)
    st = MemoryStorage(voters=c.ids, hard_state=NEW)
    c.boxes[i] = NodeBox(c._make(i, st, c.ids.index(i)), st)


@pytest.fixture
def trusting(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The bug the guard prevents: a new storage votes at once, as if it had never run."""
    init = core_mod.Raft.__init__

    def patched(self: core_mod.Raft, *a: object, **kw: object) -> None:
        init(self, *a, **kw)  # type: ignore[arg-type]
        self.recovery = None

    monkeypatch.setattr(core_mod.Raft, "__init__", patched)
    yield


@pytest.mark.parametrize(
    ("n", "answers"), [(1, 1), (2, 1), (3, 2), (4, 2), (5, 3), (6, 3), (7, 4), (9, 5)]
)
def test_answers_needed_meet_every_majority(n: int, answers: int) -> None:
    assert needed(n) == answers
    # the answering voters and any majority that includes the recovering one share a node
    others, majority = n - 1, n // 2 + 1
    assert answers + (majority - 1) > others or n == 1


def issue_scenario(c: Cluster) -> None:
    """A (n1) leads, C (n3) is cut off, `precious` is acknowledged by A and B (n2), then A
    is down (cut off) and B's disk is replaced; C's partition heals."""
    c.elect("n1")
    c.isolate("n3")
    c.propose("n1", b"precious")
    assert b"precious" in c.applied_data("n2")
    c.heal()
    c.isolate("n1")  # A lost power
    replace_disk(c, "n2")


def test_replaced_disk_does_not_elect_a_leader_without_the_write() -> None:
    c = Cluster(3, pre_vote=False)
    issue_scenario(c)
    c.tick_all(200)
    assert c["n2"].status().recovering
    assert c.sent(MT.RECOVER), "B asked the others for their terms"
    # C campaigned, B refused: no leader, so nothing answers "not found"
    assert c.leader() is None
    assert c["n3"].status().term > 1
    c.heal()  # A is back
    for _ in range(400):
        c.tick_all(1)
        if c.leader() is not None and not c["n2"].status().recovering:
            break
    leader = c.leader()
    assert leader is not None
    for i in c.ids:
        assert b"precious" in c.applied_data(i), i
    assert not c["n2"].status().recovering


def test_without_recovery_the_write_is_lost(trusting: None) -> None:
    """The test above can fail: a B that trusts its new storage elects C without the write."""
    c = Cluster(3, pre_vote=False)
    issue_scenario(c)
    c.tick_all(200)
    assert c.leader() in ("n2", "n3")
    assert not any(b"precious" in c.applied_data(i) for i in ("n2", "n3"))


def test_a_fresh_cluster_recovers_in_one_round_trip() -> None:
    c = Cluster(3)
    for i in c.ids:
        replace_disk(c, i)  # every store is new
    assert all(c[i].status().recovering for i in c.ids)
    c["n1"].campaign()
    c.stabilize()
    assert c.leader() is None, "a recovering node does not campaign"
    c.tick_all(1)  # RECOVER out, answers back: every term is 0
    assert not any(c[i].status().recovering for i in c.ids)
    hs = [b.storage.initial_state()[0] for b in c.boxes.values()]
    assert not any(h.recovering for h in hs), "the cleared flag is persisted"
    c.elect("n1")


def recovering_n1(seed: int = 0) -> tuple[RawNode, MemoryStorage]:
    n, st = node(hs=NEW, seed=seed)
    n.tick()  # sends RECOVER
    out = drain(n, st)
    assert sorted(m.to for m in out if m.type == MT.RECOVER) == ["n2", "n3"]
    return n, st


def answer(frm: str, term: int, nonce: bytes, commit: int = 0) -> Message:
    return Message(MT.RECOVER_RESP, to="n1", frm=frm, term=term, commit=commit, context=nonce)


def nonce_of(n: RawNode) -> bytes:
    rec = n.raft.recovery
    assert rec is not None
    return rec.nonce


STALE_INPUTS = [
    pytest.param(Message(MT.APPEND, "n1", "n2", term=3, index=0, log_term=0), id="append"),
    pytest.param(Message(MT.HEARTBEAT, "n1", "n2", term=3), id="heartbeat"),
    pytest.param(Message(MT.VOTE, "n1", "n2", term=3, index=9, log_term=3), id="vote"),
    pytest.param(Message(MT.PRE_VOTE, "n1", "n2", term=3, index=9, log_term=3), id="pre-vote"),
]


@pytest.mark.parametrize("msg", STALE_INPUTS)
def test_before_it_knows_the_term_it_answers_nothing(msg: Message) -> None:
    """A leader its earlier self had deposed could count an ack (a term it forgot)."""
    n, st = recovering_n1()
    n.step(msg)
    assert drain(n, st) == []
    assert n.status().term == 0


def test_answers_with_another_nonce_do_not_count() -> None:
    n, _st = recovering_n1()
    n.step(answer("n2", 0, b"old-life"))
    n.step(answer("n3", 0, b"old-life"))
    assert n.status().recovering
    n.step(answer("n2", 0, nonce_of(n)))
    assert n.status().recovering, "one answer of two needed"
    n.step(answer("n3", 0, nonce_of(n)))
    assert not n.status().recovering, "every voter is in term 0: nothing was ever elected"


def test_knowing_the_term_it_follows_but_does_not_vote_until_caught_up() -> None:
    n, st = recovering_n1()
    nonce = nonce_of(n)
    n.step(answer("n2", 5, nonce, commit=3))  # n2 leads term 5 and committed up to 3
    n.step(answer("n3", 4, nonce))
    drain(n, st)
    assert n.status().term == 5 and n.status().recovering
    n.step(Message(MT.VOTE, "n1", "n3", term=6, index=9, log_term=5))
    out = drain(n, st)
    assert [(m.type, m.reject) for m in out] == [(MT.VOTE_RESP, True)]
    for _ in range(100):
        n.tick()
    assert n.status().role == Role.FOLLOWER, "no campaign while recovering"
    ents = (Entry(4, 1), Entry(5, 2), Entry(5, 3))
    n.step(Message(MT.APPEND, "n1", "n2", term=6, index=0, log_term=0, entries=ents[:2], commit=3))
    out = drain(n, st)
    assert [(m.type, m.index) for m in out] == [(MT.APPEND_RESP, 2)], "it acks what it holds"
    assert n.status().recovering, "committed 2 < 3"
    n.step(Message(MT.APPEND, "n1", "n2", term=6, index=2, log_term=5, entries=ents[2:], commit=3))
    drain(n, st)
    assert not n.status().recovering
    assert not st.initial_state()[0].recovering


def test_a_stale_leader_answer_does_not_set_the_target() -> None:
    n, st = recovering_n1()
    nonce = nonce_of(n)
    n.step(answer("n3", 3, nonce, commit=7))  # a leader of term 3, but n2 is at term 5
    n.step(answer("n2", 5, nonce))
    assert n.raft.recovery is not None and n.raft.recovery.target() is None
    n.step(Message(MT.APPEND, "n1", "n3", term=3, index=0, log_term=0, commit=0))
    out = drain(n, st)
    assert [(m.type, m.reject) for m in out] == [(MT.APPEND_RESP, True)], "term 3 < 5"


def test_restart_while_recovering_starts_over() -> None:
    n, st = recovering_n1()
    n.step(answer("n2", 5, nonce_of(n)))
    n.step(answer("n3", 5, nonce_of(n)))
    drain(n, st)
    assert st.initial_state()[0] == HardState(term=5, recovering=True)
    again = RawNode(Config(id="n1", voters=("n1", "n2", "n3")), st, random.Random(1))
    assert again.status().recovering and again.status().term == 5
    assert again.raft.recovery is not None and not again.raft.recovery.knows_term


@pytest.mark.parametrize(
    ("voters", "recovering"),
    [(("n1",), False), (("n2", "n3"), False), (("n1", "n2"), True), (("n1", "n2", "n3"), True)],
    ids=["only-voter", "not-a-voter", "two-voters", "three-voters"],
)
def test_who_needs_to_recover(voters: tuple[str, ...], recovering: bool) -> None:
    n, _st = node(voters=voters, hs=NEW)
    assert n.status().recovering is recovering


def test_the_leader_forgets_what_it_knew_the_new_log_to_match() -> None:
    """Else it would ignore the new log's rejections as stale, and it would never catch up
    (found by the simulator: `rkv sim --disk-replace`, liveness)."""
    leader, st = make_leader(entries=[Entry(1, i) for i in range(1, 6)], term=1)
    leader.step(Message(MT.APPEND_RESP, "n1", "n2", term=2, index=6))
    assert leader.raft.prs["n2"].match == 6
    leader.step(Message(MT.RECOVER, "n1", "n2", term=0, context=b"n"))
    out = drain(leader, st)
    assert leader.raft.prs["n2"].match == 0
    resp = [m for m in out if m.type == MT.RECOVER_RESP]
    assert [(m.to, m.term, m.context) for m in resp] == [("n2", 2, b"n")]
    leader.step(Message(MT.APPEND_RESP, "n1", "n2", term=2, index=6, reject=True, reject_hint=0))
    out = drain(leader, st)
    assert [(m.type, m.index) for m in out if m.to == "n2"] == [(MT.APPEND, 0)]


# -- why each rule: a deposed leader and a replaced disk ---------------------------------------


def no_drop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before it knows the term, it handles messages like anyone (it still does not vote)."""
    monkeypatch.setattr(recovery_mod.Recovery, "knows_term", property(lambda self: True))


def one_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """One answer is enough to know the term."""
    monkeypatch.setattr(recovery_mod, "needed", lambda n: 1)


def deposed_leader_and_replaced_disk(c: Cluster) -> None:
    """n1 leads term 1 and is cut off (its ticks stop, so it keeps leading); n3 is elected
    in term 3 with n2's vote and commits `y` with n2; n2's disk is replaced; n2 can reach
    only n1, which proposes `x`."""
    c.elect("n1")
    c.isolate("n1")
    c.elect("n3")  # term 2
    c.propose("n3", b"y")
    assert b"y" in c.applied_data("n2")
    replace_disk(c, "n2")
    c.heal()
    c.isolate("n3")
    c.tick("n2")  # RECOVER to n1 and n3; only n1 can answer
    c.stabilize()
    c.propose("n1", b"x")
    for _ in range(30):
        c.tick("n2")
        c.stabilize()


@pytest.mark.parametrize(
    "variant", [None, no_drop, one_answer], ids=["real", "no-drop", "one-answer"]
)
def test_a_replaced_disk_never_helps_a_deposed_leader_commit(
    monkeypatch: pytest.MonkeyPatch, variant: Callable[[pytest.MonkeyPatch], None] | None
) -> None:
    if variant is not None:
        variant(monkeypatch)
    c = Cluster(3, pre_vote=False, check_quorum=False)  # a leader cut off keeps leading
    deposed_leader_and_replaced_disk(c)
    committed_x = b"x" in c.applied_data("n1")
    # `y` is committed (n3 and n2's earlier self): `x` at the same index would be a second one
    assert committed_x is (variant is not None)
    if committed_x:
        n1 = {e.index: e for e in c.boxes["n1"].applied}
        n3 = {e.index: e for e in c.boxes["n3"].applied}
        clash = [i for i in n1 if i in n3 and n1[i] != n3[i]]
        assert clash, "two different entries committed at one index"
    else:
        assert c["n2"].status().recovering and c["n2"].status().last_index == 0


def test_a_recovering_node_takes_no_commit_index_from_heartbeats() -> None:
    """A leader may still hold the match our earlier self acked: min(commit, match) in its
    heartbeat says nothing about the new log, whose entries may be another leader's."""
    n, st = recovering_n1()
    nonce = nonce_of(n)
    n.step(answer("n2", 3, nonce))
    n.step(answer("n3", 3, nonce))
    ents = (Entry(3, 1), Entry(3, 2), Entry(3, 3))
    n.step(Message(MT.APPEND, "n1", "n3", term=3, index=0, log_term=0, entries=ents, commit=0))
    drain(n, st)
    assert n.status().last_index == 3 and n.status().commit == 0
    n.step(Message(MT.HEARTBEAT, "n1", "n2", term=4, commit=3))  # n2 believes n1 holds 3
    out = drain(n, st)
    assert [m.type for m in out] == [MT.HEARTBEAT_RESP]
    assert n.status().commit == 0, "committed entries n2 may not have"


def test_once_caught_up_it_moves_to_the_term_of_the_leader_that_named_the_target() -> None:
    n, st = recovering_n1()
    nonce = nonce_of(n)
    n.step(answer("n2", 5, nonce))
    n.step(answer("n3", 5, nonce))
    n.step(answer("n3", 7, nonce, commit=1))  # n3 now leads term 7, committed up to 1
    ents = (Entry(5, 1),)
    n.step(Message(MT.APPEND, "n1", "n2", term=5, index=0, log_term=0, entries=ents, commit=1))
    drain(n, st)
    assert not n.status().recovering
    assert n.status().term == 7, "a term-5 leader's heartbeats are refused from now on"


def test_a_recovering_node_takes_the_commit_of_an_append_that_overlaps_its_commit() -> None:
    """Heartbeats bring it no commit index, so an APPEND whose previous index lies below what
    it committed may be the only message that carries the leader's (sim seed 600417665)."""
    n, st = recovering_n1()
    nonce = nonce_of(n)
    n.step(answer("n2", 3, nonce))
    n.step(answer("n3", 3, nonce))
    ents = (Entry(3, 1), Entry(3, 2), Entry(3, 3))
    n.step(Message(MT.APPEND, "n1", "n2", term=3, index=0, log_term=0, entries=ents, commit=2))
    drain(n, st)
    assert n.status().commit == 2
    n.step(Message(MT.APPEND, "n1", "n2", term=3, index=1, log_term=3, entries=ents[1:], commit=3))
    drain(n, st)
    assert n.status().commit == 3
