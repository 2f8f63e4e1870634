"""A tiny HTTP/1.1 server on trio streams for a node's health and metrics endpoints.

Owns: accepting connections on one (host, port), parsing one GET/HEAD request line and its
headers per connection (bounded size and time), calling a route function and writing one
response with Content-Length, then closing the connection. Must not: know what the routes
mean (rkv.node supplies them), keep connections alive, accept request bodies, or grow
without bound (connections and header bytes are capped).

It is deliberately not a web framework: Prometheus scrapers and load-balancer probes send a
plain GET and read one answer, which is all this serves. The node's HTTP port is served by
rkv.httpapi (h11: keep-alive, request bodies, the JSON API) with these same routes; this
module keeps the route types (`Response`, `text`) and `http_get` for tests and tools.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import trio

log = logging.getLogger("rkv.http")

MAX_HEAD = 8192
"""Most bytes of request line + headers; a longer head gets 431 and the connection closes."""
READ_TIMEOUT = 5.0
"""Seconds a client may take to send its request head (slow clients cannot pin a slot)."""
MAX_CONNECTIONS = 32
_LINGER = 0.5

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


Route = Callable[[], Response]
"""A route is synchronous and cheap: it reads in-memory state only."""


def text(status: int, body: str) -> Response:
    return Response(status, (body.rstrip("\n") + "\n").encode())


def _encode(resp: Response, head_only: bool) -> bytes:
    reason = _REASONS.get(resp.status, "Unknown")
    head = (
        f"HTTP/1.1 {resp.status} {reason}\r\n"
        f"Content-Type: {resp.content_type}\r\n"
        f"Content-Length: {len(resp.body)}\r\n"
        "Connection: close\r\n"
        "Cache-Control: no-store\r\n\r\n"
    ).encode("ascii")
    return head if head_only else head + resp.body


async def _read_head(stream: trio.abc.Stream) -> bytes | None:
    """The request head (up to the blank line); None if the client closed first."""
    buf = bytearray()
    while True:
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            end = buf.find(b"\n\n")
        if end > MAX_HEAD or (end < 0 and len(buf) > MAX_HEAD):
            raise _HeadTooLarge
        if end >= 0:
            return bytes(buf[:end])
        data = await stream.receive_some(4096)
        if not data:
            return None
        buf += data


class _HeadTooLarge(Exception):
    pass


def parse_request_line(head: bytes) -> tuple[str, str] | None:
    """(method, path without query) of a request head, or None if it is not HTTP/1.x."""
    line = head.split(b"\n", 1)[0].rstrip(b"\r")
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        return None
    try:
        method = parts[0].decode("ascii")
        target = parts[1].decode("ascii")
    except UnicodeDecodeError:
        return None
    return method, target.split("?", 1)[0]


async def _handle(
    routes: dict[str, Route], limit: trio.CapacityLimiter, stream: trio.SocketStream
) -> None:
    async with stream:
        try:
            limit.acquire_nowait()
        except trio.WouldBlock:
            await _send(stream, text(503, "too many connections"), False)
            return
        try:
            await _serve_one(routes, stream)
        finally:
            limit.release()


async def _serve_one(routes: dict[str, Route], stream: trio.SocketStream) -> None:
    head: bytes | None = None
    try:
        with trio.fail_after(READ_TIMEOUT):
            head = await _read_head(stream)
    except trio.TooSlowError:
        await _send(stream, text(408, "request head not received in time"), False)
        return
    except _HeadTooLarge:
        await _send(stream, text(431, "request head too large"), False)
        return
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        return
    if head is None:
        return
    req = parse_request_line(head)
    if req is None:
        await _send(stream, text(400, "bad request line"), False)
        return
    method, path = req
    if method not in ("GET", "HEAD"):
        await _send(stream, text(405, f"method {method} not allowed"), False)
        return
    route = routes.get(path)
    if route is None:
        await _send(stream, text(404, f"no such path {path}; try {', '.join(routes)}"), False)
        return
    try:
        resp = route()
    except Exception as e:  # a bug in a route must not kill the node
        log.exception("http route %s failed", path)
        resp = text(500, f"internal error: {type(e).__name__}")
    await _send(stream, resp, method == "HEAD")


async def _send(stream: trio.SocketStream, resp: Response, head_only: bool) -> None:
    """Write the response, then half-close and drain briefly: closing with unread input
    (a refused or oversized request) would make the kernel reset the connection and
    destroy the answer before the client reads it."""
    try:
        with trio.move_on_after(READ_TIMEOUT):
            await stream.send_all(_encode(resp, head_only))
            await stream.send_eof()
        with trio.move_on_after(_LINGER):
            drained = 0
            while drained < MAX_HEAD * 8:
                data = await stream.receive_some(16384)
                if not data:
                    break
                drained += len(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass


async def serve_http(
    routes: dict[str, Route],
    host: str,
    port: int,
    *,
    max_connections: int = MAX_CONNECTIONS,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `routes` (path -> route) on host:port until cancelled.

    `task_status.started(port)` reports the bound port (useful with port 0). Bind errors
    (OSError) are raised before `started`.
    """
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]
    limit = trio.CapacityLimiter(max_connections)
    async with trio.open_nursery() as nursery:
        await nursery.start(
            partial(trio.serve_listeners, partial(_handle, routes, limit), listeners)
        )
        task_status.started(bound)


async def http_get(
    host: str, port: int, path: str, timeout: float = 5.0, *, token: str | None = None
) -> tuple[int, bytes]:
    """A minimal GET for tests and tools: (status, body). Raises OSError / TooSlowError.
    With `token`, it sends it as `Authorization: Bearer` (the node's HTTP port wants it)."""
    with trio.fail_after(timeout):
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            auth = f"Authorization: Bearer {token}\r\n" if token else ""
            req = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{auth}Connection: close\r\n\r\n"
            await stream.send_all(req.encode("ascii"))
            buf = bytearray()
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    break
                buf += data
    head, _, body = bytes(buf).partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split(b" ")
    if len(status_line) < 2 or not status_line[1].isdigit():
        raise OSError(f"bad HTTP response from {host}:{port}: {head[:80]!r}")
    return int(status_line[1]), body


__all__ = ["Response", "Route", "http_get", "parse_request_line", "serve_http", "text"]
