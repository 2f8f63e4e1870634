"""Request/response RPC over framed TCP: the server loop `serve()` and `RpcClient`.

Owns: accepting connections and running each through its life (TLS, token handshake,
hello, frames, goodbye, close) under admission.py's limits and handshake deadline,
per-connection bounded concurrency with back-pressure, matching responses to requests by
``"id"``, batching of ready responses into one write, error frames, the hello hook, the
idle and slowloris deadlines (a started frame must keep a minimum rate), and a bound on the
sockets kept open only to deliver a last error frame.

Frame conventions (see framing.py for the byte format):
- a frame with an ``"id"`` is a request; the handler's dict is sent back with that id;
- a frame without ``"id"`` is one-way: the handler's return value is ignored, and the
  one-way frames of a connection are handled one at a time in arrival order (requests run
  concurrently); a handler that raises RemoteError on one sends that error frame (without
  id) back: the sender's signal to close the link (e.g. a peer that was removed);
- ``{"t": "error", "code": str, "msg": str}`` is an error; with an ``"id"`` it answers that
  request (the connection stays open), without one it is the server's last word before
  closing the connection (framing garbage, refused hello, too many connections, a shed
  connection, handshake/frame/idle deadlines).
- ``{"t": "hello", "cluster": str, "node": str | None, ...}`` may be the first frame of a
  connection. `serve(on_hello=...)` validates it (raise RemoteError to refuse: the peer gets
  an error frame and the connection is closed); it is never passed to the handler but is
  kept in `ConnInfo.hello`. A hello with an ``"id"`` is answered with ``{"t": "ok"}``.

Security (both optional, see docs/security.md): `serve(ssl_context=...)` speaks TLS and
`serve(token=...)` runs auth.py's challenge-response before anything else on a connection
(a failed or missing proof gets ``{"t": "error", "code": "auth_failed"}`` and the close;
nothing is handed to the handler). `connect_framed` is the matching client side, used by
`RpcClient` and transport.py.

It does not know what frame types mean (the node's handler does) and never reconnects
(transport.py and the client layer do).
"""

from __future__ import annotations

import errno
import itertools
import logging
import math
import ssl
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import trio

from rkv import stagetimes
from rkv.errors import RkvError
from rkv.net import auth, tls
from rkv.net.admission import (
    E_HANDSHAKE_TIMEOUT,
    Admission,
    AdmissionStats,
    Refused,
    Ticket,
)
from rkv.net.framing import (
    DEFAULT_MAX_FRAME,
    E_FRAME_TIMEOUT,
    Frame,
    FrameError,
    encode_frame,
    encode_request,
    error_frame,
)
from rkv.net.stream import FramedStream, IdleTimeout, frame_timeout_message, open_framed

log = logging.getLogger("rkv.net.rpc")

# Error codes the RPC layer itself sends (handlers add their own); admission.py's
# E_TOO_MANY_CONNECTIONS (refused or shed) and E_HANDSHAKE_TIMEOUT too.
E_INTERNAL = "internal"
E_IDLE = "idle_timeout"
E_HELLO_REQUIRED = "hello_required"
E_BAD_HELLO = "bad_hello"

# How long a closing connection may take to deliver its last error frame and drain.
_LINGER = 1.0
_LINGER_DRAIN = 1024 * 1024
# Refusals of excess connections run as tasks; beyond this many, excess sockets are
# closed without an explanation so a connection flood cannot grow the task count.
_MAX_REFUSING = 64
# Connections past their admission (shed, timed out, closed for garbage) that may linger
# at once to deliver their error frame; beyond this many they are closed without one, so
# the sockets held stay bounded however fast a flood reconnects.
_MAX_LINGERING = 64
_MAX_BATCH = 1024
_JOIN_MAX = 64 * 1024
"""RpcClient's writer joins queued frames into one write up to this many bytes."""
_ACCEPT_CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


