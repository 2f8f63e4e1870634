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
from rkv.raft.recovery import ANSWER_MARK, needed
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


@pytest.mark.parametrize(("n", "answers"), [(1, 0), (2, 1), (3, 2), (5, 4), (7, 6)])
def test_every_other_voter_must_answer(n: int, answers: int) -> None:
    assert needed(n) == answers


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


def answer(frm: str, term: int, nonce: bytes, last: tuple[int, int] = (0, 0)) -> Message:
    return Message(
        MT.RECOVER_RESP,
        to="n1",
        frm=frm,
        term=term,
        log_term=last[0],
        index=last[1],
        context=nonce + ANSWER_MARK,
    )


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
def test_before_every_voter_answered_it_answers_nothing(msg: Message) -> None:
    """A leader its earlier self had deposed could count an ack (a term it forgot)."""
    n, st = recovering_n1()
    n.step(answer("n3", 2, nonce_of(n)))  # one of two
    n.step(msg)
    assert drain(n, st) == []
    assert n.status().term == 0


def test_an_answer_without_a_log_position_does_not_count() -> None:
    """An rkv from before answers carried a log position echoes the nonce alone: its missing
    position would read as an empty log (a vote for a candidate lacking entries)."""
    n, _st = recovering_n1()
    nonce = nonce_of(n)
    for frm in ("n2", "n3"):
        n.step(Message(MT.RECOVER_RESP, to="n1", frm=frm, term=5, commit=3, context=nonce))
    assert n.raft.recovery is not None and not n.raft.recovery.knows_term
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


def answered_n1(
    terms: tuple[int, int], logs: tuple[tuple[int, int], tuple[int, int]]
) -> tuple[RawNode, MemoryStorage]:
    n, st = recovering_n1()
    nonce = nonce_of(n)
    n.step(answer("n2", terms[0], nonce, logs[0]))
    n.step(answer("n3", terms[1], nonce, logs[1]))
    drain(n, st)
    return n, st


def vote(term: int, last: tuple[int, int], frm: str = "n3", pre: bool = False) -> Message:
    t = MT.PRE_VOTE if pre else MT.VOTE
    return Message(t, "n1", frm, term=term, log_term=last[0], index=last[1])


# T = 5 (n2's term), L = (4, 3) (n2's log, the best answered).
VOTES = [
    pytest.param(vote(6, (4, 3)), False, id="as-up-to-date-as-L"),
    pytest.param(vote(6, (5, 1)), False, id="newer-last-term"),
    pytest.param(vote(7, (4, 3), pre=True), False, id="pre-vote"),
    pytest.param(vote(6, (4, 2)), True, id="shorter-than-L"),
    pytest.param(vote(6, (3, 9)), True, id="older-last-term-than-L"),
    pytest.param(vote(5, (4, 3)), True, id="term-T"),
]


@pytest.mark.parametrize(("msg", "reject"), VOTES)
def test_knowing_T_it_votes_above_T_for_candidates_as_up_to_date_as_L(
    msg: Message, reject: bool
) -> None:
    n, st = answered_n1(terms=(5, 4), logs=((4, 3), (4, 2)))
    assert n.status().term == 6 and n.status().recovering, "T + 1"
    n.step(msg)
    out = drain(n, st)
    resp = [m for m in out if m.type in (MT.VOTE_RESP, MT.PRE_VOTE_RESP)]
    assert [m.reject for m in resp] == [reject]


def test_it_refuses_leaders_of_term_T_and_follows_later_ones_until_caught_up() -> None:
    n, st = answered_n1(terms=(5, 4), logs=((4, 3), (4, 2)))
    # a leader of term 5 may hold a match of the earlier self: refused (stale term)
    n.step(Message(MT.APPEND, "n1", "n2", term=5, index=0, log_term=0, entries=(Entry(4, 1),)))
    out = drain(n, st)
    assert [(m.type, m.reject, m.term) for m in out] == [(MT.APPEND_RESP, True, 6)]
    for _ in range(100):
        n.tick()
    assert n.status().role == Role.FOLLOWER, "no campaign while recovering"
    ents = (Entry(4, 1), Entry(4, 2), Entry(4, 3), Entry(7, 4))
    n.step(Message(MT.APPEND, "n1", "n2", term=7, index=0, log_term=0, entries=ents[:2], commit=2))
    out = drain(n, st)
    assert [(m.type, m.index) for m in out] == [(MT.APPEND_RESP, 2)], "it acks what it holds"
    assert n.status().recovering, "(4, 2) < L"
    n.step(Message(MT.APPEND, "n1", "n2", term=7, index=2, log_term=4, entries=ents[2:], commit=2))
    drain(n, st)
    assert not n.status().recovering, "(7, 4) >= L"
    assert not st.initial_state()[0].recovering, "the cleared flag is persisted"


