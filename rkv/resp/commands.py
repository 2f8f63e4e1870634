"""The RESP commands rkv serves: what each Redis command means in rkv, built only from
rkv.protocol requests handed to the node through the command's Context (rkv.resp.context).

Owns: the connection, server and key commands' handlers. Must not: name the commands or
decide which are refused (rkv.resp.table), read or write sockets (rkv.resp.server) or parse
bytes (rkv.resp.wire).
"""

from __future__ import annotations

import hmac
import os

from rkv.codec import MAX_VALUE_LEN
from rkv.resp import glob
from rkv.resp.context import (
    REDIS_VERSION,
    RKV_VERSION,
    CommandError,
    Context,
    Session,
    _arg_text,
    _int,
    _key_ok,
    cas,
    delete,
    get_value,
    syntax_error,
    wrong_arity,
)
from rkv.resp.plans import alone, plan_del, plan_exists
from rkv.resp.wire import OK, Reply, Simple

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


async def cmd_dbsize(ctx: Context, args: list[bytes]) -> Reply:
    # A read barrier first (a linearizable read through the usual path), then the count of
    # this node's applied state, which is at least as new: every write acknowledged before
    # DBSIZE started is counted. (Writes may land meanwhile, as in Redis.)
    await get_value(ctx, b"\x00rkv-dbsize-barrier")
    return ctx.backend.key_count()


# -- key commands -----------------------------------------------------------------------------


async def cmd_get(ctx: Context, args: list[bytes]) -> Reply:
    return await get_value(ctx, _key_ok(args[1]))


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
    """DEL/UNLINK: one key is a delete; several are one txn (atomic, at most 128 keys)."""
    if len(args) == 2:
        return int(await delete(ctx, _key_ok(args[1])))
    return await _DEL(ctx, args)


async def cmd_exists(ctx: Context, args: list[bytes]) -> Reply:
    """EXISTS: one key is a linearizable get; several are one txn of gets (one snapshot)."""
    if len(args) == 2:
        return int(await get_value(ctx, _key_ok(args[1])) is not None)
    return await _EXISTS(ctx, args)


_DEL = alone(plan_del)
_EXISTS = alone(plan_exists)


async def cmd_type(ctx: Context, args: list[bytes]) -> Reply:
    return Simple("none" if await get_value(ctx, _key_ok(args[1])) is None else "string")


async def cmd_strlen(ctx: Context, args: list[bytes]) -> Reply:
    v = await get_value(ctx, _key_ok(args[1]))
    return 0 if v is None else len(v)
