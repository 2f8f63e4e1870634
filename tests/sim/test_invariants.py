"""The safety checker, fed hand-made states: each property holds for a legal history and
fails, with its own name, for a violating one."""

from __future__ import annotations

import pytest

from rkv.raft.types import (
    Entry,
    HardState,
    Message,
    MessageType,
    Ready,
    Role,
    SoftState,
)
from rkv.sim.invariants import InvariantViolation, LogMirror, SafetyChecker

MT = MessageType
IDS = ("n1", "n2", "n3")


def E(index: int, term: int, data: bytes = b"") -> Entry:
    return Entry(term=term, index=index, data=data)


def ents(*terms: int, start: int = 1, tag: bytes = b"") -> tuple[Entry, ...]:
    return tuple(E(start + k, t, tag + bytes([k])) for k, t in enumerate(terms))


def lead(term: int, node: str = "n1") -> Ready:
    return Ready(
        soft_state=SoftState(leader=node, role=Role.LEADER),
        hard_state=HardState(term=term, vote=node),
    )


def expect(name: str):  # type: ignore[no-untyped-def]
    return pytest.raises(InvariantViolation, match=f"^{name}:")


def persisted(c: SafetyChecker, node: str, rd: Ready) -> None:
    c.on_ready(node, rd)
    c.on_persisted(node, rd.hard_state, rd.entries)


# -- log mirror -------------------------------------------------------------------------------


def test_mirror_reports_what_a_write_removed() -> None:
    m = LogMirror()
    assert m.write(ents(1, 1, 1)) == (0, 0)
    before = m.prefix[2]
    # same entries again: a duplicate write loses nothing
    assert m.write(ents(1, 1, 1))[0] == 0
    # a conflicting entry at 2 removes 2..3
    assert m.write((E(2, 2, b"x"),)) == (2, before)
    assert m.last_index == 2
    # a shorter suffix with matching head still removes the tail
    m.write(ents(1, 1, 1))
    assert m.write(ents(1, start=1))[0] == 2


def test_mirror_refuses_a_gap() -> None:
    with expect("log-gap"):
        LogMirror().write((E(2, 1),))


# -- election safety --------------------------------------------------------------------------


def test_one_leader_per_term_passes_and_two_fail() -> None:
    c = SafetyChecker(IDS)
    c.on_ready("n1", lead(2))
    c.on_ready("n2", lead(3, "n2"))  # a later term is fine
    assert c.leader_changes == 2
    with expect("election-safety"):
        c.on_ready("n3", lead(3, "n3"))


# -- log matching -----------------------------------------------------------------------------


def test_log_matching_detects_same_index_and_term_with_different_prefix() -> None:
    c = SafetyChecker(IDS)
    c.on_ready("n1", Ready(entries=ents(1, 1, 2, tag=b"a")))
    c.on_ready("n2", Ready(entries=ents(1, 1, 2, tag=b"a")))  # identical: fine
    with expect("log-matching"):
        # n3 has 3@2 too but a different entry at 2
        c.on_ready("n3", Ready(entries=(E(1, 1, b"a\x00"), E(2, 1, b"other"), E(3, 2, b"a\x02"))))


# -- commit, leader completeness, truncation --------------------------------------------------


def test_commit_beyond_log_fails() -> None:
    c = SafetyChecker(IDS)
    with expect("commit-beyond-log"):
        c.on_ready("n1", Ready(hard_state=HardState(term=1, commit=2), entries=ents(1)))


def test_committed_entry_cannot_change() -> None:
    c = SafetyChecker(IDS)
    c.on_ready("n1", Ready(hard_state=HardState(term=1, commit=2), entries=ents(1, 1, tag=b"a")))
    assert c.committed_index == 2
    c.on_ready("n2", Ready(hard_state=HardState(term=1, commit=1), entries=ents(1, 1, tag=b"a")))
    with expect("committed-entry-changed"):
        c.on_ready(
            "n3", Ready(hard_state=HardState(term=2, commit=2), entries=ents(1, 2, tag=b"a"))
        )


