"""What every RESP command works with: the node as a `Backend`, the per-connection `Session`,
the command's `Context`, Redis' error texts, and calling the node (each data command an
rkv.protocol request, retried with its session while the node says "try again").

Owns: the per-connection state (protocol version, authentication, name, the client session
id and sequence number for exactly-once writes, the MULTI queue and the WATCHed revisions) and the way a command reaches the node
(`Backend.request`: the same dispatcher and handlers as a native client's request, so a
follower forwards writes to the leader, reads are linearizable through the read barrier and
errors map the same way). Must not: name commands (rkv.resp.table), read or write sockets
(rkv.resp.server) or parse bytes (rkv.resp.wire).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from rkv.codec import MAX_KEY_LEN
from rkv.errors import RkvError
from rkv.protocol import (
    CasRequest,
    DeleteRequest,
    GetRequest,
    PutRequest,
    TxnReply,
    TxnRequest,
)
from rkv.resp.cursors import ScanCursors
from rkv.resp.wire import Err, Reply
from rkv.txn import Compare, Op, OpResult, TxnResult

Frame = dict[str, Any]

REDIS_VERSION = "7.2.0"
"""The Redis version rkv answers as (HELLO, INFO): clients use it to pick features."""
RKV_VERSION = "0.1.0"


class Backend(Protocol):
    """What the RESP server needs of the node (rkv.node passes one; tests pass fakes)."""

    async def request(self, frame: Frame) -> Frame:
        """Handle a client request frame (rkv.protocol `to_frame()`) as the node's dispatcher
        does for a native client, and return the reply frame (`t` "ok" or "error")."""
        ...

    def status(self) -> dict[str, Any]:
        """The node's status (the `status` request's reply fields)."""
        ...

    def key_count(self) -> int:
        """How many keys this node's applied state holds (cheap: the store counts them)."""
        ...


@dataclass(slots=True)
class Settings:
    token: str | None = None
    retry_seconds: float = 10.0
    """How long a command retries an answer that says "try again" (no leader yet, a lost
    leadership, a timeout) before it replies with an error."""
    node_id: str = ""
    port: int = 0
    cursors: ScanCursors = field(default_factory=ScanCursors)
    """SCAN's cursors, shared by the server's connections (a pooled client may continue a
    scan on another connection)."""


@dataclass(frozen=True, slots=True)
class Plan:
    """A command as txn ops (rkv.resp.plans): `ops` run in order inside one txn, `reply`
    turns their results (one per op) into the command's reply."""

    ops: tuple[Op, ...]
    reply: Callable[[Sequence[OpResult]], Reply]


@dataclass(slots=True)
class Multi:
    """A connection's MULTI: the commands queued so far (their plans), the keys they write,
    and whether one was refused (EXEC then replies EXECABORT)."""

    queued: list[Plan] = field(default_factory=list)
    written: set[bytes] = field(default_factory=set)
    failed: bool = False


@dataclass(slots=True)
class Subscriptions:
    """A connection's SUBSCRIBE channels and PSUBSCRIBE patterns (rkv.resp.pubsub), in the
    order given, and the messages waiting to be sent to it (bounded: rkv.resp.pubsub)."""

    channels: dict[bytes, None] = field(default_factory=dict)
    patterns: dict[bytes, None] = field(default_factory=dict)
    changed: trio.Event = field(default_factory=trio.Event)
    """Set when the subscriptions change (the feed starts or stops polling)."""
    after: int | None = None
    """The revision the feed's next watch poll starts after."""

    def count(self) -> int:
        return len(self.channels) + len(self.patterns)

    def touch(self) -> None:
        self.changed.set()
        self.changed = trio.Event()


@dataclass(slots=True)
class Session:
    """One RESP connection's state."""

    conn_id: int
    settings: Settings
    proto: int = 2
    authed: bool = False
    name: bytes | None = None
    lib_name: bytes | None = None
    lib_ver: bytes | None = None
    client_id: bytes = field(default_factory=lambda: os.urandom(16))
    """This connection's client session (exactly-once writes, as rkv.client's)."""
    seq: int = 0
    closing: bool = False
    """QUIT: close once the reply is sent."""
    multi: Multi | None = None
    """Between MULTI and EXEC/DISCARD: the queue."""
    watched: dict[bytes, int] = field(default_factory=dict)
    """WATCH: each watched key's mod revision when it was watched (absent: 0)."""
    subs: Subscriptions = field(default_factory=Subscriptions)
    """SUBSCRIBE/PSUBSCRIBE (in RESP2, a connection with any is in subscribed mode)."""

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq


class CommandError(Exception):
    """Reply with this error (`text` starts with its code) and carry on."""

    def __init__(self, text: str, code: str = "", msg: str = "") -> None:
        super().__init__(text)
        self.text = text
        self.code = code
        """The rkv error code and message it came from (error_of), if any."""
        self.msg = msg


