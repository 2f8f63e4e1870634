"""The RESP command table: each command's name, arity, flags and handler, and the handlers.

Owns: what each Redis command means in rkv, built only from rkv.protocol requests handed to
the node (`Backend.request`: the same dispatcher and handlers as a native client's request,
so a follower forwards writes to the leader, reads are linearizable through the read barrier
and errors map the same way), the per-connection state (`Session`: protocol version,
authentication, name, the client session id and sequence number for exactly-once writes),
the Redis error texts, and the commands rkv refuses because they need what the state machine
does not offer yet (atomic read-modify-write, TTLs, transactions). Must not: read or write
sockets (rkv.resp.server) or parse bytes (rkv.resp.wire).
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from rkv.codec import MAX_KEY_LEN, MAX_VALUE_LEN
from rkv.errors import RkvError
from rkv.protocol import (
    MAX_SCAN_LIMIT,
    CasRequest,
    DeleteRequest,
    GetRequest,
    PutRequest,
    ScanRequest,
)
from rkv.resp import glob
from rkv.resp.wire import OK, Err, Reply, RSet, Simple

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

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq


class CommandError(Exception):
    """Reply with this error (`text` starts with its code) and carry on."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


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
    if code in ("unavailable", "not_leader", "too_many_connections"):
        return CommandError(f"TRYAGAIN rkv: {msg} (not applied; retry)")
    if code == "timeout":
        return CommandError(f"TIMEOUT rkv: {msg} (a write may or may not have been applied)")
    if code == "bad_request":
        return CommandError(f"ERR {msg}")
    if code == "store_full":
        return CommandError(f"OOM rkv: the store is full: {msg}")
    if code == "integrity":
        return CommandError(f"ERR rkv integrity error: {msg}")
    return CommandError(f"ERR rkv {code}: {msg}")


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


async def scan_keys(ctx: Context, pattern: bytes, what: str) -> list[bytes]:
    """Every key matching `pattern`, read by one linearizable scan of its literal prefix;
    an error if more than MAX_SCAN_LIMIT keys have that prefix (the node's scan has no
    resume point yet, and a silently short answer would be wrong)."""
    prefix = glob.literal_prefix(pattern)[:MAX_KEY_LEN]
    reply = await call(ctx, lambda: ScanRequest(prefix, MAX_SCAN_LIMIT).to_frame())
    items = reply.get("items") or []
    if len(items) >= MAX_SCAN_LIMIT:
        raise CommandError(
            f"ERR rkv {what}: more than {MAX_SCAN_LIMIT} keys start with {prefix!r}; rkv's scan "
            "cannot resume yet: use a pattern with a longer literal prefix"
        )
    keys = [k for k, _ in items]
    if pattern == b"*" or pattern == prefix + b"*":
        return keys
    return [k for k in keys if glob.match(pattern, k)]


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


# -- connection commands ----------------------------------------------------------------------


async def cmd_ping(ctx: Context, args: list[bytes]) -> Reply:
    if len(args) > 2:
        raise wrong_arity("ping")
    return args[1] if len(args) == 2 else Simple("PONG")


async def cmd_echo(ctx: Context, args: list[bytes]) -> Reply:
    return args[1]


def check_password(ctx: Context, password: bytes, *, user: bool = False) -> None:
    """Authenticate with the cluster token as the password. Without a token, `AUTH user
    pass` and `HELLO AUTH` succeed (as Redis' default user without a password: any password
    does) and `AUTH pass` is refused with Redis' text."""
    token = ctx.session.settings.token
    if token is None:
        if user:
            ctx.session.authed = True
            return
        raise CommandError(
            "ERR AUTH <password> called without any password configured for the default "
            "user. Are you sure your configuration is correct?"
        )
    if not hmac.compare_digest(password, token.encode()):
        raise CommandError("WRONGPASS invalid username-password pair or user is disabled.")
    ctx.session.authed = True


async def cmd_auth(ctx: Context, args: list[bytes]) -> Reply:
    if len(args) not in (2, 3):
        raise syntax_error()
    check_password(ctx, args[-1], user=len(args) == 3)
    return OK


