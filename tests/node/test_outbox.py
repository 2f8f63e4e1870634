"""rkv.node.outbox.CommitNotices: which messages are held, what drops a held notice, and
when the rest are sent."""

from __future__ import annotations

import pytest

from rkv.node.outbox import CommitNotices
from rkv.raft.types import Entry, Message, MessageType

A = MessageType.APPEND
HB = MessageType.HEARTBEAT


def msg(t: MessageType, to: str = "b", *, index: int = 5, commit: int = 5, n: int = 0) -> Message:
    ents = tuple(Entry(term=1, index=index + 1 + i, data=b"x") for i in range(n))
    return Message(t, to=to, frm="a", term=1, index=index, log_term=1, entries=ents, commit=commit)


def notices(match: dict[str, int | None] | None = None) -> CommitNotices:
    m = {"b": 5, "c": 5} if match is None else match
    return CommitNotices(lambda peer: m.get(peer))


@pytest.mark.parametrize(
    ("message", "match", "held"),
    [
        pytest.param(msg(A), 5, True, id="commit-notice"),
        pytest.param(msg(A, n=1), 5, False, id="with-entries"),
        pytest.param(msg(A, index=4), 5, False, id="prefix-not-matched"),
        pytest.param(msg(A), None, False, id="not-replicating"),
        pytest.param(msg(HB), 5, False, id="heartbeat"),
        pytest.param(msg(MessageType.APPEND_RESP), 5, False, id="ack"),
    ],
)
def test_only_commit_notices_to_caught_up_followers_are_held(
    message: Message, match: int | None, held: bool
) -> None:
    n = notices({"b": match})
    out = n.filter([message])
    assert list(out) == ([] if held else [message])
    assert (n.held == {"b": message}) is held


@pytest.mark.parametrize(
    ("later", "dropped"),
    [
        pytest.param(msg(A, n=1), True, id="append-with-entries"),
        pytest.param(msg(HB, commit=5), True, id="heartbeat-with-its-commit"),
        pytest.param(msg(HB, commit=4), False, id="heartbeat-below-its-commit"),
        pytest.param(msg(A, to="c", n=1), False, id="another-follower"),
        pytest.param(msg(MessageType.VOTE), False, id="no-commit-index"),
    ],
)
def test_a_later_message_carrying_the_commit_drops_the_notice(
    later: Message, dropped: bool
) -> None:
    n = notices()
    n.filter([msg(A)])
    assert list(n.filter([later])) == [later]
    assert ("b" not in n.held) is dropped
    assert n.dropped_total == int(dropped)


def test_order_of_the_other_messages_is_kept() -> None:
    n = notices()
    first, last = msg(A, to="c", n=1), msg(MessageType.APPEND_RESP, to="d")
    assert list(n.filter([first, msg(A), last])) == [first, last]


def test_held_notices_go_out_only_after_a_tick() -> None:
    n = notices()
    n.filter([msg(A)])
    assert n.release() == []  # no tick since it was held
    n.tick()
    newer = msg(A, commit=6, index=5)
    n.filter([msg(A, to="c")])  # held after the tick: not due yet
    assert n.release() == [msg(A)]
    assert n.release() == []
    n.tick()
    assert n.release() == [msg(A, to="c")]
    n.filter([newer])
    n.tick()
    n.filter([msg(A, n=1)])  # superseded after the tick: nothing left to send
    assert n.release() == []
