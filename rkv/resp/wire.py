"""RESP on the wire: the request parser and the reply encoder (pure: no I/O, no trio).

Owns: turning received bytes into commands (lists of bytes) within the limits (argument
count, bulk length, request size, inline line length), and turning reply values into RESP2
or RESP3 bytes. Must not: know what a command means (rkv.resp.commands) or touch a socket
(rkv.resp.server).

Parsing: `hiredis.Reader` (the C parser of Redis' own client library) decodes the multibulk
requests. hiredis-py exposes no limits (it would allocate a list for `*2147483647` and
buffer a bulk of any announced length), so a small guard in front of it reads only the
header lines (`*N`, `$L`), skips the bulk bodies by length, and refuses what is over a limit
before hiredis sees it, with Redis' own protocol error texts. Inline commands (`PING\\r\\n`
typed into nc or telnet) are split here, as Redis does (quotes are honoured).

Replies are plain Python values (see `encode`): bytes -> bulk string, str -> bulk string
(UTF-8), int -> integer, None -> null, list/tuple -> array, dict -> map, bool -> boolean,
float -> double, `Simple` -> simple string, `Err` -> error, `RSet` -> set, `NULL_ARRAY` ->
null array. In RESP2 a map is a flat array, a set an array, a boolean an integer, a double a
bulk string, null `$-1` and the null array `*-1`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeAlias

import hiredis

MAX_INLINE = 64 << 10
"""Longest inline command line, and longest header line (Redis' PROTO_INLINE_MAX_SIZE)."""


class RespProtocolError(Exception):
    """The client sent something that is not RESP or is over a limit: the message is the
    error reply (without `-`), after which the connection closes. `commands`: the complete
    commands that came before the bad bytes (to be answered first)."""

    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self.commands: list[list[bytes]] = []


@dataclass(frozen=True, slots=True)
class Simple:
    """A simple string reply (`+OK`)."""

    text: str


@dataclass(frozen=True, slots=True)
class Err:
    """An error reply: `text` starts with its code (`ERR ...`, `NOAUTH ...`)."""

    text: str


@dataclass(frozen=True, slots=True)
class RSet:
    """A set reply (an array in RESP2)."""

    items: tuple[Reply, ...]


@dataclass(frozen=True, slots=True)
class Push:
    """An out-of-band message (pub/sub): a push frame in RESP3, an array in RESP2."""

    items: tuple[Reply, ...]


@dataclass(frozen=True, slots=True)
class Many:
    """Several replies to one command, one after another (SUBSCRIBE a b: one per channel)."""

    replies: tuple[Reply, ...]


Reply: TypeAlias = (
    "bytes | str | int | float | bool | Simple | Err | RSet | Push | Many | NullArray | "
    "Sequence[Reply] | dict[Reply, Reply] | None"
)
"""A reply value: a list or tuple is an array (any sequence but bytes and str)."""


@dataclass(frozen=True, slots=True)
class NullArray:
    """The null array (`*-1` in RESP2, null in RESP3): an EXEC whose WATCH failed."""


NULL_ARRAY = NullArray()

OK = Simple("OK")

_START, _BULK_HEADER, _BULK_BODY = 0, 1, 2


class RequestParser:
    """Feed it bytes; it returns the complete commands in order.

    Limits: at most `max_args` arguments per command, bulk strings of at most `max_bulk`
    bytes, at most `max_request` bytes for one whole multibulk command, inline lines of at
    most MAX_INLINE bytes. Anything over raises RespProtocolError (and the parser is then
    unusable: the connection closes)."""

    def __init__(self, *, max_args: int, max_bulk: int, max_request: int) -> None:
        self.max_args = max_args
        self.max_bulk = max_bulk
        self.max_request = max_request
        self._reader = hiredis.Reader(notEnoughData=None)
        self._buf = bytearray()
        self._state = _START
        self._args_left = 0
        self._skip = 0
        self._request_bytes = 0

    @property
    def pending(self) -> bool:
        """A command has started to arrive and is not complete yet."""
        return self._state != _START or bool(self._buf)

    def feed(self, data: bytes) -> list[list[bytes]]:
        """The commands completed by `data` (empty ones, `*0`, are dropped)."""
        buf = self._buf
        buf += data
        out: list[list[bytes]] = []
        pos = 0
        n = len(buf)
        mb_from = 0  # start of the multibulk bytes not fed to hiredis yet
        cmd_start = 0  # where the command being read began (0: in an earlier feed)
        try:
            while pos < n:
                if self._state == _START:
                    cmd_start = pos
                    if buf[pos] == 0x2A:  # '*'
                        eol = buf.find(b"\r\n", pos)
                        if eol < 0:
                            if n - pos > MAX_INLINE:
                                raise RespProtocolError(
                                    "ERR Protocol error: too big mbulk count string"
                                )
                            break
                        count = _int(buf[pos + 1 : eol])
                        if count is None or count > self.max_args:
                            raise RespProtocolError("ERR Protocol error: invalid multibulk length")
                        self._request_bytes = eol + 2 - pos
                        if count <= 0:
                            # Redis ignores an empty multibulk: skip its header
                            if mb_from < pos:
                                self._reader.feed(bytes(buf[mb_from:pos]))
                            pos = mb_from = eol + 2
                            continue
                        pos = eol + 2
                        self._args_left = count
                        self._state = _BULK_HEADER
                    else:
                        if mb_from < pos:
                            self._reader.feed(bytes(buf[mb_from:pos]))
                            out += self._drain()
                        nl = buf.find(b"\n", pos)
                        if nl < 0:
                            if n - pos > MAX_INLINE:
                                raise RespProtocolError(
                                    "ERR Protocol error: too big inline request"
                                )
                            mb_from = pos
                            break
                        line = bytes(buf[pos:nl]).rstrip(b"\r")
                        pos = mb_from = nl + 1
                        args = split_inline(line)
                        if args:
                            if len(args) > self.max_args:
                                raise RespProtocolError(
                                    "ERR Protocol error: invalid multibulk length"
                                )
                            out.append(args)
                elif self._state == _BULK_HEADER:
                    if buf[pos] != 0x24:  # '$'
                        got = chr(buf[pos]) if 32 <= buf[pos] < 127 else f"\\x{buf[pos]:02x}"
                        raise RespProtocolError(f"ERR Protocol error: expected '$', got '{got}'")
                    eol = buf.find(b"\r\n", pos)
                    if eol < 0:
                        if n - pos > MAX_INLINE:
                            raise RespProtocolError("ERR Protocol error: too big bulk count string")
                        break
                    length = _int(buf[pos + 1 : eol])
                    if length is None or length < 0 or length > self.max_bulk:
                        raise RespProtocolError("ERR Protocol error: invalid bulk length")
                    self._request_bytes += eol + 2 - pos + length + 2
                    if self._request_bytes > self.max_request:
                        raise RespProtocolError(
                            f"ERR Protocol error: request larger than {self.max_request} bytes"
                        )
                    pos = eol + 2
                    self._skip = length + 2
                    self._state = _BULK_BODY
                else:  # _BULK_BODY
                    take = min(self._skip, n - pos)
                    pos += take
                    self._skip -= take
                    if self._skip:
                        break
                    if take >= 2 and buf[pos - 2 : pos] != b"\r\n":
                        raise RespProtocolError("ERR Protocol error: bulk string not ended by CRLF")
                    self._args_left -= 1
                    self._state = _START if self._args_left == 0 else _BULK_HEADER
            if mb_from < pos:
                self._reader.feed(bytes(buf[mb_from:pos]))
                mb_from = pos
            out += self._drain()
        except (RespProtocolError, hiredis.ProtocolError) as e:
            err = (
                e
                if isinstance(e, RespProtocolError)
                else RespProtocolError(f"ERR Protocol error: {e}")
            )
            if isinstance(e, RespProtocolError):  # what came before the bad command
                try:
                    if mb_from < cmd_start:
                        self._reader.feed(bytes(buf[mb_from:cmd_start]))
                    out += self._drain()
                except (RespProtocolError, hiredis.ProtocolError):
                    pass
            err.commands = out
            raise err from None
        del buf[:mb_from]
        return out

    def _drain(self) -> list[list[bytes]]:
        out: list[list[bytes]] = []
        while True:
            item = self._reader.gets()
            if item is None:
                return out
            if not isinstance(item, list) or not all(isinstance(a, bytes) for a in item):
                raise RespProtocolError("ERR Protocol error: expected an array of bulk strings")
            if item:
                out.append(item)


def _int(text: bytes | bytearray) -> int | None:
    if not text or len(text) > 20:
        return None
    s = text[1:] if text[:1] == b"-" else text
    if not s.isdigit():
        return None
    return int(text)


def split_inline(line: bytes) -> list[bytes]:
    """An inline command's arguments, as Redis' sdssplitargs: whitespace-separated, with
    "double quotes" (\\n, \\r, \\t, \\b, \\a, \\\\, \\", \\xHH escapes) and 'single quotes'."""
    args: list[bytes] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i : i + 1].isspace():
            i += 1
        if i >= n:
            return args
        cur = bytearray()
        if line[i : i + 1] in (b'"', b"'"):
            q = line[i]
            i += 1
            while True:
                if i >= n:
                    raise RespProtocolError("ERR Protocol error: unbalanced quotes in request")
                c = line[i]
                if q == 0x22 and c == 0x5C and i + 1 < n:  # backslash in double quotes
                    nxt = line[i + 1 : i + 2]
                    if nxt == b"x" and i + 3 < n and _is_hex(line[i + 2 : i + 4]):
                        cur.append(int(line[i + 2 : i + 4], 16))
                        i += 4
                        continue
                    cur += {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"a": b"\a"}.get(
                        nxt, nxt
                    )
                    i += 2
                    continue
                if q == 0x27 and c == 0x5C and line[i + 1 : i + 2] == b"'":
                    cur.append(0x27)
                    i += 2
                    continue
                if c == q:
                    i += 1
                    if i < n and not line[i : i + 1].isspace():
                        raise RespProtocolError("ERR Protocol error: unbalanced quotes in request")
                    break
                cur.append(c)
                i += 1
        else:
            while i < n and not line[i : i + 1].isspace():
                cur.append(line[i])
                i += 1
        args.append(bytes(cur))


