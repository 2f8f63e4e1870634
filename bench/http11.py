"""A minimal trio HTTP/1.1 keep-alive client for etcd's v3 JSON gateway.

Owns: one TCP connection, one request at a time (HTTP/1.1 without pipelining, which is what a
closed-loop client needs), JSON POST bodies, Content-Length and chunked responses. Must not
grow into a general HTTP client: no redirects, no TLS, no compression.
"""

from __future__ import annotations

import json
from typing import Any

import trio

MAX_HEADER = 64 * 1024
MAX_BODY = 64 * 1024 * 1024


class HttpError(Exception):
    """A non-200 answer or a malformed response."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:200]!r}")
        self.status = status
        self.body = body


class HttpConnection:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._stream: trio.SocketStream | None = None
        self._buf = bytearray()

    async def aclose(self) -> None:
        if self._stream is not None:
            s, self._stream = self._stream, None
            await s.aclose()
        self._buf.clear()

    async def _connect(self) -> trio.SocketStream:
        if self._stream is None:
            self._stream = await trio.open_tcp_stream(self.host, self.port)
            self._buf.clear()
        return self._stream

    async def post_json(self, path: str, payload: Any) -> Any:
        body = json.dumps(payload, separators=(",", ":")).encode()
        status, data = await self.request("POST", path, body, "application/json")
        if status != 200:
            raise HttpError(status, data)
        return json.loads(data) if data else {}

    async def request(
        self, method: str, path: str, body: bytes, content_type: str
    ) -> tuple[int, bytes]:
        stream = await self._connect()
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        try:
            await stream.send_all(head + body)
            return await self._read_response(stream)
        except BaseException:
            # The connection's state is unknown after any failure or cancellation.
            await trio.aclose_forcefully(stream)
            self._stream = None
            self._buf.clear()
            raise

    async def _fill(self, stream: trio.SocketStream) -> None:
        chunk = await stream.receive_some(256 * 1024)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self._buf += chunk

    async def _read_until(self, stream: trio.SocketStream, sep: bytes, limit: int) -> bytes:
        while True:
            i = self._buf.find(sep)
            if i >= 0:
                out = bytes(self._buf[:i])
                del self._buf[: i + len(sep)]
                return out
            if len(self._buf) > limit:
                raise HttpError(0, b"response line or header too long")
            await self._fill(stream)

    async def _read_exact(self, stream: trio.SocketStream, n: int) -> bytes:
        if n > MAX_BODY:
            raise HttpError(0, b"response body too large")
        while len(self._buf) < n:
            await self._fill(stream)
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    async def _read_response(self, stream: trio.SocketStream) -> tuple[int, bytes]:
        raw = await self._read_until(stream, b"\r\n\r\n", MAX_HEADER)
        lines = raw.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise HttpError(0, raw[:200])
        status = int(parts[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = bytearray()
            while True:
                size_line = await self._read_until(stream, b"\r\n", 1024)
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    # Trailers (none expected) end with an empty line.
                    while await self._read_until(stream, b"\r\n", MAX_HEADER):
                        pass
                    break
                body += await self._read_exact(stream, size)
                await self._read_exact(stream, 2)
                if len(body) > MAX_BODY:
                    raise HttpError(0, b"response body too large")
            data = bytes(body)
        elif "content-length" in headers:
            data = await self._read_exact(stream, int(headers["content-length"]))
        else:
            raise HttpError(status, b"response without length (would need connection close)")
        if headers.get("connection", "").lower() == "close":
            await self.aclose()
        return status, data
