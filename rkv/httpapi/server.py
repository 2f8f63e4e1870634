"""HTTP/1.1 connections on trio, parsed by h11: the listener and one task per connection.

Owns: accepting connections (TLS when given a context), the connection cap (503 beyond),
each connection's cycle of requests (keep-alive, pipelined requests taken one at a time,
what is left of a body a route did not read), the bounds of a request head (431 when too
large, 408 when it does not complete in time: slowloris; an idle keep-alive connection is
closed), and closing cleanly (a refused request's answer is not destroyed by a reset).
Bodies and responses are rkv.httpapi.exchange's. Must not: know what a path means
(rkv.httpapi.api routes), talk to the node, or hold a whole body it streams.

h11 (the sans-I/O HTTP/1.1 parser under httpx and hypercorn) does the protocol; this module
only moves its bytes over trio streams within deadlines.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from functools import partial

import h11
import trio

from rkv.httpapi.exchange import (
    RECV,
    Abort,
    Conn,
    ErrorResponder,
    Handler,
    HttpError,
    Io,
    Limits,
    ReadTimeout,
    Request,
)

log = logging.getLogger("rkv.httpapi")

_LINGER = 0.5


async def _next_request(io: Io, first: bool) -> h11.Request | None:
    """The next request's head; None when the client closed or stayed idle too long."""
    lim = io.limits
    now = trio.current_time()
    wait = lim.head_timeout if first else lim.idle_timeout
    # Before its first byte a request may wait `wait`; once bytes arrived, its head must be
    # complete `head_timeout` after the first of them.
    ev = io.conn.next_event()
    if ev is h11.NEED_DATA:
        if not io.conn.trailing_data[0]:
            try:
                with trio.fail_at(now + wait):
                    data = await io.stream.receive_some(RECV)
            except trio.TooSlowError:
                return None
            io.conn.receive_data(bytes(data))
        ev = await io.next_event(trio.current_time() + lim.head_timeout, "request head")
    if isinstance(ev, h11.Request):
        # h11 bounds a head still arriving; one that arrived whole in a read is measured here
        size = len(ev.target) + sum(len(k) + len(v) + 4 for k, v in ev.headers)
        if size > lim.max_head:
            raise h11.RemoteProtocolError("request head too large", 431)
        return ev
    if isinstance(ev, h11.ConnectionClosed) or ev is h11.PAUSED:
        return None
    raise h11.RemoteProtocolError(f"unexpected {type(ev).__name__}", 400)


async def _connection(
    stream: trio.abc.Stream, handler: Handler, on_error: ErrorResponder, limits: Limits
) -> None:
    io = Io(stream, limits)
    conn = Conn()
    first = True
    while True:
        try:
            ev = await _next_request(io, first)
        except h11.RemoteProtocolError as e:
            status = e.error_status_hint
            msg = "request head too large" if status == 431 else f"bad request: {e}"
            await _refuse(io, on_error, HttpError(status, "bad_request", msg))
            return
        except ReadTimeout as e:
            await _refuse(io, on_error, HttpError(408, "timeout", f"{e.what} not received in time"))
            return
        if ev is None:
            return
        first = False
        req = Request(io, ev, conn)
        try:
            await handler(req)
        except HttpError as e:
            if req.responded:
                return
            if io.conn.their_state is h11.SEND_BODY and (
                e.status == 413 or io.conn.they_are_waiting_for_100_continue
            ):
                e.headers.append(("Connection", "close"))  # its body will not be read
            await on_error(req, e)
        except ReadTimeout as e:
            if not req.responded:
                await on_error(req, HttpError(408, "timeout", f"{e.what} not received in time"))
            await _linger(io)
            return
        except h11.RemoteProtocolError as e:  # a malformed body
            if not req.responded:
                err = HttpError(400, "bad_request", f"bad request body: {e}")
                await on_error(req, err)
            await _linger(io)
            return
        except (Abort, h11.LocalProtocolError):
            return
        except Exception as e:  # a bug: this request fails, the node goes on
            log.exception("HTTP %s %s failed", req.method, req.path[:200])
            if not req.responded:
                err = HttpError(500, "internal", f"internal error: {type(e).__name__}")
                err.headers.append(("Connection", "close"))
                await on_error(req, err)
            await _linger(io)
            return
        if io.conn.our_state is not h11.DONE:
            await _linger(io)  # a client that asked to close, or a body we refused
            return
        if not await _discard_body(io):
            await _linger(io)  # its body is unread and long: close
            return
        io.conn.start_next_cycle()