def test_a_log_already_as_up_to_date_as_every_answer_is_done_at_once() -> None:
    n, _st = answered_n1(terms=(3, 3), logs=((0, 0), (0, 0)))  # elections, no leader yet
    assert not n.status().recovering and n.status().term == 4


def test_restart_while_recovering_starts_over() -> None:
    _n, st = answered_n1(terms=(5, 5), logs=((5, 1), (5, 1)))
    assert st.initial_state()[0] == HardState(term=6, recovering=True)
    again = RawNode(Config(id="n1", voters=("n1", "n2", "n3")), st, random.Random(1))
    assert again.status().recovering and again.status().term == 6
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
    assert [(m.to, m.term, m.log_term, m.index, m.context) for m in resp] == [
        ("n2", 2, 2, 6, b"n" + ANSWER_MARK)
    ], "its term and its last entry"
    leader.step(Message(MT.APPEND_RESP, "n1", "n2", term=2, index=6, reject=True, reject_hint=0))
    out = drain(leader, st)
    assert [(m.type, m.index) for m in out if m.to == "n2"] == [(MT.APPEND, 0)]


# -- why each rule: a deposed leader and a replaced disk ---------------------------------------


def no_drop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before it knows the term, it handles messages like anyone (it still does not vote)."""
    monkeypatch.setattr(recovery_mod.Recovery, "knows_term", property(lambda self: True))


def one_answer_at_T(monkeypatch: pytest.MonkeyPatch) -> None:
    """One answer is enough, and it follows leaders of term T itself (not only above T)."""
    monkeypatch.setattr(recovery_mod, "needed", lambda n: 1)
    monkeypatch.setattr(recovery_mod.Recovery, "first_term", lambda self: self.term)


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
    nonce = nonce_of(c["n2"])
    if not any(m.type == MT.RECOVER for m in c.queue):  # no-drop: it believes it is done
        c.queue.append(Message(MT.RECOVER, to="n1", frm="n2", context=nonce))
    c.stabilize()
    c.propose("n1", b"x")
    for _ in range(30):
        c.tick("n2")
        c.stabilize()


@pytest.mark.parametrize(
    "variant", [None, no_drop, one_answer_at_T], ids=["real", "no-drop", "one-answer-at-T"]
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


# -- why every other voter: two leaders in one term ------------------------------------------


def majority_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Answers from enough voters to meet every majority (n - majority + 1), not from all."""
    monkeypatch.setattr(recovery_mod, "needed", lambda n: n - (n // 2 + 1) + 1)


@pytest.mark.parametrize("variant", [None, majority_answers], ids=["real", "majority-answers"])
def test_a_vote_of_the_earlier_self_and_one_of_the_new_never_elect_two_leaders(
    monkeypatch: pytest.MonkeyPatch, variant: Callable[[pytest.MonkeyPatch], None] | None
) -> None:
    """Five voters; n3 leads term 1. n2 campaigns in term 2: n1 grants it, its requests to
    the others are delayed. n1's disk is replaced; the new n1 cannot reach n2, and hears
    term 1 from the other three. n2's request reaches n4 (n2 now has three votes); n5
    campaigns in term 2 too. A new n1 that votes in term 2 hands n5 its third vote."""
    if variant is not None:
        variant(monkeypatch)
    c = Cluster(5, pre_vote=False, check_quorum=False)
    c.elect("n3")
    held: list[Message] = []

    def hold_n2_votes(m: Message) -> bool:
        if m.frm == "n2" and m.type == MT.VOTE and m.to != "n1":
            held.append(m)
            return False
        return True

    c.filter = hold_n2_votes
    c["n2"].campaign()
    c.stabilize()
    assert c["n1"].status().vote == "n2" and c["n1"].status().term == 2
    assert sorted(m.to for m in held) == ["n3", "n4", "n5"]
    c.filter = None
    replace_disk(c, "n1")
    for a, b in (("n1", "n2"), ("n2", "n3"), ("n2", "n5")):
        c.cut |= {(a, b), (b, a)}
    c.tick("n1")  # RECOVER: n3, n4 and n5 answer (term 1); n2 cannot
    c.stabilize()
    c.queue.extend(m for m in held if m.to == "n4")
    c.stabilize()
    assert c["n2"].status().role == Role.LEADER and c["n2"].status().term == 2
    c["n5"].campaign()
    c.stabilize()
    leaders = sorted(i for i in c.ids if c[i].status().role == Role.LEADER)
    two = [i for i in leaders if c[i].status().term == 2]
    if variant is None:
        assert two == ["n2"], "the new n1 waits for n2's answer: it does not vote"
        assert c["n1"].status().recovering
    else:
        assert two == ["n2", "n5"], "two leaders in term 2"
