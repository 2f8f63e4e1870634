"""The RESP commands that read and write in one step, or write several keys at once: each
is one rkv transaction (rkv.txn), applied atomically in the state machine at one revision,
exactly once (the connection's session), never a read-then-write from here.

INCR/DECR/INCRBY/DECRBY (an incr op), INCRBYFLOAT (incr_float: decimal arithmetic, printed as
Redis prints it), APPEND, GETDEL (get + delete), GETSET (get + put), SET with NX / XX / GET
(compares on the key's version, a get before the put), MSET (puts), MSETNX (every key absent,
then puts). A txn holds at most 128 writes, so MSET and MSETNX take at most 128 keys.

Owns: these handlers. Must not: name the commands (rkv.resp.table), read or write sockets,
or decide what an op does (rkv.store.txn_apply does, on every replica).
"""

from __future__ import annotations

from rkv.resp.context import (
    CommandError,
    Context,
    _int,
    _key_ok,
    cas,
    put,
    syntax_error,
    txn,
    wrong_arity,
)
from rkv.resp.wire import OK, Reply
from rkv.txn import (
    INT64_MAX,
    INT64_MIN,
    MAX_OPS,
    NOT_A_FLOAT,
    Compare,
    KeyValue,
    Op,
    OpAppend,
    OpDelete,
    OpGet,
    OpIncr,
    OpIncrFloat,
    OpPut,
    parse_decimal,
)


def _value(r: object) -> bytes | None:
    return r.value if isinstance(r, KeyValue) else None


def _scalar(r: object) -> int | bytes:
    """An incr's, incr_float's or append's result (an int, or bytes)."""
    assert type(r) is int or type(r) is bytes, r
    return r


async def _incr(ctx: Context, key: bytes, delta: int) -> Reply:
    r = await txn(ctx, (), (OpIncr(key, delta),))
    return _scalar(r.results[0])


async def cmd_incr(ctx: Context, args: list[bytes]) -> Reply:
    return await _incr(ctx, _key_ok(args[1]), 1)


async def cmd_decr(ctx: Context, args: list[bytes]) -> Reply:
    return await _incr(ctx, _key_ok(args[1]), -1)


async def cmd_incrby(ctx: Context, args: list[bytes]) -> Reply:
    key, n = _key_ok(args[1]), _int(args[2])
    if not INT64_MIN <= n <= INT64_MAX:
        raise CommandError("ERR value is not an integer or out of range")
    return await _incr(ctx, key, n)


async def cmd_decrby(ctx: Context, args: list[bytes]) -> Reply:
    key, n = _key_ok(args[1]), _int(args[2])
    if not INT64_MIN <= n <= INT64_MAX:
        raise CommandError("ERR value is not an integer or out of range")
    if n == INT64_MIN:
        raise CommandError("ERR decrement would overflow")
    return await _incr(ctx, key, -n)


async def cmd_incrbyfloat(ctx: Context, args: list[bytes]) -> Reply:
    key = _key_ok(args[1])
    if parse_decimal(args[2]) is None:
        raise CommandError(f"ERR {NOT_A_FLOAT}")
    r = await txn(ctx, (), (OpIncrFloat(key, args[2]),))
    return _scalar(r.results[0])


async def cmd_append(ctx: Context, args: list[bytes]) -> Reply:
    r = await txn(ctx, (), (OpAppend(_key_ok(args[1]), args[2]),))
    return _scalar(r.results[0])


async def cmd_getdel(ctx: Context, args: list[bytes]) -> Reply:
    key = _key_ok(args[1])
    r = await txn(ctx, (), (OpGet(key), OpDelete(key)))
    return _value(r.results[0])


async def cmd_getset(ctx: Context, args: list[bytes]) -> Reply:
    key = _key_ok(args[1])
    r = await txn(ctx, (), (OpGet(key), OpPut(key, args[2])))
    return _value(r.results[0])


_TTL_OPTIONS = (b"EX", b"PX", b"EXAT", b"PXAT", b"KEEPTTL")


async def cmd_set(ctx: Context, args: list[bytes]) -> Reply:
    """SET key value [NX | XX] [GET]: a put; with NX, XX or GET a txn (compare the key's
    version, get the old value before the put). TTL options are refused (no TTLs yet)."""
    key, value = _key_ok(args[1]), args[2]
    nx = xx = get = False
    for opt in args[3:]:
        o = opt.upper()
        if o == b"NX" and not xx:
            nx = True
        elif o == b"XX" and not nx:
            xx = True
        elif o == b"GET":
            get = True
        elif o in _TTL_OPTIONS:
            raise CommandError(
                f"ERR rkv does not support 'set' with {o.decode()} yet: it needs TTLs decided "
                "through the log"
            )
        else:
            raise syntax_error()
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
        return _value(r.results[0])
    return OK if r.succeeded else None


def _pairs(args: list[bytes], name: str) -> dict[bytes, bytes]:
    if len(args) < 3 or len(args) % 2 != 1:
        raise wrong_arity(name)
    pairs: dict[bytes, bytes] = {}
    for i in range(1, len(args), 2):
        pairs[_key_ok(args[i])] = args[i + 1]  # a key given twice: the last value, as Redis
    if len(pairs) > MAX_OPS:
        raise CommandError(f"ERR rkv {name}: at most {MAX_OPS} keys in one call (one txn)")
    return pairs


async def cmd_mset(ctx: Context, args: list[bytes]) -> Reply:
    pairs = _pairs(args, "mset")
    await txn(ctx, (), tuple(OpPut(k, v) for k, v in pairs.items()))
    return OK


async def cmd_msetnx(ctx: Context, args: list[bytes]) -> Reply:
    pairs = _pairs(args, "msetnx")
    absent = tuple(Compare(k, "version", "==", 0) for k in pairs)
    r = await txn(ctx, absent, tuple(OpPut(k, v) for k, v in pairs.items()))
    return 1 if r.succeeded else 0
