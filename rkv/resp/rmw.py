"""The RESP commands that read and write in one step, or write several keys at once: each
is one rkv transaction (rkv.txn), applied atomically in the state machine at one revision,
exactly once (the connection's session), never a read-then-write from here.

INCR/DECR/INCRBY/DECRBY (an incr op), INCRBYFLOAT (incr_float: decimal arithmetic, printed as
Redis prints it), APPEND, GETDEL (get + delete), GETSET (get + put), MSET (puts): each its
plan (rkv.resp.plans) run as a txn of its own. SET with NX / XX / GET (compares on the key's
version, a get before the put), MSETNX (every key absent, then puts): conditions, so not
plans (they cannot be queued in MULTI). A txn holds at most 128 writes, so MSET and MSETNX
take at most 128 keys.

Owns: these handlers. Must not: name the commands (rkv.resp.table), read or write sockets,
or decide what an op does (rkv.store.txn_apply does, on every replica).
"""

from __future__ import annotations

from rkv.resp.context import Context, _key_ok, cas, put, txn
from rkv.resp.plans import (
    alone,
    pairs,
    plan_append,
    plan_decr,
    plan_decrby,
    plan_getdel,
    plan_getset,
    plan_incr,
    plan_incrby,
    plan_incrbyfloat,
    plan_mset,
    value_of,
)
from rkv.resp.ttl import now_ms, set_with_ttl
from rkv.resp.ttlargs import set_options
from rkv.resp.wire import OK, Reply
from rkv.txn import Compare, Op, OpGet, OpPut

cmd_incr = alone(plan_incr)
cmd_decr = alone(plan_decr)
cmd_incrby = alone(plan_incrby)
cmd_decrby = alone(plan_decrby)
cmd_incrbyfloat = alone(plan_incrbyfloat)
cmd_append = alone(plan_append)
cmd_getdel = alone(plan_getdel)
cmd_getset = alone(plan_getset)
cmd_mset = alone(plan_mset)


async def cmd_set(ctx: Context, args: list[bytes]) -> Reply:
    """SET key value [NX | XX] [GET] [EX | PX | EXAT | PXAT | KEEPTTL]: a put; with NX, XX
    or GET a txn (compare the key's version, get the old value before the put); with a TTL
    option rkv.resp.ttl's (a lease of the key's own)."""
    key, value = _key_ok(args[1]), args[2]
    o = set_options(args, now_ms())
    if o.ttl is not None:
        return await set_with_ttl(ctx, key, value, o)
    nx, xx, get = o.nx, o.xx, o.get
    if not (xx or get):
        if nx:
            return OK if await cas(ctx, key, None, value) else None
        await put(ctx, key, value)
        return OK
    compares: tuple[Compare, ...] = ()
    if nx or xx:
        compares = (Compare(key, "version", "==" if nx else ">", 0),)
    read: tuple[Op, ...] = (OpGet(key),) if get else ()
    r = await txn(ctx, compares, (*read, OpPut(key, value)), read)
    if get:
        return value_of(r.results[0])
    return OK if r.succeeded else None


async def cmd_msetnx(ctx: Context, args: list[bytes]) -> Reply:
    kv = pairs(args, "msetnx")
    absent = tuple(Compare(k, "version", "==", 0) for k in kv)
    r = await txn(ctx, absent, tuple(OpPut(k, v) for k, v in kv.items()))
    return 1 if r.succeeded else 0