async def cmd_hello(ctx: Context, args: list[bytes]) -> Reply:
    s = ctx.session
    proto = s.proto
    i = 1
    if len(args) > 1:
        try:
            proto = int(args[1])
        except ValueError:
            raise CommandError("ERR Protocol version is not an integer or out of range") from None
        if proto not in (2, 3):
            raise CommandError("NOPROTO unsupported protocol version")
        i = 2
    name: bytes | None = None
    while i < len(args):
        opt = args[i].upper()
        if opt == b"AUTH" and i + 2 < len(args):
            check_password(ctx, args[i + 2], user=True)
            i += 3
        elif opt == b"SETNAME" and i + 1 < len(args):
            name = args[i + 1]
            i += 2
        else:
            raise CommandError(f"ERR Syntax error in HELLO option '{_arg_text(args[i])}'")
    if s.settings.token is not None and not s.authed:
        raise CommandError(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the "
            "HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and "
            "select the RESP protocol version at the same time"
        )
    if name is not None:
        _set_name(s, name)
    s.proto = proto
    st = ctx.backend.status()
    return {
        "server": "redis",
        "version": REDIS_VERSION,
        "proto": proto,
        "id": s.conn_id,
        "mode": "standalone",
        "role": "master" if st.get("role") == "leader" else "replica",
        "modules": [],
    }


def _set_name(s: Session, name: bytes) -> None:
    if any(c <= 0x20 or c > 0x7E for c in name):
        raise CommandError(
            "ERR Client names cannot contain spaces, newlines or special characters."
        )
    s.name = name or None


async def cmd_client(ctx: Context, args: list[bytes]) -> Reply:
    s = ctx.session
    sub = args[1].upper()
    if sub == b"SETINFO" and len(args) == 4:
        attr = args[2].upper()
        if attr == b"LIB-NAME":
            s.lib_name = args[3]
        elif attr == b"LIB-VER":
            s.lib_ver = args[3]
        else:
            raise CommandError(f"ERR Unrecognized option '{_arg_text(args[2])}'")
        return OK
    if sub == b"SETNAME" and len(args) == 3:
        _set_name(s, args[2])
        return OK
    if sub == b"GETNAME" and len(args) == 2:
        return s.name
    if sub == b"ID" and len(args) == 2:
        return s.conn_id
    if sub in (b"SETINFO", b"SETNAME", b"GETNAME", b"ID"):
        raise CommandError(
            f"ERR wrong number of arguments for 'client|{sub.lower().decode()}' command"
        )
    raise CommandError(f"ERR unknown subcommand '{_arg_text(args[1])}'. Try CLIENT HELP.")


async def cmd_select(ctx: Context, args: list[bytes]) -> Reply:
    db = _int(args[1])
    if db != 0:
        raise CommandError("ERR DB index is out of range")
    return OK


async def cmd_quit(ctx: Context, args: list[bytes]) -> Reply:
    ctx.session.closing = True
    return OK


# -- server commands --------------------------------------------------------------------------


async def cmd_info(ctx: Context, args: list[bytes]) -> Reply:
    st = ctx.backend.status()
    wanted = {a.lower() for a in args[1:]} or {b"default"}
    everything = bool(wanted & {b"all", b"everything", b"default"})
    role = str(st.get("role"))
    sections: list[tuple[bytes, list[str]]] = [
        (
            b"server",
            [
                f"redis_version:{REDIS_VERSION}",
                f"rkv_version:{RKV_VERSION}",
                "redis_mode:standalone",
                f"process_id:{os.getpid()}",
                f"tcp_port:{ctx.session.settings.port}",
                f"rkv_node:{st.get('node')}",
                f"rkv_cluster:{st.get('cluster')}",
            ],
        ),
        (b"persistence", ["loading:0", "aof_enabled:1", "rkv_fsync:always (majority)"]),
        (
            b"replication",
            [
                f"role:{'master' if role == 'leader' else 'slave'}",
                f"rkv_role:{role}",
                f"rkv_leader:{st.get('leader_addr') or st.get('leader') or ''}",
                f"rkv_term:{st.get('term')}",
                f"rkv_commit_index:{st.get('commit')}",
                f"rkv_applied_index:{st.get('applied')}",
                f"rkv_voters:{','.join(map(str, st.get('voters') or []))}",
                f"rkv_learners:{','.join(map(str, st.get('learners') or []))}",
            ],
        ),
    ]
    parts = []
    for name, lines in sections:
        if everything or name in wanted:
            parts.append(f"# {name.decode().capitalize()}\r\n" + "".join(f"{x}\r\n" for x in lines))
    return "\r\n".join(parts).encode()