def _is_hex(b: bytes) -> bool:
    return len(b) == 2 and all(c in b"0123456789abcdefABCDEF" for c in b)


# -- the encoder ------------------------------------------------------------------------------


def encode(value: Reply, proto: int = 2) -> bytes:
    """`value` as RESP2 (`proto` 2) or RESP3 (3) bytes."""
    out: list[bytes] = []
    _enc(value, proto, out)
    return b"".join(out)


def _line(s: str) -> bytes:
    if "\r" in s or "\n" in s:
        s = s.replace("\r", " ").replace("\n", " ")
    return s.encode("utf-8", "replace")


def _double(v: float) -> str:
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v == int(v) and abs(v) < 1e17:
        return str(int(v))
    return repr(v)


def _enc(v: Reply, proto: int, out: list[bytes]) -> None:
    if isinstance(v, bytes):
        out.append(b"$%d\r\n%s\r\n" % (len(v), v))
    elif isinstance(v, str):
        b = v.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    elif v is None:
        out.append(b"_\r\n" if proto == 3 else b"$-1\r\n")
    elif isinstance(v, NullArray):
        out.append(b"_\r\n" if proto == 3 else b"*-1\r\n")
    elif isinstance(v, bool):
        if proto == 3:
            out.append(b"#t\r\n" if v else b"#f\r\n")
        else:
            out.append(b":1\r\n" if v else b":0\r\n")
    elif isinstance(v, int):
        out.append(b":%d\r\n" % v)
    elif isinstance(v, float):
        d = _double(v).encode()
        out.append(b",%s\r\n" % d if proto == 3 else b"$%d\r\n%s\r\n" % (len(d), d))
    elif isinstance(v, Simple):
        out.append(b"+%s\r\n" % _line(v.text))
    elif isinstance(v, Err):
        out.append(b"-%s\r\n" % _line(v.text))
    elif isinstance(v, list | tuple):
        _aggregate(b"*", v, proto, out)
    elif isinstance(v, RSet):
        _aggregate(b"~" if proto == 3 else b"*", v.items, proto, out)
    elif isinstance(v, Push):
        _aggregate(b">" if proto == 3 else b"*", v.items, proto, out)
    elif isinstance(v, Many):
        for r in v.replies:
            _enc(r, proto, out)
    elif isinstance(v, dict):
        if proto == 3:
            out.append(b"%%%d\r\n" % len(v))
        else:
            out.append(b"*%d\r\n" % (2 * len(v)))
        for k, item in v.items():
            _enc(k, proto, out)
            _enc(item, proto, out)
    else:
        raise TypeError(f"cannot encode {type(v).__name__} as RESP")


def _aggregate(mark: bytes, items: Iterable[Reply], proto: int, out: list[bytes]) -> None:
    items = list(items)
    out.append(b"%s%d\r\n" % (mark, len(items)))
    for item in items:
        _enc(item, proto, out)
