"""MULTI, EXEC, DISCARD, WATCH and UNWATCH: Redis transactions as one rkv transaction.

After MULTI each command is queued (`+QUEUED`) as its plan (rkv.resp.plans); EXEC runs every
queued plan's ops as ONE rkv txn (one revision, atomic, exactly once) and replies with an
array holding each command's own reply. WATCH reads each key's mod revision (absent: 0)
by a linearizable get with the key's record (`meta`: a read, no log entry) and EXEC's txn
compares them, so EXEC replies a null array, applying nothing, if a watched key was written
since. EXEC and DISCARD end the MULTI and clear the watches; UNWATCH clears them.

What differs from Redis, each a clear error rather than a different outcome:
- A command that is not a plan cannot be queued (the error names it; EXEC then replies
  EXECABORT, as after any error while queueing): SET NX/XX, SETNX and MSETNX (conditions
  decide a whole rkv txn, not one command), KEYS, SCAN, DBSIZE and the connection and server
  commands (NOT_QUEUEABLE's reason). A key written by two queued commands is refused too
  (an rkv txn writes a key at most once).
- A command that fails when EXEC runs (INCR of a non-integer) fails the whole EXEC: the
  reply is its error and nothing was applied (Redis would run the other commands).
- At most MAX_QUEUED commands, MAX_COMPARES (128) watched keys, and one txn's bounds
  (rkv.txn: 128 ops, 16 MiB): an EXEC past them replies an error and applies nothing.

Owns: these handlers and `queue` (what a connection in MULTI does with a command). Must not:
name the commands' handlers (rkv.resp.table), read or write sockets, parse bytes.
"""

from __future__ import annotations

from rkv.protocol import GetRequest, ValueReply
from rkv.resp import plans
from rkv.resp.context import CommandError, Context, Multi, _key_ok, call, txn
from rkv.resp.ttl import TTL_COMMANDS, TTL_NOT_QUEUEABLE
from rkv.resp.wire import NULL_ARRAY, OK, Err, Reply, Simple
from rkv.txn import (
    MAX_COMPARES,
    Compare,
    OpAppend,
    OpDelete,
    OpIncr,
    OpIncrFloat,
    OpPut,
    Txn,
    TxnError,
)

MAX_QUEUED = 1000
"""The most commands one MULTI may queue."""

IMMEDIATE = frozenset({"multi", "exec", "discard", "watch", "quit"})
"""What a connection in MULTI runs at once rather than queues (as Redis)."""

QUEUEABLE: dict[str, plans.Planner] = {
    "get": plans.plan_get,
    "strlen": plans.plan_strlen,
    "type": plans.plan_type,
    "mget": plans.plan_mget,
    "exists": plans.plan_exists,
    "del": plans.plan_del,
    "unlink": plans.plan_del,
    "set": plans.plan_set,
    "getset": plans.plan_getset,
    "getdel": plans.plan_getdel,
    "incr": plans.plan_incr,
    "decr": plans.plan_decr,
    "incrby": plans.plan_incrby,
    "decrby": plans.plan_decrby,
    "incrbyfloat": plans.plan_incrbyfloat,
    "append": plans.plan_append,
    "mset": plans.plan_mset,
    "ping": plans.plan_ping,
    "echo": plans.plan_echo,
    "unwatch": plans.plan_unwatch,
}

_CONDITION = "its condition would decide the whole rkv transaction, not this command"
NOT_QUEUEABLE: dict[str, str] = {
    "setnx": _CONDITION + "; use WATCH, or SETNX outside MULTI",
    "msetnx": _CONDITION + "; use WATCH, or MSETNX outside MULTI",
    "keys": "it is a scan, not a transaction op",
    "scan": "it is a scan, not a transaction op",
    "dbsize": "it counts the node's keys, not a transaction op",
    **dict.fromkeys(TTL_COMMANDS, TTL_NOT_QUEUEABLE),
}
"""The reasons of the refusals that have a specific one; every other command that is not in
QUEUEABLE is refused as a connection or server command."""


_WRITES = (OpPut, OpDelete, OpIncr, OpIncrFloat, OpAppend)


def _refusal(name: str) -> Err:
    why = NOT_QUEUEABLE.get(name, "it is a connection or server command, not a transaction op")
    return Err(f"ERR rkv cannot queue '{name}' inside MULTI: {why}")