CONFIG = {
    b"save": b"",
    b"appendonly": b"yes",
    b"appendfsync": b"always",
    b"databases": b"1",
    b"maxmemory": b"0",
    b"proto-max-bulk-len": str(MAX_VALUE_LEN).encode(),
}
"""What CONFIG GET answers (read-only: a node is configured by its `rkv serve` options)."""


async def cmd_config(ctx: Context, args: list[bytes]) -> Reply:
    sub = args[1].upper()
    if sub != b"GET":
        if sub in (b"SET", b"RESETSTAT", b"REWRITE"):
            raise CommandError(
                f"ERR rkv does not support 'config|{sub.lower().decode()}': a node is "
                "configured by its rkv serve options"
            )
        raise CommandError(f"ERR unknown subcommand '{_arg_text(args[1])}'. Try CONFIG HELP.")
    if len(args) < 3:
        raise wrong_arity("config|get")
    found: dict[Reply, Reply] = {}
    for pat in args[2:]:
        for k, v in CONFIG.items():
            if glob.match(pat, k, nocase=True):
                found[k] = v
    return found


async def cmd_command(ctx: Context, args: list[bytes]) -> Reply:
    if len(args) == 1:
        return [_command_info(c) for c in COMMANDS.values()]
    sub = args[1].upper()
    if sub == b"COUNT":
        return len(COMMANDS)
    if sub == b"INFO":
        asked = [n.decode("latin-1").lower() for n in args[2:]] or list(COMMANDS)
        return [_command_info(COMMANDS[n]) if n in COMMANDS else None for n in asked]
    if sub == b"DOCS":
        names = [n.decode("latin-1").lower() for n in args[2:]] or list(COMMANDS)
        docs: dict[Reply, Reply] = {}
        for n in names:
            c = COMMANDS.get(n)
            if c is not None:
                docs[c.name] = {"summary": c.summary, "since": "1.0.0", "group": c.group}
        return docs
    if sub == b"LIST":
        return [c.name for c in COMMANDS.values()]
    raise CommandError(f"ERR unknown subcommand '{_arg_text(args[1])}'. Try COMMAND HELP.")


def _command_info(c: Command) -> Reply:
    return [
        c.name,
        c.arity,
        RSet(tuple(Simple(f) for f in c.flags)),
        c.first_key,
        c.last_key,
        c.step,
        RSet(()),
        RSet(()),
        [],
        [],
    ]


async def cmd_dbsize(ctx: Context, args: list[bytes]) -> Reply:
    # A read barrier first (a linearizable read through the usual path), then the count of
    # this node's applied state, which is at least as new: every write acknowledged before
    # DBSIZE started is counted. (Writes may land meanwhile, as in Redis.)
    await get_value(ctx, b"\x00rkv-dbsize-barrier")
    return ctx.backend.key_count()


# -- key commands -----------------------------------------------------------------------------


async def cmd_get(ctx: Context, args: list[bytes]) -> Reply:
    return await get_value(ctx, _key_ok(args[1]))


async def cmd_set(ctx: Context, args: list[bytes]) -> Reply:
    key, value = _key_ok(args[1]), args[2]
    nx = False
    for opt in args[3:]:
        o = opt.upper()
        if o == b"NX":
            nx = True
        elif o in (b"XX", b"GET", b"EX", b"PX", b"EXAT", b"PXAT", b"KEEPTTL"):
            why = (
                "it needs TTLs decided through the log"
                if o not in (b"XX", b"GET")
                else "it needs an atomic read-modify-write in the state machine"
            )
            raise CommandError(f"ERR rkv does not support 'set' with {o.decode()} yet: {why}")
        else:
            raise syntax_error()
    if nx:
        return OK if await cas(ctx, key, None, value) else None
    await put(ctx, key, value)
    return OK


