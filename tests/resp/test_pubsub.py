"""Keyspace notifications (rkv.resp.pubsub): the messages a watch event makes for a
connection's channels and patterns, the SUBSCRIBE family's replies in RESP2 and RESP3,
RESP2's subscribed mode, the bounds; and through a served connection on the fake node: the
messages arrive as push frames, and a subscriber that does not read is dropped."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from rkv.resp import Session, Settings, execute
from rkv.resp.context import Context, Subscriptions
from rkv.resp.pubsub import MAX_SUBSCRIPTIONS, messages
from rkv.resp.wire import Err, Many, Push, encode

from .fakes import FakeBackend
from .test_server import resp_server

KS, KE = b"__keyspace@0__:", b"__keyevent@0__:"

MESSAGES: list[tuple[list[bytes], list[bytes], str, bytes, list[Push]]] = [
    ([KS + b"a"], [], "put", b"a", [Push((b"message", KS + b"a", b"set"))]),
    ([KS + b"a"], [], "delete", b"a", [Push((b"message", KS + b"a", b"del"))]),
    ([KE + b"del"], [], "delete", b"a", [Push((b"message", KE + b"del", b"a"))]),
    ([KE + b"del"], [], "put", b"a", []),
    ([KS + b"a"], [], "file_commit", b"a", []),  # files are not keys
    (
        [],
        [KS + b"user:*", b"__key*__:*"],
        "put",
        b"user:1",
        [
            Push((b"pmessage", KS + b"user:*", KS + b"user:1", b"set")),
            Push((b"pmessage", b"__key*__:*", KS + b"user:1", b"set")),
            Push((b"pmessage", b"__key*__:*", KE + b"set", b"user:1")),
        ],
    ),
    ([KS + b"b"], [KS + b"x*"], "put", b"a", []),
]


@pytest.mark.parametrize(("channels", "patterns", "kind", "key", "want"), MESSAGES)
def test_messages(
    channels: list[bytes], patterns: list[bytes], kind: str, key: bytes, want: list[Push]
) -> None:
    subs = Subscriptions(dict.fromkeys(channels), dict.fromkeys(patterns))
    assert messages(subs, kind, key) == want


def make(proto: int) -> Context:
    ctx = Context(Session(conn_id=1, settings=Settings(retry_seconds=1.0)), FakeBackend())
    ctx.session.proto = proto
    return ctx


async def run(ctx: Context, *args: str) -> Any:
    return await execute(ctx, [a.encode() for a in args])


async def test_subscribe_replies_and_subscribed_mode_in_resp2() -> None:
    ctx = make(2)
    got = await run(ctx, "SUBSCRIBE", "c1", "c2")
    assert got == Many((Push((b"subscribe", b"c1", 1)), Push((b"subscribe", b"c2", 2))))
    assert encode(got, 2) == (
        b"*3\r\n$9\r\nsubscribe\r\n$2\r\nc1\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$2\r\nc2\r\n:2\r\n"
    )
    assert await run(ctx, "PSUBSCRIBE", "p*") == Many((Push((b"psubscribe", b"p*", 3)),))
    assert await run(ctx, "GET", "a") == Err(
        "ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / "
        "RESET are allowed in this context"
    )
    assert await run(ctx, "PING") == [b"pong", b""]
    assert await run(ctx, "PING", "hi") == [b"pong", b"hi"]
    assert await run(ctx, "UNSUBSCRIBE") == Many(
        (Push((b"unsubscribe", b"c1", 2)), Push((b"unsubscribe", b"c2", 1)))
    )
    assert await run(ctx, "PUNSUBSCRIBE", "p*") == Many((Push((b"punsubscribe", b"p*", 0)),))
    assert await run(ctx, "UNSUBSCRIBE") == Push((b"unsubscribe", None, 0))
    assert await run(ctx, "GET", "a") is None  # out of subscribed mode


async def test_resp3_pushes_and_allows_every_command() -> None:
    ctx = make(3)
    got = await run(ctx, "SUBSCRIBE", "c1")
    assert encode(got, 3) == b">3\r\n$9\r\nsubscribe\r\n$2\r\nc1\r\n:1\r\n"
    assert await run(ctx, "GET", "a") is None


async def test_subscriptions_are_bounded() -> None:
    ctx = make(2)
    names = [f"c{i}" for i in range(MAX_SUBSCRIPTIONS)]
    await run(ctx, "SUBSCRIBE", *names)
    again = await run(ctx, "SUBSCRIBE", *names)  # the same again: no new ones
    assert isinstance(again, Many) and again.replies[-1] == Push(
        (b"subscribe", names[-1].encode(), MAX_SUBSCRIPTIONS)
    )
    assert await run(ctx, "PSUBSCRIBE", "x*") == Err(
        f"ERR rkv: at most {MAX_SUBSCRIPTIONS} channels and patterns per connection"
    )


async def test_messages_arrive_as_push_frames_on_a_served_connection() -> None:
    async with resp_server() as (server, backend):
        assert server.port is not None
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            await stream.send_all(b"HELLO 3\r\nSUBSCRIBE __keyevent@0__:set\r\n")
            backend.watch_events = [("put", b"k1"), ("delete", b"k1"), ("put", b"k2")]
            want = b">3\r\n$7\r\nmessage\r\n$18\r\n__keyevent@0__:set\r\n$2\r\nk2\r\n"
            got = b""
            with trio.fail_after(10):
                while not got.endswith(want):
                    got += await stream.receive_some(65536)
            assert got.count(b">3\r\n$7\r\nmessage") == 2  # k1's set and k2's; not the del


async def test_a_subscriber_that_does_not_read_is_dropped() -> None:
    async with resp_server(idle_timeout=2.0) as (server, backend):
        assert server.port is not None
        backend.watch_events = [("put", b"k" * 300)] * 1000
        backend.watch_repeat = True  # every poll: 1,000 more messages
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            await stream.send_all(b"SUBSCRIBE __keyevent@0__:set\r\n")
            with trio.fail_after(20):
                while server.statistics()["dropped_subscribers"] == 0:
                    await trio.sleep(0.05)
            with trio.fail_after(20):  # then the connection ends (its error, if it can be sent)
                while server.statistics()["active"]:
                    await trio.sleep(0.05)