def queue(ctx: Context, m: Multi, name: str, args: list[bytes], err: Err | None) -> Reply:
    """Queue a command (`err`: the table refused it: unknown or wrong arity). Any error
    here makes the EXEC reply EXECABORT."""
    reply = _queue(m, name, args, err)
    if isinstance(reply, Err):
        m.failed = True
    return reply


def _queue(m: Multi, name: str, args: list[bytes], err: Err | None) -> Reply:
    if err is not None:
        return err
    planner = QUEUEABLE.get(name)
    if planner is None:
        return _refusal(name)
    if len(m.queued) >= MAX_QUEUED:
        return Err(f"ERR rkv MULTI queues at most {MAX_QUEUED} commands")
    try:
        plan = planner(args)
    except CommandError as e:
        return Err(e.text)
    writes = [op.key for op in plan.ops if isinstance(op, _WRITES)]
    for k in writes:
        if k in m.written:
            return Err(
                f"ERR rkv cannot queue '{name}': key {k[:60]!r} is already written by a queued "
                "command (EXEC is one rkv transaction, which writes a key at most once)"
            )
    m.written.update(writes)
    m.queued.append(plan)
    return Simple("QUEUED")


async def cmd_multi(ctx: Context, args: list[bytes]) -> Reply:
    if ctx.session.multi is not None:
        raise CommandError("ERR MULTI calls can not be nested")
    ctx.session.multi = Multi()
    return OK


async def cmd_discard(ctx: Context, args: list[bytes]) -> Reply:
    s = ctx.session
    if s.multi is None:
        raise CommandError("ERR DISCARD without MULTI")
    s.multi, s.watched = None, {}
    return OK


async def cmd_unwatch(ctx: Context, args: list[bytes]) -> Reply:
    ctx.session.watched = {}
    return OK


async def cmd_watch(ctx: Context, args: list[bytes]) -> Reply:
    s = ctx.session
    if s.multi is not None:
        raise CommandError("ERR WATCH inside MULTI is not allowed")
    keys = [k for k in dict.fromkeys(_key_ok(a) for a in args[1:]) if k not in s.watched]
    if len(s.watched) + len(keys) > MAX_COMPARES:
        raise CommandError(
            f"ERR rkv watches at most {MAX_COMPARES} keys per connection (one txn's compares)"
        )
    if keys:
        s.watched.update(await _mod_revisions(ctx, keys))
    return OK


async def _mod_revisions(ctx: Context, keys: list[bytes]) -> dict[bytes, int]:
    """Each key's mod revision (absent: 0), by a linearizable get with its record per key
    (a read: no log entry)."""
    return {k: await _mod_revision(ctx, k) for k in keys}


async def _mod_revision(ctx: Context, key: bytes) -> int:
    reply = ValueReply.from_frame(await call(ctx, GetRequest(key, meta=True).to_frame))
    if not reply.meta:
        raise CommandError("ERR rkv WATCH: the node sent no record (it predates 'meta')")
    return 0 if reply.record is None else reply.record.mod_revision


async def cmd_exec(ctx: Context, args: list[bytes]) -> Reply:
    s = ctx.session
    m = s.multi
    if m is None:
        raise CommandError("ERR EXEC without MULTI")
    watched = s.watched
    s.multi, s.watched = None, {}
    if m.failed:
        raise CommandError("EXECABORT Transaction discarded because of previous errors.")
    ops = tuple(op for p in m.queued for op in p.ops)
    compares = tuple(Compare(k, "mod", "==", rev) for k, rev in watched.items())
    if not ops and not compares:
        return [p.reply(()) for p in m.queued]
    try:
        Txn(compares, ops)
    except TxnError as e:
        raise CommandError(
            f"ERR rkv EXEC: the queued commands do not fit in one rkv transaction ({e}); "
            "nothing was applied"
        ) from None
    try:
        r = await txn(ctx, compares, ops)
    except CommandError as e:
        if e.text.startswith("ERR "):  # an op failed: the txn changed nothing
            raise CommandError(f"ERR rkv EXEC failed, nothing was applied: {e.text[4:]}") from None
        raise
    if not r.succeeded:
        return NULL_ARRAY
    out: list[Reply] = []
    i = 0
    for p in m.queued:
        out.append(p.reply(r.results[i : i + len(p.ops)]))
        i += len(p.ops)
    return out