Handler = Callable[["Context", list[bytes]], Awaitable[Reply]]


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    arity: int
    """Redis' convention: N > 0 exactly N arguments (with the name), -N at least N."""
    flags: tuple[str, ...]
    first_key: int
    last_key: int
    step: int
    handler: Handler
    group: str
    summary: str


@dataclass(slots=True)
class Context:
    session: Session
    backend: Backend


# -- errors -----------------------------------------------------------------------------------

RETRY_CODES = frozenset({"unavailable", "not_leader", "timeout", "too_many_connections"})


def wrong_arity(name: str) -> CommandError:
    return CommandError(f"ERR wrong number of arguments for '{name}' command")


def syntax_error() -> CommandError:
    return CommandError("ERR syntax error")


def not_integer() -> CommandError:
    return CommandError("ERR value is not an integer or out of range")


def _arg_text(a: bytes, limit: int = 128) -> str:
    return a[:limit].decode("utf-8", "replace")


def unknown_command(args: list[bytes]) -> Err:
    """Redis' text: each argument quoted and followed by a space, 128 characters at most."""
    rest = ""
    for a in args[1:]:
        if len(rest) >= 128:
            break
        rest += f"'{_arg_text(a, 128 - len(rest))}' "
    return Err(f"ERR unknown command '{_arg_text(args[0])}', with args beginning with: {rest}")


def error_of(frame: Frame) -> CommandError:
    """The RESP error for an rkv error reply frame."""
    code = str(frame.get("code"))
    msg = str(frame.get("msg") or code).replace("\r", " ").replace("\n", " ")
    return CommandError(_error_text(code, msg), code, msg)


def _error_text(code: str, msg: str) -> str:
    if code in ("unavailable", "not_leader", "too_many_connections"):
        return f"TRYAGAIN rkv: {msg} (not applied; retry)"
    if code == "timeout":
        return f"TIMEOUT rkv: {msg} (a write may or may not have been applied)"
    if code == "bad_request":
        return f"ERR {msg}"
    if code == "store_full":
        return f"OOM rkv: the store is full: {msg}"
    if code == "integrity":
        return f"ERR rkv integrity error: {msg}"
    return f"ERR rkv {code}: {msg}"


# -- calling the node -------------------------------------------------------------------------


async def call(ctx: Context, make: Callable[[], Frame]) -> Frame:
    """The ok reply of the request `make()` builds (once: a write keeps its seq across the
    retries, so it is applied once), retrying "try again" answers for `retry_seconds`."""
    try:
        frame = make()
    except RkvError as e:  # a request that does not fit (rkv.protocol checks every field)
        raise CommandError(f"ERR {e.msg}") from None
    deadline = trio.current_time() + ctx.session.settings.retry_seconds
    delay = 0.02
    while True:
        reply = await ctx.backend.request(frame)
        if reply.get("t") == "ok":
            return reply
        if reply.get("code") not in RETRY_CODES or trio.current_time() + delay > deadline:
            raise error_of(reply)
        await trio.sleep(delay)
        delay = min(delay * 2, 0.25)


def _write_session(ctx: Context) -> tuple[bytes, int]:
    return ctx.session.client_id, ctx.session.next_seq()


async def get_value(ctx: Context, key: bytes, *, stale: bool = False) -> bytes | None:
    reply = await call(ctx, lambda: GetRequest(key, stale).to_frame())
    v = reply.get("val")
    return v if isinstance(v, bytes) else None


async def put(ctx: Context, key: bytes, value: bytes) -> None:
    cid, seq = _write_session(ctx)
    await call(ctx, lambda: PutRequest(key, value, cid, seq).to_frame())


async def cas(ctx: Context, key: bytes, expected: bytes | None, value: bytes) -> bool:
    cid, seq = _write_session(ctx)
    reply = await call(ctx, lambda: CasRequest(key, expected, value, cid, seq).to_frame())
    return bool(reply.get("swapped"))


async def delete(ctx: Context, key: bytes) -> bool:
    cid, seq = _write_session(ctx)
    reply = await call(ctx, lambda: DeleteRequest(key, cid, seq).to_frame())
    return bool(reply.get("existed"))


async def txn(
    ctx: Context,
    compares: tuple[Compare, ...],
    success: tuple[Op, ...],
    failure: tuple[Op, ...] = (),
) -> TxnResult:
    """Run a txn (rkv.txn) as one write of the connection's session: the read-modify-write
    and multi-key commands are txns, applied atomically in the state machine (an op's error,
    e.g. INCR of a non-integer, comes back as Redis' text: nothing was applied)."""
    cid, seq = _write_session(ctx)
    reply = await call(ctx, lambda: TxnRequest(compares, success, failure, cid, seq).to_frame())
    return TxnReply.from_frame(reply).result()


def _key_ok(key: bytes) -> bytes:
    if not 1 <= len(key) <= MAX_KEY_LEN:
        raise CommandError(f"ERR rkv keys must be 1..{MAX_KEY_LEN} bytes, got {len(key)}")
    return key


def _int(a: bytes) -> int:
    try:
        if len(a) > 20:
            raise ValueError
        return int(a)
    except ValueError:
        raise not_integer() from None
