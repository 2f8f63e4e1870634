"""Responses queued for after a write must not promise what that write no longer holds.

Between two Readies a follower may step messages from two leaders: it queues an ack of the
old leader's entries, then the new leader truncates them. The ack must not leave after the
write (issue 14: sim seed 9120063, `ack-not-durable`). Each scenario steps messages into one
follower without taking a Ready in between, then checks what the Ready writes and which
responses it would send once that write is durable.
"""

from __future__ import annotations

import pytest

from rkv.raft.types import Entry, HardState, Message, MessageType, Snapshot, SnapshotMeta

from .cluster import node, terms_log

MT = MessageType


def append(frm: str, term: int, prev: int, prev_term: int, ents: list[Entry]) -> Message:
    return Message(
        MT.APPEND, to="n1", frm=frm, term=term, index=prev, log_term=prev_term, entries=tuple(ents)
    )


def vote(frm: str, term: int, last: int, last_term: int) -> Message:
    """A vote request of a leadership transfer: a follower in its leader's lease takes it."""
    return Message(
        MT.VOTE, to="n1", frm=frm, term=term, index=last, log_term=last_term, context=b"transfer"
    )


# the follower n1 holds 1..27 of term 1 and is in term 3
BASE = terms_log([1] * 27)
OLD = append("n2", 4, 27, 1, [Entry(4, 28), Entry(4, 29)])  # the term-4 leader's 28..29

SCENARIOS = [
    pytest.param(
        [OLD, append("n3", 5, 27, 1, [Entry(5, 28)])],
        [(5, 28)],
        [(MT.APPEND_RESP, "n3", 5, 28, False)],
        id="new-leader-truncates-old-leaders-entries",
    ),
    pytest.param(
        [OLD, append("n3", 5, 29, 4, [Entry(5, 30)])],
        [(4, 28), (4, 29), (5, 30)],
        [(MT.APPEND_RESP, "n3", 5, 30, False)],
        id="term-changes-without-truncation",
    ),
    pytest.param(
        [OLD, vote("n3", 5, 29, 4)],
        [(4, 28), (4, 29)],
        [(MT.VOTE_RESP, "n3", 5, 0, False)],
        id="vote-request-of-a-later-term",
    ),
    pytest.param(
        [vote("n3", 4, 27, 1), vote("n4", 5, 27, 1)],
        [],
        [(MT.VOTE_RESP, "n4", 5, 0, False)],
        id="vote-granted-then-later-term",
    ),
    pytest.param(
        [OLD, append("n2", 4, 29, 4, [Entry(4, 30)])],
        [(4, 28), (4, 29), (4, 30)],
        [(MT.APPEND_RESP, "n2", 4, 29, False), (MT.APPEND_RESP, "n2", 4, 30, False)],
        id="same-leader-keeps-every-ack",
    ),
]


@pytest.mark.parametrize(("steps", "written", "sent"), SCENARIOS)
def test_queued_responses_match_the_write(
    steps: list[Message],
    written: list[tuple[int, int]],
    sent: list[tuple[MessageType, str, int, int, bool]],
) -> None:
    n, _st = node("n1", ("n1", "n2", "n3", "n4", "n5"), entries=BASE, hs=HardState(term=3))
    for m in steps:
        n.step(m)
    rd = n.ready()
    assert [(e.term, e.index) for e in rd.entries] == written
    assert [(m.type, m.to, m.term, m.index, m.reject) for m in rd.persisted_messages] == sent
    # every ack promises an entry the write leaves in the log, in the ack's term
    log = {e.index: e.term for e in BASE} | {e.index: e.term for e in rd.entries}
    for m in rd.persisted_messages:
        assert m.term >= (rd.hard_state.term if rd.hard_state else 3)
        if m.type == MT.APPEND_RESP and not m.reject:
            assert m.index in log


def test_snapshot_restore_drops_acks_past_the_snapshot() -> None:
    """Acks of entries the snapshot replaced are void; the snapshot's own ack goes out."""
    n, _st = node("n1", ("n1", "n2", "n3"), entries=BASE, hs=HardState(term=3))
    n.step(append("n2", 4, 27, 1, [Entry(4, 28), Entry(4, 29), Entry(4, 30)]))
    snap = Snapshot(SnapshotMeta(index=28, term=5, voters=("n1", "n2", "n3")))
    n.step(Message(MT.SNAPSHOT, to="n1", frm="n3", term=5, index=28, log_term=5, snapshot=snap))
    rd = n.ready()
    assert rd.snapshot is not None and rd.snapshot.meta.index == 28
    acks = [(m.to, m.term, m.index) for m in rd.persisted_messages if m.type == MT.APPEND_RESP]
    assert acks == [("n3", 5, 28)]
