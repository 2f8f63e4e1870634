"""Replica's deferred apply and early answers (defer_apply=True, what the node runtime uses).

A synchronous 3-node cluster of real RawNodes over MemoryStores, driven the way rkv.node
drives a Ready: take it, send `messages`, answer committed puts (`answer_committed`), write it
(`persist_and_apply`), send `persisted_messages`, `finish`. Every ack is checked against the
sender's durable log when it is sent, and no answer may precede the entry's commit.
"""

from __future__ import annotations

from typing import Any

import pytest

from rkv.codec import Cas, Request, encode_request
from rkv.raft.confchange import ConfChange, ConfChangeType
from rkv.raft.config import Config
from rkv.raft.types import Message, MessageType, Role
from rkv.replica import Replica
from rkv.store.memory import MemoryStore

from .test_replica import IDS, put, replicas


def cas(key: bytes, expected: bytes | None, new: bytes, seq: int) -> bytes:
    return encode_request(Request(b"d" * 16, seq, Cas(key, expected, new)))


class Cluster:
    def __init__(self, *, max_backlog: int = 4096, seed: int = 1) -> None:
        self.stores, self.reps = replicas(seed, defer_apply=True, max_backlog=max_backlog)
        self.inflight: list[Message] = []
        self.answered: dict[str, list[tuple[str, int, Any]]] = {i: [] for i in IDS}
        """node -> (token, entry index, result) in the order callers were answered."""
        self.reads: dict[str, list[str]] = {i: [] for i in IDS}
        self.acks_checked = 0
        for r in self.reps.values():  # new stores recover first (rkv.raft.recovery)
            r.tick()
        self.settle()

    def _send(self, frm: str, msgs: list[Message]) -> None:
        store = self.stores[frm]
        for m in msgs:
            if m.type == MessageType.APPEND_RESP and not m.reject:
                assert store.last_index() >= m.index, "append ack before persisted"
                self.acks_checked += 1
            self.inflight.append(m)

    def process(self) -> None:
        for i in IDS:
            r = self.reps[i]
            while r.has_ready():
                rd = r.take_ready()
                self._send(i, list(rd.messages))
                early = r.answer_committed(rd)
                for tok, e, res in early.completed:
                    assert e.index <= r.raw.status().commit, "answered before commit"
                    self.answered[i].append((tok, e.index, res))
                results = r.persist_and_apply(rd)
                self._send(i, list(rd.persisted_messages))
                out = r.finish(rd, results)
                self.answered[i] += [(t, e.index, res) for t, e, res in out.completed]
                self.reads[i] += [token for token, _index in out.reads]

    def deliver(self) -> None:
        msgs, self.inflight = self.inflight, []
        for m in msgs:
            if m.to in self.reps:  # not to a learner that does not run here
                self.reps[m.to].step(m)

    def settle(self) -> None:
        for _ in range(50):
            self.process()
            if not self.inflight:
                return
            self.deliver()
        raise AssertionError("cluster did not settle")

    def elect(self, i: str = "n1") -> Replica[str]:
        self.reps[i].raw.campaign()
        self.settle()
        assert self.reps[i].role == Role.LEADER
        # the leader's no-op may sit in the backlogs: start every test from applied stores
        for r in self.reps.values():
            r.apply_backlog()
        return self.reps[i]


def one_put_committed() -> tuple[Cluster, Replica[str], int]:
    """A cluster whose leader answered put k=v (token "w", index idx) at commit, nothing
    else pending: (cluster, leader, idx)."""
    c = Cluster()
    leader = c.elect()
    idx = leader.propose(put(b"k", b"v", 1), "w", early=True)
    c.settle()
    assert c.answered["n1"] == [("w", idx, None)]
    return c, leader, idx


def test_put_is_answered_at_commit_and_applied_later() -> None:
    c, _, idx = one_put_committed()
    # answered, committed everywhere, applied nowhere yet: nobody needed the store
    for i in IDS:
        assert c.reps[i].raw.status().commit >= idx
        assert c.stores[i].get(b"k") is None and c.reps[i].backlog >= 1
        assert c.reps[i].applied == c.stores[i].applied_index() < idx
    assert c.acks_checked >= 2
    for i in IDS:
        assert c.reps[i].apply_backlog().reads == []
        assert c.stores[i].get(b"k") == b"v" and c.reps[i].applied == idx
        assert c.reps[i].backlog == 0


