"""One HTTP exchange on a connection: the bounds (`Limits`), the request a route sees (its
head, its body as a stream, its one response), the connection's session (`Conn`), and h11
over a trio stream with deadlines (`Io`).

Owns: reading a request body within its size and rate bounds (413, 408), writing one
response (whole, or streamed with a Content-Length or chunked). Must not: accept
connections or decide when one closes (rkv.httpapi.server), or know what a path means.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus

import h11
import trio

RECV = 65536
"""Bytes asked of the stream per read."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds of the HTTP port (docs/operations.md, "The HTTP port")."""

    max_connections: int = 128
    """Connections held at once; beyond, a newcomer gets 503 and is closed."""
    max_head: int = 16384
    """Bytes of request line and headers; beyond: 431 and close."""
    head_timeout: float = 10.0
    """Seconds from a request's first byte (or a new connection) to its complete head:
    a client that trickles its headers (slowloris) gets 408 and is closed."""
    idle_timeout: float = 60.0
    """Seconds a keep-alive connection may wait for its next request."""
    body_grace: float = 10.0
    min_body_rate: int = 16384
    """A request body must average this many bytes/s after `body_grace` seconds, and never
    pause longer than `body_grace`: else 408 and close."""
    write_timeout: float = 30.0
    """Seconds a response write may wait for a client that does not read (then close)."""
    tls_handshake_timeout: float = 5.0


class HttpError(Exception):
    """An answer decided while handling a request (the routes turn it into a JSON body)."""

    def __init__(
        self, status: int, code: str, message: str, headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = list(headers)


class Abort(Exception):
    """Close the connection now, mid-response: the client sees a short body, never a
    complete answer with wrong data."""


@dataclass(slots=True)
class Conn:
    """What lasts as long as one connection: its session for exactly-once writes (a random
    16-byte client id, a sequence number per write, as rkv.client's sessions)."""

    client_id: bytes = field(default_factory=lambda: os.urandom(16))
    seq: int = 0
    peer: str = ""

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq


class Request:
    """One request: its head, its body as a stream, and its (one) response."""

    def __init__(self, io: Io, ev: h11.Request, conn: Conn) -> None:
        self._io = io
        self.conn = conn
        self.method = ev.method.decode("ascii", "replace")
        target = ev.target.decode("latin-1")
        self.path, _, self.query = target.partition("?")
        self.headers: dict[str, str] = {}
        for name, value in ev.headers:
            k = name.decode("latin-1").lower()
            v = value.decode("latin-1")
            self.headers[k] = f"{self.headers[k]}, {v}" if k in self.headers else v
        self.responded = False
        self.body_done = False

    @property
    def content_length(self) -> int | None:
        v = self.headers.get("content-length")
        return int(v) if v is not None and v.strip().isdigit() else None

    async def body(self, limit: int | None) -> AsyncIterator[bytes]:
        """The body in pieces as they arrive; HttpError 413 once it exceeds `limit` bytes
        (before reading anything when Content-Length says so), 408 when it is too slow."""
        n = self.content_length
        if limit is not None and n is not None and n > limit:
            raise HttpError(413, "too_large", f"the body has {n} bytes, at most {limit} allowed")
        io = self._io
        if io.conn.they_are_waiting_for_100_continue:
            await io.send(h11.InformationalResponse(status_code=100, headers=[]))
        start = trio.current_time()
        got = 0
        lim = io.limits
        while True:
            deadline = start + lim.body_grace + got / lim.min_body_rate
            deadline = min(deadline, trio.current_time() + lim.body_grace)
            ev = await io.next_event(deadline, "request body")
            if isinstance(ev, h11.Data):
                got += len(ev.data)
                if limit is not None and got > limit:
                    raise HttpError(413, "too_large", f"the body exceeds {limit} bytes")
                yield bytes(ev.data)
            elif isinstance(ev, h11.EndOfMessage):
                self.body_done = True
                return
            else:
                raise HttpError(400, "bad_request", "the request body ended unexpectedly")

    async def read_body(self, limit: int) -> bytes:
        """The whole body (at most `limit` bytes)."""
        buf = bytearray()
        async for piece in self.body(limit):
            buf += piece
        return bytes(buf)

    async def respond(
        self,
        status: int,
        body: bytes = b"",
        content_type: str = "application/json",
        headers: Iterable[tuple[str, str]] = (),
        *,
        head_only: bool = False,
    ) -> None:
        if status == 204:  # no body, no Content-Length (RFC 9110, 8.6)
            await self._start(status, None, list(headers))
            await self._io.send(h11.EndOfMessage())
            return
        await self._start(status, content_type, [*headers, ("Content-Length", str(len(body)))])
        if body and not head_only and self.method != "HEAD":
            await self._io.send(h11.Data(data=body))
        await self._io.send(h11.EndOfMessage())

    async def respond_stream(
        self,
        status: int,
        chunks: AsyncIterable[bytes],
        length: int | None,
        content_type: str = "application/octet-stream",
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        """A response whose body comes piece by piece (`length`: its Content-Length; None:
        chunked). `chunks` may raise Abort to cut the body short."""
        hs = list(headers)
        if length is not None:
            hs.append(("Content-Length", str(length)))
        await self._start(status, content_type, hs)
        if self.method != "HEAD":
            async for piece in chunks:
                if piece:
                    await self._io.send(h11.Data(data=piece))
        await self._io.send(h11.EndOfMessage())

    async def _start(
        self, status: int, content_type: str | None, headers: list[tuple[str, str]]
    ) -> None:
        if self.responded:
            raise RuntimeError("a request gets one response")
        self.responded = True
        hs = [("Cache-Control", "no-store"), *headers]
        if content_type is not None:
            hs.insert(0, ("Content-Type", content_type))
        try:
            reason = HTTPStatus(status).phrase.encode("ascii")
        except ValueError:
            reason = b""
        await self._io.send(
            h11.Response(
                status_code=status,
                headers=[(k.encode("latin-1"), v.encode("latin-1")) for k, v in hs],
                reason=reason,
            )
        )


Handler = Callable[[Request], Awaitable[None]]
"""A route table's entry point: answers the request (exactly once), or raises HttpError
before answering (answered as JSON by `on_error`), or Abort."""
ErrorResponder = Callable[[Request, HttpError], Awaitable[None]]


class ReadTimeout(Exception):
    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


class Io:
    """h11 over one trio stream, with deadlines."""

    def __init__(self, stream: trio.abc.Stream, limits: Limits) -> None:
        self.stream = stream
        self.limits = limits
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_head)

    async def next_event(self, deadline: float, what: str) -> h11.Event | type[h11.PAUSED]:
        while True:
            ev = self.conn.next_event()
            if ev is not h11.NEED_DATA:
                return ev  # type: ignore[return-value]
            try:
                with trio.fail_at(deadline):
                    data = await self.stream.receive_some(RECV)
            except trio.TooSlowError:
                raise ReadTimeout(what) from None
            self.conn.receive_data(bytes(data))

    async def send(self, ev: h11.Event) -> None:
        data = self.conn.send(ev)
        if data:
            with trio.fail_after(self.limits.write_timeout):
                await self.stream.send_all(data)