def test_leader_completeness() -> None:
    c = SafetyChecker(IDS)
    # n1 leads term 1 and commits 1..2
    c.on_ready("n1", lead(1))
    c.on_ready("n1", Ready(hard_state=HardState(term=1, vote="n1", commit=2), entries=ents(1, 1)))
    # n2 becomes leader of term 2 holding both: fine
    c.on_ready("n2", Ready(entries=ents(1, 1)))
    c.on_ready("n2", lead(2, "n2"))
    # n3 becomes leader of term 3 with only entry 1: violation
    c.on_ready("n3", Ready(entries=ents(1)))
    with expect("leader-completeness"):
        c.on_ready("n3", lead(3, "n3"))


def test_leader_of_an_older_term_need_not_hold_later_commits() -> None:
    c = SafetyChecker(IDS)
    c.on_ready("n1", lead(1))
    c.on_ready("n2", Ready(hard_state=HardState(term=2, vote="n2", commit=2), entries=ents(1, 2)))
    # n1, a deposed leader of term 1, does not hold 2@2: that is legal
    c.on_ready("n1", Ready(entries=ents(1)))


def test_removing_a_committed_entry_fails_even_if_the_node_did_not_know() -> None:
    c = SafetyChecker(IDS)
    c.on_ready("n1", Ready(hard_state=HardState(term=1, commit=2), entries=ents(1, 1, tag=b"a")))
    c.on_ready("n2", Ready(hard_state=HardState(term=1), entries=ents(1, 1, tag=b"a")))
    # n2 replacing uncommitted entries past 2 is fine
    c.on_ready("n2", Ready(entries=(E(3, 1, b"x"),)))
    c.on_ready("n2", Ready(entries=(E(3, 2, b"y"),)))
    with expect("truncate-committed"):
        c.on_ready("n2", Ready(entries=(E(2, 2, b"z"),)))


def test_a_node_of_an_older_term_may_drop_an_entry_a_later_leader_committed() -> None:
    """Sim seed 9203218 (5 nodes, at cc577c8): n2 holds 2..3 of term 2 and is in term 3; it
    steps the term-3 leader's 2@3, which removes them, while a term-4 leader that holds them
    commits them with a majority without n2; n2's next Ready (after a slow write) shows the
    removal together with term 4. Legal: no term-3 leader ever held 2@2."""
    c = SafetyChecker(IDS)
    c.on_ready("n1", lead(2))
    c.on_ready("n1", Ready(entries=ents(1, 2, 2)))
    c.on_ready("n2", Ready(hard_state=HardState(term=3), entries=ents(1, 2, 2)))
    c.on_ready("n1", lead(4))
    c.on_ready("n1", Ready(hard_state=HardState(term=4, vote="n1", commit=3)))
    c.on_ready("n2", Ready(hard_state=HardState(term=4), entries=(E(2, 3, b"t3"),)))
    # a node that was in term 4 already must not drop it
    c.on_ready("n3", Ready(hard_state=HardState(term=4), entries=ents(1, 2, 2)))
    with expect("truncate-committed"):
        c.on_ready("n3", Ready(entries=(E(2, 3, b"t3"),)))


def test_truncating_at_or_below_own_commit_fails() -> None:
    c = SafetyChecker(IDS)
    c.on_ready("n1", Ready(hard_state=HardState(term=1, commit=1), entries=ents(1, 1)))
    with expect("truncate-committed"):
        c.on_ready("n1", Ready(entries=(E(1, 2, b"q"),)))


# -- monotonic hard state ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second", "name"),
    [
        (HardState(3, "n1", 0), HardState(2, "n1", 0), "term-regressed"),
        (HardState(3, "n1", 0), HardState(3, "n2", 0), "vote-changed"),
    ],
)
def test_hard_state_regressions(first: HardState, second: HardState, name: str) -> None:
    c = SafetyChecker(IDS)
    c.on_ready("n1", Ready(hard_state=first))
    with expect(name):
        c.on_ready("n1", Ready(hard_state=second))
    # and the same for durable state, across a restart
    d = SafetyChecker(IDS)
    persisted(d, "n1", Ready(hard_state=first))
    d.restart("n1", 0)
    with expect(name):
        d.on_persisted("n1", second, ())


def test_commit_regression() -> None:
    c = SafetyChecker(IDS)
    c.on_ready("n1", Ready(hard_state=HardState(1, "", 1), entries=ents(1)))
    with expect("commit-regressed"):
        c.on_ready("n1", Ready(hard_state=HardState(1, "", 0)))