@pytest.mark.parametrize(
    ("max_backlog", "with_the_write"),
    [(2, True), (3, False), (4096, False)],
)
def test_a_full_backlog_is_written_with_the_next_log_write(
    max_backlog: int, with_the_write: bool
) -> None:
    """Two committed puts wait in the backlog; the leader's next log write applies them in
    the same transaction only when they fill a batch (max_backlog)."""
    c = Cluster(max_backlog=max_backlog)
    leader = c.elect()
    a = leader.propose(put(b"a", b"1", 1), "w1", early=True)
    b = leader.propose(put(b"b", b"2", 2), "w2", early=True)
    c.settle()
    assert c.stores["n1"].get(b"a") is None and leader.backlog == 2
    applies, saves = leader.applies, leader.saves
    third = leader.propose(put(b"c", b"3", 3), "w3", early=True)
    c.process()  # the leader's Ready that saves `third`
    assert leader.saves == saves + 1
    assert leader.applies == applies + with_the_write
    assert (c.stores["n1"].get(b"a") == b"1") == with_the_write
    assert (c.stores["n1"].applied_index() >= b) == with_the_write
    c.settle()
    assert [t for t, _, _ in c.answered["n1"]] == ["w1", "w2", "w3"]
    assert third > b > a
    leader.apply_backlog()
    assert [c.stores["n1"].get(k) for k in (b"a", b"b", b"c")] == [b"1", b"2", b"3"]


def test_linearizable_read_waits_for_the_store_and_forces_the_apply() -> None:
    c, leader, idx = one_put_committed()
    assert c.stores["n1"].get(b"k") is None
    leader.read("r")
    c.settle()
    assert c.reads["n1"] == ["r"]
    assert c.stores["n1"].get(b"k") == b"v" and leader.applied >= idx


def test_follower_read_forces_its_own_apply() -> None:
    c, _, idx = one_put_committed()
    follower = c.reps["n2"]
    assert c.stores["n2"].get(b"k") is None
    follower.read("fr")
    c.settle()
    assert c.reads["n2"] == ["fr"]
    assert c.stores["n2"].get(b"k") == b"v" and follower.applied >= idx


@pytest.mark.parametrize(
    ("case", "deferred"),
    [
        ("put answered early", True),
        ("put with a waiter for its result", False),
        ("cas (its result is needed)", False),
        ("membership change", False),
        ("backlog bound reached", False),
    ],
)
def test_what_forces_an_immediate_apply_on_the_leader(case: str, deferred: bool) -> None:
    c = Cluster(max_backlog=2 if case == "backlog bound reached" else 4096)
    leader = c.elect()
    if case == "put answered early":
        idx = leader.propose(put(b"k", b"v", 1), "t", early=True)
    elif case == "put with a waiter for its result":
        idx = leader.propose(put(b"k", b"v", 1), "t")
    elif case == "cas (its result is needed)":
        idx = leader.propose(cas(b"k", None, b"v", 1), "t")
    elif case == "membership change":
        idx = leader.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, "n4"), "t")
    else:
        for seq in range(1, 3):
            leader.propose(put(b"x%d" % seq, b"v", seq), f"early{seq}", early=True)
        idx = leader.propose(put(b"k", b"v", 3), "t", early=True)
    c.settle()
    answered = {t: (i, res) for t, i, res in c.answered["n1"]}
    assert answered["t"][0] == idx
    assert (leader.applied < idx) == deferred, case
    if case == "cas (its result is needed)":
        assert answered["t"][1].value is True  # the apply result reached the caller
    if case == "membership change":
        assert "n4" in leader.raw.conf_state().learners


def test_restart_with_a_backlog_applies_it_exactly_once() -> None:
    c, leader, idx = one_put_committed()
    for restart in range(2):
        store = c.stores["n2"]
        if restart == 0:
            assert store.get(b"k") is None  # a crash now: the write is only in the log
        again = store.reopen()
        r: Replica[str] = Replica(
            Config(id="n2", voters=IDS, applied=again.applied_index()), again, defer_apply=True
        )
        c.stores["n2"], c.reps["n2"] = again, r
        leader.tick()  # a heartbeat tells the restarted node the commit index
        c.settle()
        r.apply_backlog()
        rec = again.get_record(b"k")
        assert rec is not None and rec.value == b"v" and rec.version == 1, restart
        assert r.applied >= idx


def test_without_defer_apply_every_commit_is_applied_at_once() -> None:
    store = MemoryStore("c", "n1", ("n1",))
    r: Replica[str] = Replica(Config(id="n1", voters=("n1",)), store)
    r.raw.campaign()
    r.handle_ready()
    idx = r.propose(put(b"k", b"v", 1), "t", early=True)
    while r.has_ready():
        r.handle_ready()
    assert store.get(b"k") == b"v" and r.applied == idx and r.backlog == 0