async def _discard_body(io: Io, budget: int = 65536) -> bool:
    """Read what is left of a request body the route did not read (an empty one, most often),
    so the connection can serve the next request; False if it is long, slow or will never
    come (the client waits for `100 Continue`): close instead."""
    got = 0
    deadline = trio.current_time() + min(1.0, io.limits.body_grace)
    while io.conn.their_state is h11.SEND_BODY:
        if io.conn.they_are_waiting_for_100_continue:
            return False
        try:
            ev = await io.next_event(deadline, "request body")
        except (ReadTimeout, h11.RemoteProtocolError):
            return False
        if isinstance(ev, h11.Data):
            got += len(ev.data)
            if got > budget:
                return False
    return io.conn.their_state is h11.DONE


async def _refuse(io: Io, on_error: ErrorResponder, err: HttpError) -> None:
    """Answer a request that could not be read (no Request object: a synthetic one)."""
    if io.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    req = Request(io, h11.Request(method="GET", target="/", headers=[("Host", "-")]), Conn())
    err.headers.append(("Connection", "close"))
    with contextlib.suppress(h11.LocalProtocolError):
        await on_error(req, err)
    await _linger(io)


async def _linger(io: Io) -> None:
    """Half-close and drain briefly before closing: closing with unread input makes the
    kernel reset the connection, which can destroy the answer before the client reads it."""
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        send_eof = getattr(io.stream, "send_eof", None)
        if send_eof is not None:
            with trio.move_on_after(_LINGER):
                await send_eof()
        with trio.move_on_after(_LINGER):
            drained = 0
            while drained < 1 << 20:
                data = await io.stream.receive_some(RECV)
                if not data:
                    break
                drained += len(data)


async def _accepted(
    handler: Handler,
    on_error: ErrorResponder,
    limits: Limits,
    slots: trio.CapacityLimiter,
    ssl_context: ssl.SSLContext | None,
    sock: trio.SocketStream,
) -> None:
    stream: trio.abc.Stream = sock
    try:
        async with sock:
            if ssl_context is not None:
                tls = trio.SSLStream(sock, ssl_context, server_side=True)
                with trio.fail_after(limits.tls_handshake_timeout):
                    await tls.do_handshake()
                stream = tls
            try:
                slots.acquire_nowait()
            except trio.WouldBlock:
                err = HttpError(503, "too_many_connections", "too many HTTP connections; retry")
                err.headers.append(("Retry-After", "1"))
                await _refuse(Io(stream, limits), on_error, err)
                return
            try:
                await _connection(stream, handler, on_error, limits)
            finally:
                slots.release()
    except (
        trio.BrokenResourceError,
        trio.ClosedResourceError,
        trio.TooSlowError,
        ssl.SSLError,
        OSError,
    ):
        pass  # the client went away, broke the protocol below HTTP, or did not read
    except Exception:  # a bug must close one connection, not the node
        log.exception("HTTP connection failed")


async def serve_api(
    handler: Handler,
    on_error: ErrorResponder,
    host: str,
    port: int,
    *,
    limits: Limits | None = None,
    ssl_context: ssl.SSLContext | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve HTTP/1.1 (HTTPS with `ssl_context`) on host:port until cancelled;
    `task_status.started(port)` with the bound port. Bind errors (OSError) raise before."""
    lim = limits or Limits()
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]
    slots = trio.CapacityLimiter(lim.max_connections)
    serve = partial(_accepted, handler, on_error, lim, slots, ssl_context)
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(trio.serve_listeners, serve, listeners))
        task_status.started(bound)
