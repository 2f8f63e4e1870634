"""The RESP server: the listener and one loop per connection.

Owns: accepting connections under the node's admission limits (rkv.net.admission: a cap in
all and per source address, shedding the oldest connection that is still in its handshake or
has completed no command), the deadlines (handshake: with a cluster token AUTH/HELLO within
`handshake_timeout`, without one the first complete command; a started command must keep
arriving: no pause longer than `frame_timeout`, and `min_frame_rate` bytes/s on average after
that grace; idle: nothing in flight and nothing sent for `idle_timeout`; a client that does
not read its replies for `idle_timeout`), and running each connection's commands in order
(at most `max_inflight` parsed and not yet answered, and about `max_request` bytes of
them; beyond, it stops reading). Must not:
parse or encode (rkv.resp.wire) or know what a command does (rkv.resp.commands, rkv.resp.table).

Built from a `Backend` (what it needs of the node) and `RespLimits`, so tests build it with
fakes; `rkv.node` builds it with the node's dispatcher.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import trio

from rkv.codec import MAX_VALUE_LEN
from rkv.net.admission import Admission, Refused
from rkv.resp.context import (
    Backend,
    CommandError,
    Context,
    Session,
    Settings,
    unknown_command,
    wrong_arity,
)
from rkv.resp.multi import IMMEDIATE, queue
from rkv.resp.pubsub import ALLOWED_SUBSCRIBED, MAX_PENDING, SlowSubscriber, feed, not_allowed
from rkv.resp.refused import UNSUPPORTED, unsupported
from rkv.resp.table import COMMANDS, NO_AUTH
from rkv.resp.wire import Err, Push, Reply, RequestParser, RespProtocolError, encode

log = logging.getLogger("rkv.resp")

MAX_CLIENTS_ERROR = b"-ERR max number of clients reached\r\n"


@dataclass(frozen=True, slots=True)
class RespLimits:
    max_connections: int = 1024
    max_connections_per_source: int = 256
    handshake_timeout: float = 5.0
    frame_timeout: float = 10.0
    min_frame_rate: int = 16384
    idle_timeout: float = 300.0
    max_inflight: int = 128
    """Commands parsed and not answered yet, per connection (then it stops reading)."""
    max_bulk: int = MAX_VALUE_LEN
    """Longest bulk string (Redis' proto-max-bulk-len; rkv's largest value)."""
    max_args: int = 1 << 20
    max_request: int = MAX_VALUE_LEN + (1 << 20)
    """Longest whole command (its header lines and every argument)."""
    retry_seconds: float = 10.0


@dataclass(slots=True)
class RespStats:
    accepted: int = 0
    refused: int = 0
    commands: int = 0
    protocol_errors: int = 0
    timeouts: int = 0
    dropped_subscribers: int = 0
    active: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)


async def execute(ctx: Context, args: list[bytes]) -> Reply:
    """The reply to one command (inside MULTI: its place in the queue, rkv.resp.multi)."""
    name = args[0].decode("latin-1").lower()
    s = ctx.session
    if s.settings.token is not None and not s.authed and name not in NO_AUTH:
        return Err("NOAUTH Authentication required.")
    cmd = COMMANDS.get(name)
    err: Err | None = None
    if cmd is None:
        err = unsupported(name) if name in UNSUPPORTED else unknown_command(args)
    elif (cmd.arity > 0 and len(args) != cmd.arity) or len(args) < -cmd.arity:
        err = Err(wrong_arity(name).text)
    if s.proto == 2 and s.subs.count() and name not in ALLOWED_SUBSCRIBED:
        return Err(not_allowed(name))  # RESP2's subscribed mode (RESP3 allows everything)
    if s.multi is not None and name not in IMMEDIATE:
        return queue(ctx, s.multi, name, args, err)
    if err is not None or cmd is None:
        return err
    if name == "ping" and s.proto == 2 and s.subs.count() and len(args) <= 2:
        return [b"pong", args[1] if len(args) == 2 else b""]
    try:
        return await cmd.handler(ctx, args)
    except CommandError as e:
        return Err(e.text)


class _Close(Exception):
    """End this connection (after what was due was sent)."""


_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, OSError)


@dataclass(slots=True)
class _ConnState:
    inflight: int = 0
    """Commands parsed and not answered yet."""
    queued_bytes: int = 0
    """Their size (arguments): beyond `max_request` the reader waits (memory stays bounded
    by about two whole commands per connection, whatever `max_inflight`)."""
    drained: trio.Event = field(default_factory=trio.Event)
    timer: trio.CancelScope | None = None
    """The reader's deadline while it waits for bytes."""


