"""The route types of a node's health and metrics endpoints, and a minimal HTTP GET.

Owns: `Response` / `text` (what a health, readiness or metrics route returns; rkv.node.health
builds them, rkv.httpapi serves them on the node's HTTP port) and `http_get`, a one-request
client for tests and tools. Must not: serve anything (rkv.httpapi is the one HTTP server).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import trio


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


Route = Callable[[], Response]
"""A route is synchronous and cheap: it reads in-memory state only."""


def text(status: int, body: str) -> Response:
    return Response(status, (body.rstrip("\n") + "\n").encode())


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


__all__ = ["Response", "Route", "http_get", "text"]
