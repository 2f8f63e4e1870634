"""The commands that are txn ops: for each, its `Plan` (rkv.resp.context): the ops it runs
inside one rkv transaction (rkv.txn) and how their results make its reply, the same reply
type the command alone gives. A read-modify-write command alone is its plan run as a txn of
its own (rkv.resp.rmw); EXEC runs the plans of every queued command as one txn
(rkv.resp.multi).

Plans: GET, STRLEN, TYPE, MGET, EXISTS (gets), DEL/UNLINK (deletes; a key named twice is
deleted once), SET without NX/XX (a put, with GET a get before it), GETSET, GETDEL,
INCR/DECR/INCRBY/DECRBY (incr), INCRBYFLOAT (incr_float), APPEND, MSET (puts), and PING,
ECHO, UNWATCH (no ops). A planner checks the arguments (syntax errors are found when the
command is queued); the table checked the arity.

Owns: the planners. Must not: name the commands (rkv.resp.table), call the node or decide
what an op does (rkv.store.txn_apply does, on every replica).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rkv.resp.context import (
    CommandError,
    Context,
    Handler,
    Plan,
    _int,
    _key_ok,
    txn,
    wrong_arity,
)
from rkv.resp.ttlargs import set_options
from rkv.resp.wire import OK, Reply, Simple
from rkv.txn import (
    INT64_MAX,
    INT64_MIN,
    MAX_OPS,
    NOT_A_FLOAT,
    KeyValue,
    OpAppend,
    OpDelete,
    OpGet,
    OpIncr,
    OpIncrFloat,
    OpPut,
    OpResult,
    parse_decimal,
)

Planner = Callable[[list[bytes]], Plan]


def value_of(r: OpResult) -> bytes | None:
    """A get's value (None: absent)."""
    return r.value if isinstance(r, KeyValue) else None


def _scalar(rs: Sequence[OpResult]) -> Reply:
    """An incr's, incr_float's or append's result (an int, or bytes)."""
    r = rs[0]
    assert type(r) is int or type(r) is bytes, r
    return r


def _first_value(rs: Sequence[OpResult]) -> Reply:
    return value_of(rs[0])


def alone(planner: Planner) -> Handler:
    """The handler that runs the command's plan as a txn of its own."""

    async def handler(ctx: Context, args: list[bytes]) -> Reply:
        p = planner(args)
        r = await txn(ctx, (), p.ops)
        return p.reply(r.results)

    return handler


# -- reads ------------------------------------------------------------------------------------


def plan_get(args: list[bytes]) -> Plan:
    return Plan((OpGet(_key_ok(args[1])),), _first_value)


def plan_strlen(args: list[bytes]) -> Plan:
    def reply(rs: Sequence[OpResult]) -> Reply:
        v = value_of(rs[0])
        return 0 if v is None else len(v)

    return Plan((OpGet(_key_ok(args[1])),), reply)


def plan_type(args: list[bytes]) -> Plan:
    def reply(rs: Sequence[OpResult]) -> Reply:
        return Simple("none" if rs[0] is None else "string")

    return Plan((OpGet(_key_ok(args[1])),), reply)


def plan_mget(args: list[bytes]) -> Plan:
    return Plan(tuple(OpGet(_key_ok(k)) for k in args[1:]), lambda rs: [value_of(r) for r in rs])


def plan_exists(args: list[bytes]) -> Plan:
    """EXISTS: a get per key named (a key named twice counts twice, as Redis)."""
    _at_most(len(args) - 1, "exists")
    return Plan(
        tuple(OpGet(_key_ok(k)) for k in args[1:]), lambda rs: sum(r is not None for r in rs)
    )


def _at_most(n: int, name: str) -> None:
    if n > MAX_OPS:
        raise CommandError(f"ERR rkv {name}: at most {MAX_OPS} keys in one call (one txn)")


# -- writes -----------------------------------------------------------------------------------


def plan_del(args: list[bytes]) -> Plan:
    keys = dict.fromkeys(_key_ok(k) for k in args[1:])  # DEL a a deletes a once, as Redis
    _at_most(len(keys), args[0].decode("latin-1").lower())
    return Plan(tuple(OpDelete(k) for k in keys), _count)