def _size(command: list[bytes]) -> int:
    return sum(len(a) for a in command) + 16 * len(command)


class RespServer:
    def __init__(
        self,
        backend: Backend,
        *,
        token: str | None = None,
        limits: RespLimits | None = None,
        node_id: str = "",
    ) -> None:
        self.backend = backend
        self.limits = limits or RespLimits()
        self.settings = Settings(
            token=token, retry_seconds=self.limits.retry_seconds, node_id=node_id
        )
        self.admission = Admission(
            self.limits.max_connections,
            self.limits.max_connections_per_source,
            self.limits.handshake_timeout,
        )
        self.stats = RespStats()
        self.port: int | None = None
        self._ids = itertools.count(1)

    async def serve(
        self, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen on host:port until cancelled; `task_status.started(port)` once bound."""
        listeners = await trio.open_tcp_listeners(port, host=host)
        self.port = listeners[0].socket.getsockname()[1]
        self.settings.port = self.port
        task_status.started(self.port)
        await trio.serve_listeners(self.handle, listeners)

    async def handle(self, stream: trio.SocketStream) -> None:
        """One connection, start to end (never raises)."""
        try:
            host = str(stream.socket.getpeername()[0])
        except OSError:
            host = "?"
        self.stats.accepted += 1
        try:
            ticket = self.admission.admit(host, trio.current_time())
        except Refused:
            self.stats.refused += 1
            await _goodbye(stream, MAX_CLIENTS_ERROR)
            return
        self.stats.active += 1
        goodbye: bytes | None = None
        try:
            with ticket.scope:
                goodbye = await self._connection(stream, ticket)
            if ticket.goodbye is not None:
                goodbye = MAX_CLIENTS_ERROR
            elif ticket.scope.cancelled_caught:
                self.admission.timed_out(ticket)
                self.stats.timeouts += 1
                goodbye = (
                    b"-ERR rkv: handshake timeout: authenticate (AUTH) or send a command sooner\r\n"
                )
        except _GONE:
            pass
        except Exception:  # never let one connection take the server down
            log.exception("RESP connection from %s failed", host)
        finally:
            self.stats.active -= 1
            self.admission.release(ticket)
            await _goodbye(stream, goodbye)

    async def _connection(self, stream: trio.SocketStream, ticket: Any) -> bytes | None:
        lim = self.limits
        session = Session(conn_id=next(self._ids), settings=self.settings)
        ctx = Context(session, self.backend)
        parser = RequestParser(
            max_args=lim.max_args, max_bulk=lim.max_bulk, max_request=lim.max_request
        )
        send, recv = trio.open_memory_channel[list[bytes] | RespProtocolError](lim.max_inflight)
        state = _ConnState()

        async def reader() -> None:
            started: float | None = None  # when the partial command began to arrive
            got = 0
            while True:
                while state.queued_bytes > lim.max_request:
                    state.drained = trio.Event()
                    await state.drained.wait()
                now = trio.current_time()
                if parser.pending:
                    if started is None:
                        started, got = now, 0
                    wait = lim.frame_timeout
                elif state.inflight or ticket.state == "handshaking" or session.subs.count():
                    wait = math.inf  # the handshake deadline is the ticket's; a subscriber
                    # waits for messages
                    started = None
                else:
                    wait = lim.idle_timeout
                    started = None
                with trio.CancelScope(deadline=now + wait) as timer:
                    state.timer = timer  # the writer starts the idle clock once all is answered
                    data = await stream.receive_some(65536)
                state.timer = None
                if timer.cancelled_caught:
                    self.stats.timeouts += 1
                    await send.send(RespProtocolError("ERR rkv: connection timed out"))
                    return
                if not data:
                    await send.aclose()
                    return
                if started is not None:
                    got += len(data)
                    elapsed = trio.current_time() - started
                    if (
                        lim.min_frame_rate
                        and elapsed > lim.frame_timeout
                        and got < lim.min_frame_rate * elapsed
                    ):
                        self.stats.timeouts += 1
                        await send.send(RespProtocolError("ERR rkv: request arriving too slowly"))
                        return
                try:
                    commands = parser.feed(data)
                except RespProtocolError as e:
                    self.stats.protocol_errors += 1
                    for c in e.commands:  # what came before the bad bytes is answered first
                        state.inflight += 1
                        state.queued_bytes += _size(c)
                        await send.send(c)
                    await send.send(e)
                    return
                if commands and self.settings.token is None:
                    self.admission.established(ticket)
                for c in commands:
                    state.inflight += 1
                    state.queued_bytes += _size(c)
                    await send.send(c)

        async def writer() -> None:
            async for item in recv:
                out: list[bytes] = []
                size = 0
                while True:
                    if isinstance(item, RespProtocolError):
                        out.append(encode(Err(str(item)), session.proto))
                        async with sending:
                            await _send(stream, out, lim.idle_timeout)
                        raise _Close
                    reply = await execute(ctx, item)
                    self.stats.commands += 1
                    state.inflight -= 1
                    state.queued_bytes -= _size(item)
                    if state.queued_bytes <= lim.max_request:
                        state.drained.set()
                    if (
                        state.inflight == 0
                        and state.timer is not None
                        and not parser.pending
                        and ticket.state != "handshaking"
                    ):
                        # the reader waits with no deadline while commands are in flight
                        idle = math.inf if session.subs.count() else lim.idle_timeout
                        state.timer.deadline = trio.current_time() + idle
                    if session.authed:
                        self.admission.established(ticket)
                    if not ticket.served and ticket.state != "handshaking":
                        self.admission.served(ticket)
                    b = encode(reply, session.proto)
                    out.append(b)
                    size += len(b)
                    if session.closing:
                        async with sending:
                            await _send(stream, out, lim.idle_timeout)
                        raise _Close
                    if size > 1 << 20:
                        break
                    try:
                        item = recv.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                async with sending:
                    await _send(stream, out, lim.idle_timeout)
            raise _Close  # the client closed its side: everything due was answered

        sending = trio.Lock()
        """Replies and pub/sub messages take turns on the stream (whole frames)."""
        pushes: list[Push] = []
        pushed = trio.Event()

        def deliver(messages: list[Push]) -> None:
            if len(pushes) + len(messages) > MAX_PENDING:
                raise SlowSubscriber
            pushes.extend(messages)
            pushed.set()

        async def pusher() -> None:
            nonlocal pushed
            try:
                async with trio.open_nursery() as inner:
                    inner.start_soon(feed, ctx, deliver)
                    while True:
                        await pushed.wait()
                        pushed = trio.Event()
                        out = [encode(m, session.proto) for m in pushes]
                        pushes.clear()
                        async with sending:
                            await _send(stream, out, lim.idle_timeout)
            except* SlowSubscriber:
                why = f"ERR rkv: subscriber too slow: more than {MAX_PENDING} messages unread"
                await self._drop(stream, sending, why, session.proto)
            except* CommandError as eg:
                e = eg.exceptions[0]
                assert isinstance(e, CommandError)
                await self._drop(
                    stream, sending, f"{e.text} (the subscription ended)", session.proto
                )

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                nursery.start_soon(writer)
                nursery.start_soon(pusher)
        except* _Close:
            pass
        except* _GONE:
            pass  # the client went away, or did not read its replies in time
        return None

    async def _drop(
        self, stream: trio.SocketStream, sending: trio.Lock, why: str, proto: int
    ) -> None:
        """End a subscriber's connection with `why`."""
        self.stats.dropped_subscribers += 1
        async with sending:
            await _send(stream, [encode(Err(why), proto)], self.limits.idle_timeout)
        raise _Close

    def statistics(self) -> dict[str, Any]:
        st = self.stats
        return {
            "accepted": st.accepted,
            "refused": st.refused,
            "active": st.active,
            "commands": st.commands,
            "protocol_errors": st.protocol_errors,
            "timeouts": st.timeouts,
            "dropped_subscribers": st.dropped_subscribers,
            "admission": self.admission.statistics(),
        }


async def _send(stream: trio.SocketStream, out: list[bytes], timeout: float) -> None:
    with trio.fail_after(timeout):
        await stream.send_all(b"".join(out))
    out.clear()


async def _goodbye(stream: trio.SocketStream, data: bytes | None) -> None:
    """Send `data` (an error reply), then close. What the client sent meanwhile is read and
    dropped for a moment first: closing with unread bytes would reset the connection, and
    the client could lose the reply."""
    with trio.move_on_after(1.0):
        try:
            if data:
                await stream.send_all(data)
            await stream.send_eof()
            with trio.move_on_after(0.2):
                while await stream.receive_some(65536):
                    pass
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
    with trio.move_on_after(1.0):
        await stream.aclose()