class _LogLimit:
    """At most one line per `interval` seconds goes to the log through this; the lines held
    back meanwhile are counted in the next one. A flood of bad connections must not flood
    the log (the metrics count every one)."""

    def __init__(self, level: int, interval: float = 10.0) -> None:
        self.level = level
        self.interval = interval
        self.held = 0
        self._next = -math.inf

    def __call__(self, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now < self._next:
            self.held += 1
            return
        if self.held:
            msg += " (and %d more such lines since the last one, not logged)"
            args = (*args, self.held)
            self.held = 0
        self._next = now + self.interval
        log.log(self.level, msg, *args)


class RpcError(Exception):
    """Base of the errors `RpcClient` raises."""


class ConnectionLost(RpcError):
    """The connection failed, was closed, or could not be opened. Safe to retry elsewhere
    (the request may or may not have been executed)."""


class RpcTimeout(RpcError):
    """No answer within the timeout. The connection is still usable."""


class RemoteError(RpcError):
    """An error frame: raised by `RpcClient.call` when the server answered with one, and
    raised by a server handler (or `on_hello`) to answer with one.

    `fields` are the frame's extra keys (e.g. ``leader_addr``); `frame` rebuilds the
    whole error frame (without id), e.g. for `rkv.errors.from_error_frame`.
    """

    def __init__(self, code: str, msg: str = "", fields: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {msg}" if msg else str(code))
        self.code = str(code)
        self.msg = str(msg)
        self.fields: dict[str, Any] = dict(fields) if fields else {}

    @property
    def frame(self) -> Frame:
        return {**self.fields, **error_frame(self.code, self.msg)}

    @classmethod
    def from_frame(cls, frame: Frame) -> RemoteError:
        extra = {k: v for k, v in frame.items() if k not in _ERROR_KEYS}
        code, msg = frame.get("code"), frame.get("msg")
        return cls(
            code if isinstance(code, str) else "internal",
            msg if isinstance(msg, str) else "",
            extra,
        )


_ERROR_KEYS = frozenset({"v", "t", "id", "code", "msg"})


def _as_remote(exc: RemoteError | RkvError) -> RemoteError:
    if isinstance(exc, RemoteError):
        return exc
    return RemoteError(exc.code, exc.msg, exc.to_fields())


@dataclass(slots=True)
class ConnInfo:
    """What a handler knows about the connection a frame came on."""

    conn_id: int
    peer: str
    hello: Frame | None = None
    auth: str | None = None
    """The role (node id or "client") the connection proved with the cluster token; None
    when the server has no token."""


@dataclass(slots=True)
class ServerStats:
    """Counters a caller may pass to `serve(stats=...)` to observe it."""

    accepted: int = 0
    active: int = 0
    refused: int = 0
    frame_errors: int = 0
    requests: int = 0
    oneway: int = 0
    handler_errors: int = 0
    idle_closed: int = 0
    inflight: int = 0
    max_inflight_seen: int = 0
    writes: int = 0
    frame_timeouts: int = 0
    """Connections closed for a frame too slow to arrive (also counted in frame_errors)."""
    admission: AdmissionStats = field(default_factory=AdmissionStats)
    """Connections by state, shed and refused ones by reason, handshake timeouts."""


Handler = Callable[[Frame, ConnInfo], Awaitable[Frame | None]]
HelloHook = Callable[[Frame], None]
Answer = Callable[[Frame | Exception], None]
FrontDoor = Callable[[Frame, ConnInfo, Answer], bool]
"""A synchronous way in for requests that need no task of their own (see `serve`)."""
OnewayDoor = Callable[[Frame, ConnInfo], bool]
"""A synchronous way in for one-way frames (see `serve`)."""


def _peer_address(stream: trio.abc.Stream) -> tuple[str, str]:
    """(host, "host:port") of the other end; "?" when unknown."""
    sock = getattr(stream, "socket", None)
    try:
        name = sock.getpeername() if sock is not None else None
    except OSError:
        return "?", "?"
    if isinstance(name, tuple):
        return str(name[0]), f"{name[0]}:{name[1]}"
    return str(name), str(name)


async def _close_with(fs: FramedStream, last: Frame | None) -> None:
    """Close a connection, first delivering `last` if given.

    Closing a socket with unread input makes the kernel send RST, which can destroy our
    error frame before the peer reads it, so: write, half-close, drain a bounded amount
    for a bounded time, then close.
    """
    stream = fs.stream
    try:
        if last is not None:
            with trio.move_on_after(_LINGER):
                await fs.send(last)
                if isinstance(stream, trio.abc.HalfCloseableStream):
                    await stream.send_eof()
                drained = 0
                while drained < _LINGER_DRAIN:
                    data = await stream.receive_some(64 * 1024)
                    if not data:
                        break
                    drained += len(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError, OSError):
        pass
    finally:
        await trio.aclose_forcefully(stream)


@dataclass(slots=True)
class _Conn:
    fs: FramedStream
    info: ConnInfo
    slots: trio.Semaphore
    send_ch: trio.MemorySendChannel[bytes]
    ticket: Ticket
    inflight: int = 0
    broken: bool = False
    first: bool = True
    """No frame read yet (a hello must come first, if any)."""
    taken: int = 0
    """Requests taken by the front door and not answered yet."""
    queued: int = 0
    """Answers handed to the writer task and not written yet."""
    oneway_queued: int = 0
    """One-way frames handed to the one-way task and not handled yet."""
    all_answered: trio.Event | None = None


@dataclass(slots=True)
class _Server:
    handler: Handler
    max_frame: int
    max_inflight: int
    idle_timeout: float
    frame_timeout: float
    min_frame_rate: float | None
    write_timeout: float
    on_hello: HelloHook | None
    require_hello: bool
    stats: ServerStats
    admission: Admission
    token: str | bytes | None = None
    ssl_context: ssl.SSLContext | None = None
    front_door: FrontDoor | None = None
    oneway_door: OnewayDoor | None = None
    refusing: int = 0
    lingering: int = 0
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    note: _LogLimit = field(default_factory=lambda: _LogLimit(logging.INFO))
    """Why connections were closed (shed, deadlines, garbage, failed handshakes)."""
    warn_accept: _LogLimit = field(default_factory=lambda: _LogLimit(logging.WARNING))

    async def accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno in _ACCEPT_CAPACITY_ERRNOS:
                    self.warn_accept("accept failed (%s); pausing", exc)
                    await trio.sleep(0.1)
                    continue
                raise
            try:
                # May shed an older connection (cancels its scope) to make room.
                host, name = _peer_address(stream)
                ticket = self.admission.admit(host, trio.current_time())
            except Refused as exc:
                self.stats.refused += 1
                if self.refusing < _MAX_REFUSING:
                    self.refusing += 1
                    nursery.start_soon(self.refuse, stream, exc.frame)
                else:
                    await trio.aclose_forcefully(stream)
                continue
            self.stats.accepted += 1
            self.stats.active += 1
            nursery.start_soon(self.connection, stream, ticket, name)

    async def refuse(self, stream: trio.SocketStream, frame: Frame) -> None:
        try:
            await _close_with(FramedStream(stream, self.max_frame), frame)
        finally:
            self.refusing -= 1

    async def connection(self, stream: trio.SocketStream, ticket: Ticket, peer: str) -> None:
        info = ConnInfo(conn_id=next(self.ids), peer=peer)
        fs: FramedStream | None = None
        goodbye: Frame | None = None
        try:
            # The ticket's scope carries the handshake deadline (lifted once the connection
            # is through it) and is cancelled if the connection is shed.
            with ticket.scope:
                s = await self._tls(stream, info)
                if s is not None:
                    fs = FramedStream(s, self.max_frame)
                    goodbye = await self._serve(fs, info, ticket)
            if ticket.scope.cancelled_caught:
                goodbye = self._cut_off(ticket, info)
            self.admission.release(ticket)
            if fs is not None:
                await self._close(fs, goodbye)
        finally:
            self.admission.release(ticket)
            self.stats.active -= 1
            # Also on cancellation (server shutdown): peers must see the close at once.
            await trio.aclose_forcefully(stream)

    def _cut_off(self, ticket: Ticket, info: ConnInfo) -> Frame:
        """The goodbye of a connection whose scope was cancelled: shed, or too slow to get
        through its handshake."""
        if ticket.goodbye is not None:
            self.note("shedding %s: %s", info.peer, ticket.goodbye.get("msg"))
            return ticket.goodbye
        self.admission.timed_out(ticket)
        what = "authentication" if self.token is not None else "complete first frame"
        msg = f"no {what} within {self.admission.handshake_timeout} seconds of connecting"
        self.note("closing %s: %s", info.peer, msg)
        return error_frame(E_HANDSHAKE_TIMEOUT, msg)

    async def _close(self, fs: FramedStream, goodbye: Frame | None) -> None:
        """Deliver `goodbye` (bounded: see _MAX_LINGERING) and close."""
        if goodbye is None or self.lingering >= _MAX_LINGERING:
            await trio.aclose_forcefully(fs.stream)
            return
        self.lingering += 1
        try:
            await _close_with(fs, goodbye)
        finally:
            self.lingering -= 1

    async def _tls(self, stream: trio.SocketStream, info: ConnInfo) -> trio.abc.Stream | None:
        """The TLS handshake, if TLS is on (under the ticket's deadline): the stream to use,
        or None after a failure."""
        if self.ssl_context is None:
            return stream
        try:
            return await tls.wrap(stream, self.ssl_context, server_side=True, timeout=math.inf)
        except (trio.BrokenResourceError, trio.TooSlowError, OSError) as exc:
            self.note("TLS handshake with %s failed: %r", info.peer, exc)
            return None

    async def _serve(self, fs: FramedStream, info: ConnInfo, ticket: Ticket) -> Frame | None:
        """The token handshake (if a token is set), then the frames; returns the goodbye."""
        if self.token is not None:
            # Nothing before the proof may be larger than the handshake's own frames.
            fs.receive_limit = min(self.max_frame, auth.MAX_AUTH_FRAME)
            role, refusal = await auth.server_handshake(fs, self.token, math.inf)
            if role is None:
                if refusal is not None:
                    self.note("refusing %s: %s", info.peer, refusal.get("msg"))
                return refusal
            fs.receive_limit = self.max_frame
            info.auth = role
        else:
            # Only a read until the first frame is complete: a connection that never sends
            # one (a flood) costs this task and no more (no writer, no handler nursery).
            try:
                first = await fs.peek(
                    idle_timeout=self.idle_timeout,
                    frame_timeout=self.frame_timeout,
                    min_rate=self.min_frame_rate,
                )
            except IdleTimeout:
                return self._idle()
            except FrameError as exc:
                return self._frame_error(info, exc)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                return None
            if first is None:
                return None
        self.admission.established(ticket)
        return await self._run(fs, info, ticket)

    async def _run(self, fs: FramedStream, info: ConnInfo, ticket: Ticket) -> Frame | None:
        # One slot per request from the moment it is read until its answer is written
        # (or it finished, if one-way). The reader takes a slot before reading, so when
        # all are taken it stops reading and TCP pushes back on the peer.
        send_ch, recv_ch = trio.open_memory_channel[bytes](self.max_inflight + 1)
        conn = _Conn(fs, info, trio.Semaphore(self.max_inflight), send_ch, ticket)
        goodbye: Frame | None = None
        async with trio.open_nursery() as conn_nursery:
            conn_nursery.start_soon(self._writer, conn, recv_ch, conn_nursery.cancel_scope)
            oneway_send, oneway_recv = trio.open_memory_channel[Frame](self.max_inflight)
            async with send_ch, trio.open_nursery() as handlers:
                handlers.start_soon(self._oneway_loop, conn, oneway_recv)
                async with oneway_send:
                    goodbye = await self._reader(conn, handlers, oneway_send)
                if goodbye is not None:
                    handlers.cancel_scope.cancel()
                elif conn.taken:
                    # Like the handler tasks: answers still due are written before the close.
                    conn.all_answered = trio.Event()
                    await conn.all_answered.wait()
            # send_ch is closed: the writer flushes what is queued, then returns.
        if conn.broken:
            return None
        return goodbye

    def _done(self, conn: _Conn, n: int) -> None:
        conn.inflight -= n
        self.stats.inflight -= n
        for _ in range(n):
            conn.slots.release()

    async def _oneway_loop(self, conn: _Conn, frames: trio.MemoryReceiveChannel[Frame]) -> None:
        # One-way frames (peer traffic) are handled one at a time in arrival order: trio
        # runs tasks in no fixed order, and Raft, while tolerant, works best in TCP order.
        async with frames:
            async for frame in frames:
                await self._handle(conn, frame)
                conn.oneway_queued -= 1

    async def _reader(
        self, conn: _Conn, handlers: trio.Nursery, oneway: trio.MemorySendChannel[Frame]
    ) -> Frame | None:
        """Read frames until the connection ends; returns the goodbye frame (an error to send
        before closing) or None. The idle and frame deadlines live on one cancel scope, re-armed
        per read (FramedStream.receive's `guard`), not on a new scope per frame."""
        while True:
            with trio.CancelScope() as guard:
                return await self._read_frames(conn, handlers, oneway, guard)
            # A deadline passed while waiting for bytes (nothing read is lost).
            if conn.fs.in_frame:
                msg = frame_timeout_message(self.frame_timeout, self.min_frame_rate)
                return self._frame_error(conn.info, FrameError(E_FRAME_TIMEOUT, msg))
            if conn.inflight > 0:
                continue  # a client waiting on a slow answer is not idle
            return self._idle()

    def _idle(self) -> Frame:
        self.stats.idle_closed += 1
        return error_frame(E_IDLE, f"no request for {self.idle_timeout} seconds")

    def _frame_error(self, info: ConnInfo, exc: FrameError) -> Frame:
        """Count and log a frame error (garbage, too large, too slow): the goodbye to send."""
        self.stats.frame_errors += 1
        if exc.code == E_FRAME_TIMEOUT:
            self.stats.frame_timeouts += 1
        self.note("closing %s: %s", info.peer, exc)
        return error_frame(exc.code, exc.message)

    async def _read_frames(
        self,
        conn: _Conn,
        handlers: trio.Nursery,
        oneway: trio.MemorySendChannel[Frame],
        guard: trio.CancelScope,
    ) -> Frame | None:
        while True:
            try:
                conn.slots.acquire_nowait()  # the common case, without a task switch
            except trio.WouldBlock:
                guard.deadline = math.inf  # waiting on our own answers is not idleness
                await conn.slots.acquire()
            try:
                frame = await conn.fs.receive(
                    idle_timeout=self.idle_timeout,
                    frame_timeout=self.frame_timeout,
                    min_rate=self.min_frame_rate,
                    guard=guard,
                )
            except trio.Cancelled:
                conn.slots.release()
                raise
            except FrameError as exc:
                conn.slots.release()
                return self._frame_error(conn.info, exc)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                conn.slots.release()
                conn.broken = True
                return None
            if frame is None:
                conn.slots.release()
                return None
            if stagetimes.clock is not None:
                stagetimes.clock.frame_read()
            if frame["t"] == "auth_start":
                # A token-holding client talking to a node without one: say so at once.
                conn.slots.release()
                return error_frame(auth.E_AUTH_FAILED, "this node has no cluster token set")
            if frame["t"] == "hello":
                if not conn.first:
                    conn.slots.release()
                    return error_frame(E_BAD_HELLO, "hello must be the first frame")
                conn.first = False
                claimed = frame.get("node")
                if conn.info.auth is not None and claimed is not None and claimed != conn.info.auth:
                    conn.slots.release()
                    return error_frame(
                        E_BAD_HELLO, f"hello names {claimed!r} but authenticated as another"
                    )
                if self.on_hello is not None:
                    try:
                        self.on_hello(frame)
                    except (RemoteError, RkvError) as exc:
                        conn.slots.release()
                        self.note("refusing hello from %s: %s", conn.info.peer, exc)
                        return _as_remote(exc).frame
                conn.info.hello = frame
                if isinstance(claimed, str) and claimed:
                    # A peer link: never shed; out of its source's count once authenticated.
                    self.admission.peer(conn.ticket, authenticated=conn.info.auth == claimed)
                if "id" in frame:
                    self._enter(conn)
                    self._queue(conn, encode_frame({"t": "ok", "id": frame["id"]}))
                else:
                    conn.slots.release()
                continue
            if conn.first and self.require_hello:
                conn.slots.release()
                return error_frame(E_HELLO_REQUIRED, "the first frame must be a hello")
            conn.first = False
            if not conn.ticket.served:
                self.admission.served(conn.ticket)
            self._enter(conn)
            if "id" in frame:
                if self.front_door is None or not self._take(conn, frame):
                    handlers.start_soon(self._handle, conn, frame)
            elif (
                self.oneway_door is None or conn.oneway_queued or not self._take_oneway(conn, frame)
            ):
                # Cannot block: every queued frame holds one of max_inflight slots.
                conn.oneway_queued += 1
                oneway.send_nowait(frame)

    def _enter(self, conn: _Conn) -> None:
        conn.inflight += 1
        self.stats.inflight += 1
        self.stats.max_inflight_seen = max(self.stats.max_inflight_seen, self.stats.inflight)

    def _queue(self, conn: _Conn, data: bytes) -> None:
        if conn.inflight == 1 and conn.queued == 0 and not conn.broken:
            # The only answer due on this connection, nothing queued before it: write it
            # from this task when the socket takes it (no wake-up of the writer task).
            # With more in flight the writer batches them into one write instead.
            n = conn.fs.try_send_now(data)
            if n == len(data):
                if stagetimes.clock is not None:
                    stagetimes.clock.mark("answer_written")
                self.stats.writes += 1
                self._done(conn, 1)
                return
            data = data[n:]  # the tail must be the next bytes on the wire: queued now
        try:
            conn.send_ch.send_nowait(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.WouldBlock):
            # The writer is gone (connection broken); the slot bound makes WouldBlock
            # impossible, but dropping is the right answer either way.
            self._done(conn, 1)
            return
        conn.queued += 1

    def _take(self, conn: _Conn, frame: Frame) -> bool:
        """Offer request `frame` to the front door; True if it took it (and will answer)."""
        assert self.front_door is not None
        answered = False

        def answer(result: Frame | Exception) -> None:
            nonlocal answered
            if answered:
                return
            answered = True
            conn.taken -= 1
            if conn.taken == 0 and conn.all_answered is not None:
                conn.all_answered.set()
            self._reply(conn, frame, result)

        conn.taken += 1
        try:
            took = self.front_door(frame, conn.info, answer)
        except Exception as exc:
            answer(exc)
            took = True
        if not took:
            conn.taken -= 1
            return False
        self.stats.requests += 1
        return True

    def _take_oneway(self, conn: _Conn, frame: Frame) -> bool:
        """Offer one-way `frame` to the one-way door (no earlier one-way frame of `conn` is
        still queued, so arrival order holds); True if it took it (and it is done)."""
        assert self.oneway_door is not None
        try:
            took = self.oneway_door(frame, conn.info)
        except Exception as exc:
            self.stats.oneway += 1
            self._reply(conn, frame, exc)  # as from the handler: sent if a RemoteError
            return True
        if took:
            self.stats.oneway += 1
            self._done(conn, 1)
        return took

    async def _handle(self, conn: _Conn, frame: Frame) -> None:
        if frame.get("id") is None:
            self.stats.oneway += 1
        else:
            self.stats.requests += 1
        result: Frame | Exception | None
        try:
            result = await self.handler(frame, conn.info)
        except Exception as exc:
            result = exc
        except BaseException:
            self._done(conn, 1)  # cancelled (the connection closes): nothing to answer
            raise
        self._reply(conn, frame, result)

    def _reply(self, conn: _Conn, frame: Frame, result: Frame | Exception | None) -> None:
        """Answer `frame` with the handler's result (a frame, None for none, or the exception
        it raised), and give its slot back once that is written (at once if there is none)."""
        rid: int | None = frame.get("id")
        data: bytes | None = None
        bug: Exception | None = None
        if isinstance(result, (RemoteError, RkvError)):
            if rid is not None:
                err = _as_remote(result)
                data = encode_frame({**err.frame, "id": rid}, self.max_frame)
            elif isinstance(result, RemoteError):
                data = encode_frame(result.frame, self.max_frame)
            else:
                log.debug("one-way %r from %s failed: %s", frame["t"], conn.info.peer, result)
        elif isinstance(result, Exception):
            bug = result
        elif rid is not None and result is not None:
            try:
                data = encode_frame({**result, "id": rid}, self.max_frame)
            except (TypeError, ValueError) as exc:
                bug = exc
        if bug is not None:
            # A bug in one request must not take the node down; it is logged loudly
            # and the caller gets an "internal" error instead of a hang.
            self.stats.handler_errors += 1
            log.error("handler failed on %r from %s", frame["t"], conn.info.peer, exc_info=bug)
            if rid is not None:
                msg = f"{type(bug).__name__}: {bug}"[:1000]
                data = encode_frame(error_frame(E_INTERNAL, msg, rid), self.max_frame)
        if data is None:
            self._done(conn, 1)
        else:
            self._queue(conn, data)

    async def _writer(
        self, conn: _Conn, recv_ch: trio.MemoryReceiveChannel[bytes], scope: trio.CancelScope
    ) -> None:
        async with recv_ch:
            async for first in recv_ch:
                batch = [first]
                while len(batch) < _MAX_BATCH:
                    try:
                        batch.append(recv_ch.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                try:
                    self.stats.writes += 1
                    data = b"".join(batch)
                    # Most answers fit the socket buffer: write them without the deadline
                    # machinery (a cancel scope per write costs more than the write).
                    sent = conn.fs.try_send_now(data)
                    if sent < len(data):
                        with trio.fail_after(self.write_timeout):
                            await conn.fs.send_encoded([data[sent:]])
                    if stagetimes.clock is not None:
                        stagetimes.clock.mark("answer_written")
                except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
                    conn.broken = True
                    scope.cancel()
                    return
                finally:
                    conn.queued -= len(batch)
                    self._done(conn, len(batch))


async def serve(
    handler: Handler,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    max_frame: int = DEFAULT_MAX_FRAME,
    max_connections: int = 1024,
    max_connections_per_source: int = 256,
    max_inflight_per_conn: int = 256,
    idle_timeout: float = 300.0,
    frame_timeout: float = 10.0,
    min_frame_rate: float | None = 16384.0,
    write_timeout: float = 30.0,
    on_hello: HelloHook | None = None,
    require_hello: bool = False,
    stats: ServerStats | None = None,
    token: str | bytes | None = None,
    ssl_context: ssl.SSLContext | None = None,
    handshake_timeout: float = 5.0,
    front_door: FrontDoor | None = None,
    oneway_door: OnewayDoor | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `handler` on host:port until cancelled; `task_status.started(bound_port)`.

    With `front_door`, each request (a frame with an id) is first offered to
    `front_door(frame, info, answer)`, called synchronously by the connection's reader. If it
    returns True it took the request and must call `answer` once, from any task, with the
    response frame or the exception `handler` would have raised (raising from the front door
    itself counts as that); the request then costs no task of its own. If it returns False
    the request goes to `handler` as usual. Its slot is held until the answer is written.
    Likewise `oneway_door(frame, info)` for one-way frames (no id; peer traffic), offered
    when no earlier one-way frame of the connection waits for its task: True if it handled
    the frame (synchronously: it is done when the door returns; an exception counts as the
    handler's), False to queue it for `handler` in arrival order.

    Per connection: frames are read while fewer than `max_inflight_per_conn` requests are
    in flight (then reading stops: back-pressure), each runs `await handler(frame, info)`
    in its own task, and answers ready in the same loop turn go out in one write.
    A handler raising RemoteError answers with an error frame; any other exception is
    logged and answered with code "internal". Framing garbage gets an error frame and the
    connection is closed; other connections are unaffected.

    Admission (admission.py): at most `max_connections` connections, and at most
    `max_connections_per_source` from one address (peer links authenticated with the token
    count toward the total only); a newcomer over a limit sheds the oldest connection still
    in its handshake, else the oldest client that completed no request (never a peer link),
    and is refused only when there is none. A new connection must get through its handshake
    within `handshake_timeout` seconds of being accepted: TLS if on, then the token handshake
    if a token is set, or else its first complete frame.

    Deadlines after that: a connection with nothing in flight and no frame for
    `idle_timeout` seconds is closed; a started frame's bytes must arrive at `min_frame_rate`
    bytes/s on average after a grace of `frame_timeout` seconds, with no pause longer than
    that (None: the whole frame within `frame_timeout` seconds; see
    FramedStream.receive); a write must complete within `write_timeout` seconds.

    With `ssl_context` (see tls.server_context) connections speak TLS; with `token` each
    must pass auth.py's challenge-response first (`ConnInfo.auth` is the proven role, and a
    hello naming another node is refused); frames before the proof may be at most
    auth.MAX_AUTH_FRAME bytes.

    Raises OSError (naming host and port) when the address cannot be bound.
    """
    if max_connections < 1 or max_connections_per_source < 1 or max_inflight_per_conn < 1:
        raise ValueError(
            "max_connections, max_connections_per_source and max_inflight_per_conn must be >= 1"
        )
    for name, value in (
        ("idle_timeout", idle_timeout),
        ("frame_timeout", frame_timeout),
        ("write_timeout", write_timeout),
        ("handshake_timeout", handshake_timeout),
        ("min_frame_rate", 1.0 if min_frame_rate is None else min_frame_rate),
    ):
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")
    stats = stats if stats is not None else ServerStats()
    admission = Admission(
        max_connections, max_connections_per_source, handshake_timeout, stats.admission
    )
    try:
        listeners = await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {reason}") from exc
    server = _Server(
        handler=handler,
        max_frame=max_frame,
        max_inflight=max_inflight_per_conn,
        idle_timeout=idle_timeout,
        frame_timeout=frame_timeout,
        min_frame_rate=min_frame_rate,
        write_timeout=write_timeout,
        on_hello=on_hello,
        require_hello=require_hello,
        stats=stats,
        admission=admission,
        token=token or None,
        ssl_context=ssl_context,
        front_door=front_door,
        oneway_door=oneway_door,
    )
    try:
        bound: int = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(server.accept_loop, listener, nursery)
            task_status.started(bound)
    finally:
        with trio.CancelScope(shield=True):
            for listener in listeners:
                await listener.aclose()


async def connect_framed(
    host: str,
    port: int,
    timeout: float = 5.0,
    *,
    max_frame: int = DEFAULT_MAX_FRAME,
    ssl_context: ssl.SSLContext | None = None,
    token: str | bytes | None = None,
    role: str = auth.CLIENT_ROLE,
) -> FramedStream:
    """Connect, then (if given) do the TLS handshake and prove `token` as `role`, all within
    `timeout`. Raises ConnectionLost (cannot connect, TLS failure, deadline) or
    RemoteError("auth_failed", ...) when the token handshake fails either way, or
    RemoteError with the server's code when it ended the handshake otherwise (shed, refused,
    too slow: worth retrying, unlike auth_failed)."""
    deadline = trio.current_time() + timeout
    try:
        fs = await open_framed(host, port, timeout, max_frame=max_frame)
    except (OSError, trio.TooSlowError) as exc:
        raise ConnectionLost(f"cannot connect to {host}:{port}: {exc}") from exc
    try:
        if ssl_context is not None:
            left = max(deadline - trio.current_time(), 1e-3)
            stream = await tls.wrap(
                fs.stream, ssl_context, server_side=False, server_hostname=host, timeout=left
            )
            fs = FramedStream(stream, max_frame)
        if token:
            left = max(deadline - trio.current_time(), 1e-3)
            await auth.client_handshake(fs, token, role, left)
    except auth.AuthFailed as exc:
        await trio.aclose_forcefully(fs.stream)
        raise RemoteError(exc.code, exc.msg) from None
    except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, OSError) as exc:
        await trio.aclose_forcefully(fs.stream)
        what = "TLS/authentication" if ssl_context is not None else "authentication"
        raise ConnectionLost(f"{what} with {host}:{port} failed: {exc!r}") from exc
    return fs


@dataclass(slots=True)
class _Waiter:
    """One call waiting for its answer. Whoever settles it (the reader with the frame, the
    watchdog with a timeout, `_fail` with the error) sets its field, takes it out of
    `_pending` and reschedules `task` (the caller, while it is parked): no Event per call."""

    task: trio.lowlevel.Task | None = None
    frame: Frame | None = None
    error: RpcError | None = None
    deadline: float = math.inf
    timed_out: bool = False
    settled: bool = False

    def settle(self) -> None:
        self.settled = True
        task, self.task = self.task, None
        if task is not None:
            trio.lowlevel.reschedule(task)


class RpcClient:
    """One connection to an rpc server, shared by many concurrent callers.

    Use as ``async with RpcClient(host, port) as client: await client.call({...})``.
    Calls are multiplexed by ``"id"``; at most `max_inflight` are outstanding (more
    callers wait for a slot, inside their timeout). When the connection breaks, every
    pending and later call raises ConnectionLost; the client never reconnects (open a new
    one). If `hello` is given it is sent first (without an id). `ssl_context` and `token`:
    see `connect_framed` (the role proven is the hello's "node", else "client").

    Writes: a call made while no other is outstanding writes its frame at once from the
    caller's task (one write, no task switch); calls made while others are outstanding queue
    their frames for the writer task, which writes everything queued once per loop turn, small
    frames joined into one write (at most `max_inflight` frames queued; more wait).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        connect_timeout: float = 5.0,
        timeout: float = 10.0,
        max_frame: int = DEFAULT_MAX_FRAME,
        max_inflight: int = 256,
        hello: Frame | None = None,
        ssl_context: ssl.SSLContext | None = None,
        token: str | bytes | None = None,
    ) -> None:
        if max_inflight < 1:
            raise ValueError("max_inflight must be >= 1")
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.max_frame = max_frame
        self.max_inflight = max_inflight
        self._hello = hello
        self._ssl_context = ssl_context
        self._token = token or None
        self._fs: FramedStream | None = None
        self._stack: AsyncExitStack | None = None
        self._scope = trio.CancelScope()
        self._slots = trio.Semaphore(max_inflight)
        self._out: list[bytes] = []
        """Encoded frames handed to the writer task and not yet written, in order."""
        self._writer_lot = trio.lowlevel.ParkingLot()
        self._space_lot = trio.lowlevel.ParkingLot()
        self._pending: dict[int, _Waiter] = {}
        self._ids = itertools.count(1)
        self._error: RpcError | None = None
        self._calls = 0
        self._queued = 0  # frames handed to the writer task and not yet written
        self._timeouts = 0
        self._min_limit = timeout if timeout > 0 else 1.0
        """The shortest call timeout seen: the watchdog never sleeps longer than this."""
        self._watch_at = math.inf
        """When the watchdog wakes next: a call due earlier wakes it (rarely)."""
        self._watch_wake = trio.Event()

    @property
    def connected(self) -> bool:
        return self._fs is not None and self._error is None

    def statistics(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "pending": len(self._pending),
            "calls": self._calls,
            "timeouts": self._timeouts,
            "error": None if self._error is None else str(self._error),
        }

    async def __aenter__(self) -> RpcClient:
        if self._stack is not None:
            raise RuntimeError("RpcClient can be entered only once")
        node = None if self._hello is None else self._hello.get("node")
        self._fs = await connect_framed(
            self.host,
            self.port,
            self.connect_timeout,
            max_frame=self.max_frame,
            ssl_context=self._ssl_context,
            token=self._token,
            role=node if isinstance(node, str) and node else auth.CLIENT_ROLE,
        )
        stack = AsyncExitStack()
        try:
            stack.push_async_callback(trio.aclose_forcefully, self._fs.stream)
            nursery = await stack.enter_async_context(trio.open_nursery())
            if self._hello is not None:
                hello = {**self._hello, "t": "hello"}
                hello.pop("id", None)
                self._out.append(encode_frame(hello, self.max_frame))
                self._queued += 1
            nursery.start_soon(self._tasks)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        return self

    async def __aexit__(self, *exc_info: object) -> bool:
        self._fail(ConnectionLost("client closed"))
        stack, self._stack = self._stack, None
        if stack is not None:
            # The body's exception (if any) propagates on its own; handing it to the
            # nursery would wrap it in an ExceptionGroup.
            await stack.aclose()
        return False

    async def aclose(self) -> None:
        """Fail pending calls and stop the connection's tasks (the context exit waits)."""
        self._fail(ConnectionLost("client closed"))

    def _fail(self, error: RpcError) -> None:
        if self._error is None:
            self._error = error
        pending = list(self._pending.values())
        self._pending.clear()
        for waiter in pending:
            waiter.error = self._error
            waiter.settle()
        self._space_lot.unpark_all()
        self._scope.cancel()

    def _lost(self) -> RpcError:
        err = self._error
        if isinstance(err, RemoteError) and err.code == auth.E_AUTH_FAILED:
            return RemoteError(err.code, err.msg, err.fields)  # not retryable elsewhere
        if isinstance(err, ConnectionLost):
            return ConnectionLost(str(err))
        return ConnectionLost(f"connection closed after: {err}")

    async def _tasks(self) -> None:
        with self._scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._reader)
                nursery.start_soon(self._writer)
                nursery.start_soon(self._watchdog)

    async def _watchdog(self) -> None:
        """Answers calls past their deadline with a timeout: one task per connection instead
        of a cancel scope per call (which costs more than the rest of a small call). It
        sleeps until the earliest pending deadline, or for the shortest timeout seen when
        nothing is pending, so a new call only wakes it if it is due before that."""
        while True:
            now = trio.current_time()
            nxt = now + self._min_limit
            for rid, w in list(self._pending.items()):
                if w.deadline <= now:
                    del self._pending[rid]
                    w.timed_out = True
                    w.settle()
                elif w.deadline < nxt:
                    nxt = w.deadline
            self._watch_at = nxt
            self._watch_wake = trio.Event()
            with trio.move_on_at(nxt):
                await self._watch_wake.wait()

    async def _reader(self) -> None:
        fs = self._fs
        assert fs is not None
        pending = self._pending
        try:
            while True:
                frames = await fs.receive_many()
                if not frames:
                    self._fail(ConnectionLost("server closed the connection"))
                    return
                for frame in frames:
                    rid = frame.get("id")
                    if rid is None:
                        if frame["t"] == "error":
                            self._fail(RemoteError.from_frame(frame))
                            return
                        if frame["t"] == "challenge":
                            msg = "the node requires a cluster token (--token / RKV_CLUSTER_TOKEN)"
                            self._fail(RemoteError(auth.E_AUTH_FAILED, msg))
                            return
                        log.debug("ignoring unsolicited %r frame", frame["t"])
                        continue
                    waiter = pending.pop(rid, None)
                    if waiter is None:
                        continue  # the answer to a call that already timed out
                    waiter.frame = frame
                    waiter.settle()
        except FrameError as exc:
            self._fail(ConnectionLost(f"garbage from {self.host}:{self.port}: {exc}"))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._fail(ConnectionLost(f"connection to {self.host}:{self.port} lost: {exc!r}"))

    async def _writer(self) -> None:
        """Writes everything queued in `_out`, once per loop turn at most: small frames joined
        (up to _JOIN_MAX bytes a write), large ones as they are."""
        fs = self._fs
        assert fs is not None
        try:
            while True:
                if not self._out:
                    await self._writer_lot.park()
                    continue
                batch, self._out = self._out, []
                self._space_lot.unpark_all()
                count = len(batch)
                batch.reverse()
                while batch:
                    # Small frames are joined into one write; large ones go as they are (a
                    # join would copy them, and an upload's window of them at once).
                    data = batch.pop()
                    if len(data) < _JOIN_MAX and batch:
                        parts, size = [data], len(data)
                        while batch and size + len(batch[-1]) <= _JOIN_MAX:
                            parts.append(batch.pop())
                            size += len(parts[-1])
                        data = b"".join(parts) if len(parts) > 1 else data
                    n = fs.try_send_now(data)
                    if n < len(data):
                        with memoryview(data) as view:
                            await fs.send_raw(view[n:])
                self._queued -= count
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._fail(ConnectionLost(f"connection to {self.host}:{self.port} lost: {exc!r}"))

    def _hand_over(self, data: bytes) -> None:
        self._out.append(data)
        self._queued += 1
        if len(self._out) == 1:
            self._writer_lot.unpark()

    def _send_now(self, data: bytes, alone: bool) -> bool:
        """Send whole frames without waiting: written at once from the calling task when
        nothing is queued, `alone` (no other call outstanding: nobody else will write in this
        loop turn) and the socket takes them (no wake-up of the writer task), else queued for
        the writer, which writes all that is queued at once. False when the queue is full
        (then `_send_later`); raises ClosedResourceError when the connection has failed."""
        if self._queued == 0 and alone:
            assert self._fs is not None
            n = self._fs.try_send_now(data)
            if n == len(data):
                return True
            if n:
                # The tail of a frame must be the next bytes on the wire: queued without
                # waiting, so no cancellation can drop it.
                self._hand_over(data[n:])
                return True
        if len(self._out) >= self.max_inflight:
            return False
        if self._error is not None:
            raise trio.ClosedResourceError
        self._hand_over(data)
        return True

    async def _send_later(self, data: bytes) -> None:
        """Queue `data` for the writer once the queue has room."""
        while len(self._out) >= self.max_inflight:
            if self._error is not None:
                raise trio.ClosedResourceError
            await self._space_lot.park()
        if self._error is not None:
            raise trio.ClosedResourceError
        self._hand_over(data)

    async def call(self, frame: Frame, timeout: float | None = None) -> Frame:
        """Send a request and return the response frame.

        `timeout` (seconds; default: the client's `timeout`, math.inf = none) covers
        waiting for a slot, sending and the answer. Raises RpcTimeout, ConnectionLost, or
        RemoteError(code, msg) for an error frame; TypeError/ValueError for a frame that
        cannot be encoded (local misuse).
        """
        if self._error is not None or self._fs is None:
            raise self._lost() if self._fs is not None else ConnectionLost("not connected")
        rid = next(self._ids)
        data = encode_request(frame, rid, self.max_frame)
        self._calls += 1
        waiter = _Waiter()
        limit = self.timeout if timeout is None else timeout
        if limit is None:
            limit = math.inf
        try:
            # Nearly always a slot is free: then no cancel scope (the watchdog times the call
            # out) and no wait for the slot.
            self._slots.acquire_nowait()
        except trio.WouldBlock:
            with trio.move_on_after(limit):
                async with self._slots:
                    await self._exchange(rid, data, waiter)
        else:
            try:
                await self._exchange(rid, data, waiter, limit)
            finally:
                self._slots.release()
        reply = waiter.frame
        if reply is not None:
            if reply["t"] == "error":
                raise RemoteError.from_frame(reply)
            return reply
        if waiter.error is not None:
            if isinstance(waiter.error, RemoteError):
                raise RemoteError(waiter.error.code, waiter.error.msg, waiter.error.fields)
            raise ConnectionLost(str(waiter.error))
        self._timeouts += 1
        raise RpcTimeout(f"no answer to {frame.get('t')!r} within {limit} seconds")

    async def _exchange(
        self, rid: int, data: bytes, waiter: _Waiter, limit: float | None = None
    ) -> None:
        """Send request `rid` and wait for its answer, an error, or (with `limit`) for the
        watchdog to time it out `limit` seconds from now; the caller holds a slot."""
        if self._error is not None:
            raise self._lost()
        if limit is not None:
            deadline = waiter.deadline = trio.current_time() + limit
            if limit < self._min_limit:
                self._min_limit = max(limit, 1e-3)
            if deadline < self._watch_at:
                self._watch_wake.set()
        pending = self._pending
        alone = not pending
        pending[rid] = waiter
        try:
            try:
                if not self._send_now(data, alone):
                    await self._send_later(data)
            except trio.ClosedResourceError:
                raise self._lost() from None
            if not waiter.settled:
                waiter.task = trio.lowlevel.current_task()

                def abort(_: object) -> trio.lowlevel.Abort:
                    waiter.task = None
                    return trio.lowlevel.Abort.SUCCEEDED

                await trio.lowlevel.wait_task_rescheduled(abort)
        finally:
            pending.pop(rid, None)

    async def send_oneway(self, frame: Frame) -> None:
        """Queue a frame that gets no answer (waits only when the send queue is full)."""
        if "id" in frame:
            raise ValueError("a one-way frame has no id")
        data = encode_frame(frame, self.max_frame)
        if self._error is not None or self._fs is None:
            raise self._lost() if self._fs is not None else ConnectionLost("not connected")
        try:
            if not self._send_now(data, not self._pending):
                await self._send_later(data)
        except trio.ClosedResourceError:
            raise self._lost() from None