def test_restart_resumes_from_durable_state() -> None:
    c = SafetyChecker(IDS)
    persisted(c, "n1", Ready(hard_state=HardState(2, "n2", 0), entries=ents(1, 2)))
    # term 3 is taken but never persisted; the node crashes
    c.on_ready("n1", Ready(hard_state=HardState(3, "n1", 0)))
    c.restart("n1", 0)
    # back at term 2 (legal: the term-3 vote never left durably), and may vote in term 3 again
    c.on_ready("n1", Ready(hard_state=HardState(3, "n3", 0)))
    c.on_persisted("n1", HardState(3, "n3", 0), ())


# -- durable-before-send ----------------------------------------------------------------------


def test_vote_grant_must_be_durable() -> None:
    c = SafetyChecker(IDS)
    grant = Message(MT.VOTE_RESP, to="n2", frm="n1", term=2)
    c.on_ready("n1", Ready(hard_state=HardState(2, "n2", 0)))
    with expect("vote-not-durable"):
        c.on_send("n1", grant)
    c.on_persisted("n1", HardState(2, "n2", 0), ())
    c.on_send("n1", grant)
    # a rejection promises nothing
    c.on_send("n1", Message(MT.VOTE_RESP, to="n3", frm="n1", term=2, reject=True))
    # pre-votes change no durable state
    c.on_send("n1", Message(MT.PRE_VOTE_RESP, to="n3", frm="n1", term=9))
    # a grant for a different candidate in the durable term is a second vote
    with expect("vote-not-durable"):
        c.on_send("n1", Message(MT.VOTE_RESP, to="n3", frm="n1", term=2))
    # a grant of an earlier term, batched with a newer durable term, is kept by that term
    c.on_persisted("n1", HardState(3, "n3", 0), ())
    c.on_send("n1", grant)


def test_append_ack_must_be_durable() -> None:
    c = SafetyChecker(IDS)
    c.on_ready("n2", Ready(entries=ents(1, 1)))
    ack = Message(MT.APPEND_RESP, to="n1", frm="n2", term=1, index=2)
    with expect("ack-not-durable"):
        c.on_send("n2", ack)
    c.on_persisted("n2", None, ents(1, 1))
    c.on_send("n2", ack)
    # the durable log differs from the acked one (a newer conflicting write is in flight)
    c.on_ready("n2", Ready(entries=(E(2, 2, b"new"),)))
    with expect("ack-not-durable"):
        c.on_send("n2", ack)


# -- state machine safety and acknowledgements ------------------------------------------------


def _committed(c: SafetyChecker, entries: tuple[Entry, ...]) -> None:
    for n in IDS:
        c.on_ready(n, Ready(hard_state=HardState(1, "", len(entries)), entries=entries))


def test_apply_in_order_of_committed_entries_passes() -> None:
    c = SafetyChecker(IDS)
    es = ents(1, 1, 1)
    _committed(c, es)
    for n in IDS:
        for e in es:
            c.on_applied(n, e)
    c.on_ack(2, 1)


def test_apply_out_of_order_fails() -> None:
    c = SafetyChecker(IDS)
    es = ents(1, 1)
    _committed(c, es)
    with expect("state-machine-safety"):
        c.on_applied("n1", es[1])


def test_apply_beyond_commit_fails() -> None:
    c = SafetyChecker(IDS)
    c.on_ready("n1", Ready(entries=ents(1)))
    with expect("state-machine-safety"):
        c.on_applied("n1", E(1, 1, b"\x00"))


def test_two_nodes_applying_different_entries_at_one_index_fails() -> None:
    c = SafetyChecker(IDS)
    es = ents(1, 1)
    _committed(c, es)
    c.on_applied("n1", es[0])
    with expect("state-machine-safety"):
        c.on_applied("n2", E(1, 1, b"different"))


def test_acknowledged_entry_must_be_the_committed_one() -> None:
    c = SafetyChecker(IDS)
    _committed(c, ents(1, 1))
    with expect("acked-not-committed"):
        c.on_ack(2, 5)
    with expect("acked-not-committed"):
        c.on_ack(3, 1)