async def cmd_setnx(ctx: Context, args: list[bytes]) -> Reply:
    return 1 if await cas(ctx, _key_ok(args[1]), None, args[2]) else 0


async def cmd_mget(ctx: Context, args: list[bytes]) -> Reply:
    keys = [_key_ok(k) for k in args[1:]]
    # One read barrier (the first key's linearizable read), then the others from this node's
    # state, which is at least that new: each value is linearizable, but the keys are not
    # read from one atomic snapshot (a write may land between two of them).
    out: list[Reply] = [await get_value(ctx, keys[0])]
    for k in keys[1:]:
        out.append(await get_value(ctx, k, stale=True))
    return out


async def cmd_del(ctx: Context, args: list[bytes]) -> Reply:
    # One log entry per key, in order: not atomic across keys.
    n = 0
    for k in args[1:]:
        n += await delete(ctx, _key_ok(k))
    return n


async def cmd_exists(ctx: Context, args: list[bytes]) -> Reply:
    keys = [_key_ok(k) for k in args[1:]]
    n = int(await get_value(ctx, keys[0]) is not None)
    for k in keys[1:]:
        n += await get_value(ctx, k, stale=True) is not None
    return n


async def cmd_type(ctx: Context, args: list[bytes]) -> Reply:
    return Simple("none" if await get_value(ctx, _key_ok(args[1])) is None else "string")


async def cmd_strlen(ctx: Context, args: list[bytes]) -> Reply:
    v = await get_value(ctx, _key_ok(args[1]))
    return 0 if v is None else len(v)


async def cmd_keys(ctx: Context, args: list[bytes]) -> Reply:
    return await scan_keys(ctx, args[1], "keys")


async def cmd_scan(ctx: Context, args: list[bytes]) -> Reply:
    # The whole answer in one reply, cursor 0 (Redis allows any number of keys per call).
    cursor = args[1]
    if not cursor.isdigit():
        raise CommandError("ERR invalid cursor")
    pattern = b"*"
    i = 2
    while i < len(args):
        opt = args[i].upper()
        if opt == b"MATCH" and i + 1 < len(args):
            pattern = args[i + 1]
        elif opt == b"COUNT" and i + 1 < len(args):
            if _int(args[i + 1]) < 1:
                raise syntax_error()
        elif opt == b"TYPE" and i + 1 < len(args):
            if args[i + 1].lower() != b"string":
                return [b"0", []]
        else:
            raise syntax_error()
        i += 2
    if int(cursor) != 0:
        return [b"0", []]
    return [b"0", await scan_keys(ctx, pattern, "scan")]


# -- not supported yet ------------------------------------------------------------------------

RMW = "it needs an atomic read-modify-write in the state machine"
TTL = "it needs TTLs decided through the log (leases)"
TXN = "it needs transactions in the state machine"
LUA = "it needs scripts run deterministically inside the state machine"

UNSUPPORTED: dict[str, str] = {
    **dict.fromkeys(
        [
            "incr",
            "incrby",
            "decr",
            "decrby",
            "incrbyfloat",
            "append",
            "getset",
            "getdel",
            "getex",
            "setrange",
            "getrange",
            "msetnx",
            "mset",
            "psetex",
            "setex",
        ],
        RMW,
    ),
    **dict.fromkeys(
        [
            "expire",
            "pexpire",
            "expireat",
            "pexpireat",
            "ttl",
            "pttl",
            "persist",
            "expiretime",
            "pexpiretime",
        ],
        TTL,
    ),
    **dict.fromkeys(["multi", "exec", "discard", "watch", "unwatch"], TXN),
    **dict.fromkeys(
        ["eval", "evalsha", "eval_ro", "evalsha_ro", "script", "fcall", "function"], LUA
    ),
}
UNSUPPORTED["mset"] = "it needs a multi-key atomic write in the state machine"
UNSUPPORTED["msetnx"] = UNSUPPORTED["mset"]
UNSUPPORTED["setex"] = UNSUPPORTED["psetex"] = TTL


def unsupported(name: str) -> Err:
    return Err(f"ERR rkv does not support '{name}' yet: {UNSUPPORTED[name]}")


# -- the table --------------------------------------------------------------------------------