def _count(rs: Sequence[OpResult]) -> Reply:
    """The sum of deletes' results (each the number of keys it deleted)."""
    return sum(r for r in rs if type(r) is int)


def plan_set(args: list[bytes]) -> Plan:
    """SET key value [GET] (NX and XX are conditions, a TTL a lease granted first: not a
    plan, refused inside MULTI)."""
    key, value = _key_ok(args[1]), args[2]
    o = set_options(args, 0)
    if o.ttl is not None:
        raise CommandError(
            f"ERR rkv cannot queue 'set' with {o.ttl_option} inside MULTI: a TTL is a lease "
            "granted before the transaction; use SET with a TTL outside MULTI"
        )
    if o.nx or o.xx:
        raise CommandError(
            "ERR rkv cannot queue 'set' with NX or XX inside MULTI: its condition would decide "
            "the whole rkv transaction, not this command; use WATCH, or SET NX outside MULTI"
        )
    if o.get:
        return Plan((OpGet(key), OpPut(key, value)), _first_value)
    return Plan((OpPut(key, value),), lambda rs: OK)


def plan_getset(args: list[bytes]) -> Plan:
    key = _key_ok(args[1])
    return Plan((OpGet(key), OpPut(key, args[2])), _first_value)


def plan_getdel(args: list[bytes]) -> Plan:
    key = _key_ok(args[1])
    return Plan((OpGet(key), OpDelete(key)), _first_value)


def _incr(key: bytes, delta: int) -> Plan:
    return Plan((OpIncr(key, delta),), _scalar)


def plan_incr(args: list[bytes]) -> Plan:
    return _incr(_key_ok(args[1]), 1)


def plan_decr(args: list[bytes]) -> Plan:
    return _incr(_key_ok(args[1]), -1)


def _delta(a: bytes) -> int:
    n = _int(a)
    if not INT64_MIN <= n <= INT64_MAX:
        raise CommandError("ERR value is not an integer or out of range")
    return n


def plan_incrby(args: list[bytes]) -> Plan:
    return _incr(_key_ok(args[1]), _delta(args[2]))


def plan_decrby(args: list[bytes]) -> Plan:
    key, n = _key_ok(args[1]), _delta(args[2])
    if n == INT64_MIN:
        raise CommandError("ERR decrement would overflow")
    return _incr(key, -n)


def plan_incrbyfloat(args: list[bytes]) -> Plan:
    key = _key_ok(args[1])
    if parse_decimal(args[2]) is None:
        raise CommandError(f"ERR {NOT_A_FLOAT}")
    return Plan((OpIncrFloat(key, args[2]),), _scalar)


def plan_append(args: list[bytes]) -> Plan:
    return Plan((OpAppend(_key_ok(args[1]), args[2]),), _scalar)


def pairs(args: list[bytes], name: str) -> dict[bytes, bytes]:
    """MSET's and MSETNX's key-value pairs (a key given twice: the last value, as Redis)."""
    if len(args) < 3 or len(args) % 2 != 1:
        raise wrong_arity(name)
    out: dict[bytes, bytes] = {}
    for i in range(1, len(args), 2):
        out[_key_ok(args[i])] = args[i + 1]
    _at_most(len(out), name)
    return out


def plan_mset(args: list[bytes]) -> Plan:
    return Plan(tuple(OpPut(k, v) for k, v in pairs(args, "mset").items()), lambda rs: OK)


# -- no ops -----------------------------------------------------------------------------------


def plan_ping(args: list[bytes]) -> Plan:
    if len(args) > 2:
        raise wrong_arity("ping")
    reply: Reply = args[1] if len(args) == 2 else Simple("PONG")
    return Plan((), lambda rs: reply)


def plan_echo(args: list[bytes]) -> Plan:
    return Plan((), lambda rs: args[1])


def plan_unwatch(args: list[bytes]) -> Plan:
    return Plan((), lambda rs: OK)  # EXEC checked the watches; it clears them anyway
