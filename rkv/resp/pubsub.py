"""SUBSCRIBE, PSUBSCRIBE, UNSUBSCRIBE, PUNSUBSCRIBE: Redis keyspace notifications fed by
rkv's watch (docs/contracts.md, "watch").

Channels: `__keyspace@0__:<key>` (message: the event) and `__keyevent@0__:<event>`
(message: the key), for the events `set` (any write of a key: SET, INCR, EXPIRE, ...) and
`del` (a delete; also a key deleted with its expired lease: the watch does not tell an
expiry from a delete, so there is no `expired` event). Patterns are Redis' globs
(rkv.resp.glob). `notify-keyspace-events` is not a setting: every event is always sent to
whoever subscribed; `PUBLISH` is refused (rkv.resp.refused).

How: while a connection has a subscription, `feed` polls the node's `watch` for every key
(through the dispatcher, as a native watch: each poll from the revision the last one ended
at, so no change is missed or repeated while the connection stays; a watch that fell behind
the node's window ends the connection with an error, never a silent gap) and hands each
matching message to the connection (`deliver`). Bounds: MAX_SUBSCRIPTIONS channels and
patterns per connection; at most MAX_PENDING messages waiting to be written to it (a
subscriber that does not read them is dropped with an error, never holds the node up: the
watch is polled, the node never waits on a subscriber); one watch poll at a time per
subscribed connection (the node's `watch_max_per_conn` counts every RESP subscriber of the
node together: beyond, a subscriber gets an error and is dropped).

Owns: these commands, the channel names and the feed. Must not: name the commands
(rkv.resp.table), read or write sockets (rkv.resp.server gives `deliver`).
"""

from __future__ import annotations

from collections.abc import Callable

from rkv.protocol import WatchReply, WatchRequest
from rkv.resp import glob
from rkv.resp.context import CommandError, Context, Handler, Subscriptions, call
from rkv.resp.wire import Many, Push, Reply

KEYSPACE = b"__keyspace@0__:"
KEYEVENT = b"__keyevent@0__:"
EVENTS = {"put": b"set", "delete": b"del"}
"""A watch event's type -> the Redis event (files' events are not keys': not sent)."""
MAX_SUBSCRIPTIONS = 1024
MAX_PENDING = 10_000
"""Messages waiting to be written to one connection; beyond, it is dropped."""
POLL_LIMIT = 1000
POLL_WAIT_MS = 1000
ALLOWED_SUBSCRIBED = frozenset(
    {"subscribe", "psubscribe", "unsubscribe", "punsubscribe", "ping", "quit", "reset"}
)
"""What a RESP2 connection in subscribed mode may run (as Redis)."""


class SlowSubscriber(Exception):
    """The connection has MAX_PENDING messages unsent: drop it."""


def not_allowed(name: str) -> str:
    return (
        f"ERR Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / "
        "RESET are allowed in this context"
    )


def messages(subs: Subscriptions, kind: str, key: bytes) -> list[Push]:
    """The messages a watch event (`kind`: put or delete) on `key` makes for `subs`."""
    event = EVENTS.get(kind)
    if event is None:
        return []
    out: list[Push] = []
    for channel, payload in ((KEYSPACE + key, event), (KEYEVENT + event, key)):
        if channel in subs.channels:
            out.append(Push((b"message", channel, payload)))
        for p in subs.patterns:
            if glob.match(p, channel):
                out.append(Push((b"pmessage", p, channel, payload)))
    return out


# -- the commands -----------------------------------------------------------------------------


def _subscribe(into: str, kind: bytes) -> Handler:
    async def handler(ctx: Context, args: list[bytes]) -> Reply:
        subs = ctx.session.subs
        table: dict[bytes, None] = getattr(subs, into)
        if not subs.count():
            # from the revision this node has applied now: every write that starts after
            # the reply is sent comes later
            subs.after = int(ctx.backend.status().get("applied") or 0)
        out: list[Reply] = []
        for name in args[1:]:
            if name not in table:
                if subs.count() >= MAX_SUBSCRIPTIONS:
                    raise CommandError(
                        f"ERR rkv: at most {MAX_SUBSCRIPTIONS} channels and patterns per connection"
                    )
                table[name] = None
            out.append(Push((kind, name, subs.count())))
        subs.touch()
        return Many(tuple(out))

    return handler


def _unsubscribe(into: str, kind: bytes) -> Handler:
    async def handler(ctx: Context, args: list[bytes]) -> Reply:
        subs = ctx.session.subs
        table: dict[bytes, None] = getattr(subs, into)
        names = args[1:] or list(table)
        if not names:
            return Push((kind, None, subs.count()))
        out: list[Reply] = []
        for name in names:
            table.pop(name, None)
            out.append(Push((kind, name, subs.count())))
        subs.touch()
        return Many(tuple(out))

    return handler


cmd_subscribe = _subscribe("channels", b"subscribe")
cmd_psubscribe = _subscribe("patterns", b"psubscribe")
cmd_unsubscribe = _unsubscribe("channels", b"unsubscribe")
cmd_punsubscribe = _unsubscribe("patterns", b"punsubscribe")


# -- the feed ---------------------------------------------------------------------------------


async def feed(ctx: Context, deliver: Callable[[list[Push]], None]) -> None:
    """Poll the node's watch while the connection has subscriptions, and `deliver` each
    event's messages (in revision order). Raises CommandError (the watch failed: compacted,
    too many watchers, no leader for longer than the retries) or SlowSubscriber (from
    `deliver`): the connection then ends with that error."""
    subs = ctx.session.subs
    while True:
        if not subs.count():
            await subs.changed.wait()
            continue
        req = WatchRequest(b"", after=subs.after, limit=POLL_LIMIT, wait_ms=POLL_WAIT_MS)
        reply = WatchReply.from_frame(await call(ctx, req.to_frame))
        if not subs.count():
            continue  # all unsubscribed meanwhile: a later SUBSCRIBE starts afresh
        subs.after = reply.rev
        out: list[Push] = []
        for ev in reply.events:
            out.extend(messages(subs, ev.type, ev.key))
        if out:
            deliver(out)
