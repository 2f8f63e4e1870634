"""The bytes of the cheap generator (bench/rawgen.py): requests built ahead, responses parsed
as little as a closed loop needs.

Owns: etcd's v3 JSON gateway over HTTP/1.1 keep-alive (a put or range request is one bytes
join of a per-client prefix, the key's base64 and a per-client suffix; a response is read as
far as its status and length: the body is skipped, not decoded), and rkv's client frames
(4-byte big-endian length + one msgpack map, docs/contracts.md; the same fields rkv's client
sends, a write session included). Must not do I/O or know about event loops, so that
tests/bench/test_bench_rawwire.py can check it byte for byte.
"""

from __future__ import annotations

import base64
import os
from typing import Any

import msgpack

MAX_HEADER = 64 * 1024
MAX_BODY = 64 * 1024 * 1024
MAX_FRAME = 64 * 1024 * 1024


class WireError(Exception):
    """The peer sent something this parser does not accept; the connection is dropped."""


# -- etcd: HTTP/1.1 on the v3 JSON gateway ---------------------------------------------------


def b64(b: bytes) -> bytes:
    return base64.b64encode(b)


class EtcdWire:
    """Request bytes for one etcd client (one value, one Host header).

    Every key of the benchmark has the same length (`bench/%09d`), so a client's
    Content-Length is fixed and its put is ``put_prefix + b64(key) + put_suffix``."""

    __slots__ = ("get_prefix", "get_suffix", "key_len", "put_prefix", "put_suffix")

    def __init__(self, host: str, port: int, value: bytes, key_len: int) -> None:
        self.key_len = key_len
        k64_len = 4 * ((key_len + 2) // 3)
        self.put_suffix = b'","value":"' + b64(value) + b'"}'
        self.put_prefix = _head(b"/v3/kv/put", host, port, 8 + k64_len + len(self.put_suffix))
        self.put_prefix += b'{"key":"'
        # serializable=false is the gateway's default: a linearizable read, as in etcd.py.
        self.get_suffix = b'","serializable":false}'
        self.get_prefix = _head(b"/v3/kv/range", host, port, 8 + k64_len + len(self.get_suffix))
        self.get_prefix += b'{"key":"'

    def put(self, key64: bytes) -> bytes:
        return self.put_prefix + key64 + self.put_suffix

    def get(self, key64: bytes) -> bytes:
        return self.get_prefix + key64 + self.get_suffix


def _head(path: bytes, host: str, port: int, length: int) -> bytes:
    return (
        b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % (path, host.encode(), port, length)
    )


def parse_http_response(buf: bytes | bytearray, start: int = 0) -> tuple[int, int, int] | None:
    """The first complete response in ``buf[start:]``: (status, body_start, end), where the
    body is ``buf[body_start:end]`` (still chunk-encoded when the response was chunked) and
    the next response starts at `end`. None while incomplete; WireError when malformed.

    The fast path is Go's net/http: a canonical ``Content-Length`` header; any other casing
    and ``Transfer-Encoding: chunked`` are understood too, at a little more cost."""
    head_end = buf.find(b"\r\n\r\n", start)
    if head_end < 0:
        if len(buf) - start > MAX_HEADER:
            raise WireError("response header too long")
        return None
    if buf[start : start + 7] != b"HTTP/1." or buf[start + 8 : start + 9] != b" ":
        raise WireError(f"not an HTTP/1.x response: {bytes(buf[start : start + 40])!r}")
    try:
        status = int(buf[start + 9 : start + 12])
    except ValueError:
        raise WireError(f"bad status line: {bytes(buf[start : start + 40])!r}") from None
    body_start = head_end + 4
    i = buf.find(b"\r\nContent-Length: ", start, head_end)
    if i >= 0:
        j = buf.find(b"\r\n", i + 18, head_end + 2)
        length = _int(buf[i + 18 : j])
    else:
        headers = bytes(buf[start:head_end]).lower()
        i = headers.find(b"\r\ncontent-length:")
        if i >= 0:
            j = headers.find(b"\r\n", i + 17)
            length = _int(headers[i + 17 : j if j >= 0 else len(headers)].strip())
        elif b"\r\ntransfer-encoding: chunked" in headers:
            end = _chunked_end(buf, body_start)
            return None if end is None else (status, body_start, end)
        elif status in (204, 304) or 100 <= status < 200:
            length = 0
        else:
            raise WireError("response without length (would need connection close)")
    if length > MAX_BODY:
        raise WireError("response body too large")
    end = body_start + length
    if len(buf) < end:
        return None
    return status, body_start, end


def _int(raw: bytes | bytearray) -> int:
    try:
        n = int(raw)
    except ValueError:
        raise WireError(f"bad Content-Length {bytes(raw)!r}") from None
    if n < 0:
        raise WireError(f"bad Content-Length {n}")
    return n


def _chunked_end(buf: bytes | bytearray, pos: int) -> int | None:
    """Where a chunked body starting at `pos` ends (after its last CRLF), None if incomplete."""
    total = 0
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        try:
            size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
        except ValueError:
            raise WireError(f"bad chunk size {bytes(buf[pos:eol])!r}") from None
        total += size
        if total > MAX_BODY:
            raise WireError("response body too large")
        if size == 0:
            # Trailers (none expected) end with an empty line.
            while True:
                eol2 = buf.find(b"\r\n", eol + 2)
                if eol2 < 0:
                    return None
                if eol2 == eol + 2:
                    return eol2 + 2
                eol = eol2
        pos = eol + 2 + size + 2
        if len(buf) < pos:
            return None


# -- rkv: length-prefixed msgpack frames -----------------------------------------------------


class RkvWire:
    """Request frames of one rkv client: a write session of its own (client id + seq, as
    rkv's client sends, so that the state machine does the same deduplication work)."""

    __slots__ = ("_pack", "client_id", "rid", "seq", "value")

    def __init__(self, value: bytes, client_id: bytes | None = None) -> None:
        self.value = value
        self.client_id = client_id if client_id is not None else os.urandom(16)
        self.rid = 0
        self.seq = 0
        self._pack = msgpack.Packer(use_bin_type=True).pack

    def put(self, key: bytes) -> bytes:
        self.rid += 1
        self.seq += 1
        body = self._pack(
            {
                "t": "put",
                "id": self.rid,
                "k": key,
                "val": self.value,
                "c": self.client_id,
                "s": self.seq,
                "v": 1,
            }
        )
        return len(body).to_bytes(4, "big") + body

    def get(self, key: bytes) -> bytes:
        self.rid += 1
        body = self._pack({"t": "get", "id": self.rid, "k": key, "stale": False, "v": 1})
        return len(body).to_bytes(4, "big") + body


def parse_rkv_frame(buf: bytes | bytearray, start: int = 0) -> tuple[dict[str, Any], int] | None:
    """The first complete frame in ``buf[start:]``: (its map, where the next one starts);
    None while incomplete; WireError when malformed."""
    if len(buf) - start < 4:
        return None
    n = int.from_bytes(buf[start : start + 4], "big")
    if n > MAX_FRAME:
        raise WireError(f"frame of {n} bytes")
    end = start + 4 + n
    if len(buf) < end:
        return None
    try:
        obj = msgpack.unpackb(buf[start + 4 : end], raw=False)
    except Exception as e:  # msgpack raises several types for garbage
        raise WireError(f"undecodable frame: {e}") from None
    if not isinstance(obj, dict):
        raise WireError(f"a frame must be a map, got {type(obj).__name__}")
    return obj, end
