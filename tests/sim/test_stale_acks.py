"""An ack of an entry a newer leader truncated, scripted in the simulator on 3 nodes.

Random seeds found this once (seed 9120063 on 5 nodes before the simulator drove Replica;
about 1 seed in 2,800 at the default length), which is too rare for a test. The script forces
its shape: follower F has a slow durable write in flight (so no Ready is taken meanwhile),
steps leader A's APPEND of X (the core queues the ack of X for after the next write), then
an APPEND of a term-(T+1) leader that replaces the log from the entry before X on. F's next
Ready persists the shorter log; the ack of X to A must not go with it.

The real core drops the queued ack (tests/raft/test_stale_responses.py scripts the same in
the core alone); a core that keeps it is caught by the simulator's `ack-not-durable` check.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from rkv.raft.core import Raft
from rkv.raft.types import Entry, Message, MessageType
from rkv.sim.cluster import Cluster, SimParams
from rkv.sim.disk import DiskParams
from rkv.sim.invariants import InvariantViolation
from rkv.sim.statemachine import ClientCommand, StoreStateMachine

PARAMS = replace(SimParams(), nodes=3, clients=0, disk=DiskParams(0, 2, 60, 120), full_trace=True)


def step_until(c: Cluster, cond: Callable[[], bool], what: str, ticks: int = 300) -> None:
    limit = c.now + ticks * c.p.tick_interval
    while not cond():
        assert c.now < limit, f"timed out waiting for: {what}"
        c.run_until(limit, max_events=1)


def put(seq: int) -> bytes:
    return StoreStateMachine().encode(ClientCommand("put", 0, seq, "k", f"v{seq}"))


def overwritten_ack(seed: int) -> tuple[Cluster, str, str, int]:
    c = Cluster(seed, PARAMS)
    c.start(faults=False, quiet_phase=False)
    step_until(c, lambda: c.leader_id() != "", "a leader")
    a = c.leader_id()
    step_until(
        c,
        lambda: all(c.nodes[n].applied_index >= c.checker.committed_index >= 1 for n in c.ids),
        "the leader's no-op applied everywhere",
    )
    f, g = [n for n in c.ids if n != a]
    c.net.cut(a, g)  # G takes no part: it only lends its name to the newer leader below
    fn = c.nodes[f]
    fn.disk.slow = True
    y = c.propose(a, put(1))
    step_until(
        c,
        lambda: fn.in_flight is not None and any(e.index == y for e in fn.in_flight.entries),
        "F writing Y",
    )
    x = c.propose(a, put(2))
    step_until(c, lambda: fn.rep.raw.raft.log.last_index() >= x, "F stepped A's APPEND of X")
    assert fn.in_flight is not None, "the slow write ended before X arrived: pick another seed"
    term = fn.rep.raw.term
    log = fn.rep.raw.raft.log
    # the newer leader's first APPEND: its log agrees with F's before Y and holds Y'@T+1
    newer = Message(
        MessageType.APPEND,
        to=f,
        frm=g,
        term=term + 1,
        index=y - 1,
        log_term=log.term(y - 1) or 0,
        entries=(Entry(term=term + 1, index=y, data=put(3)),),
        commit=log.committed,
    )
    c.at(c.now, 1, newer, None)  # DELIVER, now
    step_until(
        c,
        lambda: (
            c.checker.nodes[f].durable.last_index == y
            and c.checker.nodes[f].durable.terms[y] == term + 1
        ),
        "F persisted the newer leader's entry",
    )
    c.run_until(c.now + 5 * c.p.tick_interval)
    return c, a, f, x


SEED = 1


def test_the_real_core_does_not_ack_an_overwritten_entry() -> None:
    c, a, f, x = overwritten_ack(SEED)
    sent = [m for _t, what, m in c.trace if what == "send" and isinstance(m, Message)]
    acks = [m for m in sent if m.type == MessageType.APPEND_RESP and (m.frm, m.to) == (f, a)]
    assert acks, "F acked nothing to A: the script did not run as planned"
    assert all(m.reject or m.index < x for m in acks), [m.describe() for m in acks]


def test_a_core_that_keeps_stale_acks_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Raft, "_drop_stale_responses", lambda self: None)
    monkeypatch.setattr(Raft, "_on_log_rewound", lambda self, after: None)
    with pytest.raises(InvariantViolation, match=r"^ack-not-durable: .* acks index"):
        overwritten_ack(SEED)