def _c(
    name: str,
    arity: int,
    flags: str,
    keys: tuple[int, int, int],
    handler: Handler,
    group: str,
    summary: str,
) -> Command:
    return Command(name, arity, tuple(flags.split()), *keys, handler, group, summary)


_NOKEY = (0, 0, 0)
COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        _c(
            "ping",
            -1,
            "fast stale",
            _NOKEY,
            cmd_ping,
            "connection",
            "Returns the server's liveliness response.",
        ),
        _c("echo", 2, "fast", _NOKEY, cmd_echo, "connection", "Returns the given string."),
        _c(
            "hello",
            -1,
            "noscript loading stale fast no_auth",
            _NOKEY,
            cmd_hello,
            "connection",
            "Handshakes with the server.",
        ),
        _c(
            "auth",
            -2,
            "noscript loading stale fast no_auth",
            _NOKEY,
            cmd_auth,
            "connection",
            "Authenticates the connection.",
        ),
        _c(
            "client",
            -2,
            "noscript loading stale",
            _NOKEY,
            cmd_client,
            "connection",
            "SETINFO, SETNAME, GETNAME, ID.",
        ),
        _c(
            "select",
            2,
            "loading stale fast",
            _NOKEY,
            cmd_select,
            "connection",
            "Changes the selected database (only 0).",
        ),
        _c(
            "quit",
            -1,
            "noscript loading stale fast no_auth",
            _NOKEY,
            cmd_quit,
            "connection",
            "Closes the connection.",
        ),
        _c(
            "info",
            -1,
            "loading stale",
            _NOKEY,
            cmd_info,
            "server",
            "Returns information about the node.",
        ),
        _c(
            "config",
            -2,
            "admin noscript loading stale",
            _NOKEY,
            cmd_config,
            "server",
            "CONFIG GET.",
        ),
        _c(
            "command",
            -1,
            "loading stale",
            _NOKEY,
            cmd_command,
            "server",
            "Returns detailed information about commands.",
        ),
        _c(
            "dbsize",
            1,
            "readonly fast",
            _NOKEY,
            cmd_dbsize,
            "server",
            "Returns the number of keys.",
        ),
        _c(
            "type",
            2,
            "readonly fast",
            (1, 1, 1),
            cmd_type,
            "generic",
            "Determines the type of value stored at a key.",
        ),
        _c(
            "get",
            2,
            "readonly fast",
            (1, 1, 1),
            cmd_get,
            "string",
            "Returns the string value of a key.",
        ),
        _c(
            "set",
            -3,
            "write denyoom",
            (1, 1, 1),
            cmd_set,
            "string",
            "Sets the string value of a key (NX supported).",
        ),
        _c(
            "setnx",
            3,
            "write denyoom fast",
            (1, 1, 1),
            cmd_setnx,
            "string",
            "Set the string value of a key only when the key doesn't exist.",
        ),
        _c(
            "mget",
            -2,
            "readonly fast",
            (1, -1, 1),
            cmd_mget,
            "string",
            "Returns the string values of one or more keys (not one snapshot).",
        ),
        _c(
            "del",
            -2,
            "write",
            (1, -1, 1),
            cmd_del,
            "generic",
            "Deletes one or more keys (one write per key).",
        ),
        _c(
            "unlink",
            -2,
            "write fast",
            (1, -1, 1),
            cmd_del,
            "generic",
            "Deletes one or more keys (one write per key).",
        ),
        _c(
            "exists",
            -2,
            "readonly fast",
            (1, -1, 1),
            cmd_exists,
            "generic",
            "Determines whether one or more keys exist.",
        ),
        _c(
            "strlen",
            2,
            "readonly fast",
            (1, 1, 1),
            cmd_strlen,
            "string",
            "Returns the length of a string value.",
        ),
        _c(
            "keys",
            2,
            "readonly",
            _NOKEY,
            cmd_keys,
            "generic",
            "Returns all key names that match a pattern.",
        ),
        _c(
            "scan",
            -2,
            "readonly",
            _NOKEY,
            cmd_scan,
            "generic",
            "Iterates over the key names (one call).",
        ),
    )
}

NO_AUTH = frozenset({"auth", "hello", "quit"})
