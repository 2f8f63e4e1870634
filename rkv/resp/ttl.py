"""TTLs in the Redis door, decided through the log with leases (docs/leases.md): a key's TTL
is a lease of its own, never a node's local clock.

How: a key with a TTL is attached to a lease granted for it alone, with an id in the door's
range (RESP_LEASES: bit 62 set, the rest random; a node picks log indexes, far below). The
cluster expires the lease, and the key with it, in one revision (the leader decides, every
node applies). A txn's get names the key's lease (rkv.txn.KeyValue.lease), so:
- SET ... EX/PX/EXAT/PXAT: grant a lease, then one txn (SET's NX/XX as compares on the
  key's version; a get before the put, to learn the old lease) puts the key with it; the old
  lease, if the door's, is revoked after (it then holds no key). If the txn did not put
  (NX/XX), the new lease is revoked.
- EXPIRE/PEXPIRE/EXPIREAT/PEXPIREAT, PERSIST, GETEX, SET ... KEEPTTL: read the key (a txn
  get), grant the new lease (not for PERSIST), then one txn that holds only if the key's mod
  revision is still the one read (a concurrent write is never clobbered: then the new lease
  is revoked and the command starts over, at most MAX_TRIES times) puts the same value with
  the new lease (or none, or the one read for KEEPTTL); the old lease, if the door's, is
  revoked after. At every revision the key has its old TTL or its new one, never none; a
  crash between the steps leaves at most a lease with no key, which expires on its own.
- TTL/PTTL/EXPIRETIME/PEXPIRETIME: read the key, then its lease's remaining TTL on the
  answering node's clock (`lease_ttl`, after a read barrier).
A key attached to a lease that is not the door's (rkv.client's `put(..., lease=)`) shows
that lease's TTL; EXPIRE or PERSIST move it off that lease without revoking it.

Leases have a minimum TTL (max(1 s, 3 election timeouts)): a shorter Redis TTL makes the
key live longer than asked, never shorter, and TTL/PTTL then answer the lease's real
remaining. A plain SET, DEL or any other write (INCR and APPEND too, unlike Redis) detaches
the key from its lease (etcd's semantics): the lease, holding no key, expires on its own (it counts towards the store's
max_leases until then). A full lease table refuses the command (FULL).

Owns: the key-lease mechanics and the TTL commands' handlers. Must not: name the commands
(rkv.resp.table), read or write sockets, or decide when a lease expires (rkv.lease).
"""

from __future__ import annotations

import secrets
import time

from rkv.protocol import (
    GetRequest,
    LeaseGrantReply,
    LeaseGrantRequest,
    LeaseRevokeRequest,
    LeaseTtlReply,
    LeaseTtlRequest,
    ValueReply,
)
from rkv.resp.context import (
    CommandError,
    Context,
    Handler,
    _key_ok,
    _write_session,
    call,
    txn,
)
from rkv.resp.ttlargs import (
    KEEP,
    PERSIST,
    Condition,
    SetOptions,
    condition,
    getex_option,
    ttl_ms,
)
from rkv.resp.wire import OK, Reply
from rkv.txn import Compare, KeyValue, Op, OpDelete, OpGet, OpPut

RESP_LEASES = 1 << 62
"""The door's lease ids: this bit set (ids a node picks are log indexes, far below)."""
MAX_TRIES = 8
"""How many times a TTL command starts over after a concurrent write of its key."""
FULL = (
    "ERR rkv: no room for another key with a TTL: the cluster's lease table is full (the "
    "store's max_leases)"
)
LEASE_GONE = "lease_not_found"
TTL_COMMANDS = (
    "expire",
    "pexpire",
    "expireat",
    "pexpireat",
    "persist",
    "ttl",
    "pttl",
    "expiretime",
    "pexpiretime",
    "getex",
    "setex",
    "psetex",
)
TTL_NOT_QUEUEABLE = (
    "a TTL is a lease of the key's own, granted and attached in steps of their own (and read "
    "from the lease), not a transaction op; run it outside MULTI"
)


def now_ms() -> int:
    """The receiving node's wall clock (Unix ms): converts EXAT/PXAT/EXPIREAT/PEXPIREAT."""
    return time.time_ns() // 1_000_000


def is_ours(lease: int) -> bool:
    return lease >= RESP_LEASES


# -- the node's requests ----------------------------------------------------------------------


async def read(ctx: Context, key: bytes) -> KeyValue | None:
    """The key with its lease, by a linearizable get with its record (a read: no log entry)."""
    reply = ValueReply.from_frame(await call(ctx, GetRequest(key, meta=True).to_frame))
    if not reply.meta:
        raise CommandError("ERR rkv: the node sent no record (it predates 'meta')")
    return reply.record


async def grant(ctx: Context, ms: int) -> int:
    """A new lease of the door's range, of `ms` (raised to the node's minimum TTL)."""
    for _ in range(MAX_TRIES):
        lid = RESP_LEASES | secrets.randbits(62)
        req = LeaseGrantRequest(ms, *_write_session(ctx), lid)
        try:
            reply = await call(ctx, req.to_frame)
        except CommandError as e:
            if e.msg == "lease already exists":
                continue
            if e.msg == "too many leases":
                raise CommandError(FULL) from None
            raise
        return LeaseGrantReply.from_frame(reply).lease_id
    raise CommandError("ERR rkv: could not pick a free lease id")  # 2^-60 per try


async def revoke(ctx: Context, lease: int) -> None:
    """Revoke a lease of the door's that holds no key any more (gone already: fine)."""
    if not is_ours(lease):
        return
    cid, seq = _write_session(ctx)
    try:
        await call(ctx, lambda: LeaseRevokeRequest(lease, cid, seq).to_frame())
    except CommandError as e:
        if e.code != LEASE_GONE:
            raise


async def remaining(ctx: Context, lease: int) -> int | None:
    """The lease's remaining TTL (ms) on the answering node's clock; None if it is gone."""
    try:
        reply = await call(ctx, lambda: LeaseTtlRequest(lease).to_frame())
    except CommandError as e:
        if e.code == LEASE_GONE:
            return None
        raise
    return LeaseTtlReply.from_frame(reply).remaining_ms


async def ttl_of(ctx: Context, kv: KeyValue) -> int | None:
    """A present key's TTL (ms), None if it has none (a lease just gone: 0)."""
    if not kv.lease:
        return None
    left = await remaining(ctx, kv.lease)
    return 0 if left is None else left


# -- changing a key's TTL ---------------------------------------------------------------------

_KEEP_LEASE = -1


async def retime(
    ctx: Context, key: bytes, ms: int | None, cond: Condition | None = None
) -> tuple[KeyValue | None, bool]:
    """Give the key a TTL of `ms` (<= 0: delete it; None: no TTL), if it exists and `cond`
    holds: (the key as read, whether it was changed)."""
    for _ in range(MAX_TRIES):
        cur = await read(ctx, key)
        if cur is None:
            return None, False
        if (
            cond is not None
            and cond.reads_ttl
            and not cond.holds(await ttl_of(ctx, cur), 0 if ms is None else ms)
        ):
            return cur, False
        if ms is None and not cur.lease:
            return cur, False
        done = await _rewrite(ctx, key, cur, cur.value, ms)
        if done is not None:
            return cur, True
    raise _gave_up()


async def _rewrite(
    ctx: Context, key: bytes, cur: KeyValue | None, value: bytes, ms: int | None
) -> bool | None:
    """Write `value` with TTL `ms` (None: none; _KEEP_LEASE: the lease of `cur`; <= 0: delete)
    if the key's mod revision is still `cur`'s; revoke the old lease after. None if the key
    changed meanwhile."""
    old = 0 if cur is None else cur.lease
    new = 0
    op: Op
    if ms == _KEEP_LEASE:
        op = OpPut(key, value, old)
    elif ms is not None and ms <= 0:
        op = OpDelete(key)
    else:
        if ms is not None:
            new = await grant(ctx, ms)
        op = OpPut(key, value, new)
    mod = 0 if cur is None else cur.mod_revision
    try:
        r = await txn(ctx, (Compare(key, "mod", "==", mod),), (op,))
    except CommandError as e:
        await _unused(ctx, new, e)
        raise
    if not r.succeeded:
        if new:
            await revoke(ctx, new)
        return None
    if old and old != new and ms != _KEEP_LEASE:
        await revoke(ctx, old)
    return True


async def _unused(ctx: Context, lease: int, e: CommandError) -> None:
    """Revoke the lease granted for a txn that failed with `e`, unless the txn may have been
    applied (a timeout: the key may hold the lease now; left alone, it expires)."""
    if lease and e.code not in ("timeout", ""):
        await revoke(ctx, lease)


def _gave_up() -> CommandError:
    return CommandError(
        f"ERR rkv: the key was written by others {MAX_TRIES} times while this command ran; "
        "nothing was changed, retry"
    )


async def set_with_ttl(ctx: Context, key: bytes, value: bytes, o: SetOptions) -> Reply:
    """SET with EX/PX/EXAT/PXAT (o.ttl ms) or KEEPTTL."""
    if o.ttl == KEEP:
        return await _set_keepttl(ctx, key, value, o)
    assert isinstance(o.ttl, int)
    compares: tuple[Compare, ...] = ()
    if o.nx or o.xx:
        compares = (Compare(key, "version", "==" if o.nx else ">", 0),)
    lid = await grant(ctx, o.ttl) if o.ttl > 0 else 0
    write: Op = OpPut(key, value, lid) if lid else OpDelete(key)  # EXAT in the past: gone
    try:
        r = await txn(ctx, compares, (OpGet(key), write), (OpGet(key),))
    except CommandError as e:
        await _unused(ctx, lid, e)
        raise
    before = r.results[0]
    old = before if isinstance(before, KeyValue) else None
    if not r.succeeded:
        if lid:
            await revoke(ctx, lid)
    elif old is not None and old.lease:
        await revoke(ctx, old.lease)
    if o.get:
        return None if old is None else old.value
    return OK if r.succeeded else None


async def _set_keepttl(ctx: Context, key: bytes, value: bytes, o: SetOptions) -> Reply:
    for _ in range(MAX_TRIES):
        cur = await read(ctx, key)
        if (o.nx and cur is not None) or (o.xx and cur is None):
            return cur.value if o.get and cur is not None else None
        if await _rewrite(ctx, key, cur, value, _KEEP_LEASE if cur is not None else None):
            if o.get:
                return None if cur is None else cur.value
            return OK
    raise _gave_up()


# -- the commands -----------------------------------------------------------------------------


def _expire(unit: int, absolute: bool, name: str) -> Handler:
    async def handler(ctx: Context, args: list[bytes]) -> Reply:
        key = _key_ok(args[1])
        ms = ttl_ms(args[2], unit, absolute, now_ms(), name, positive=False)
        cond = condition(args)
        _, changed = await retime(ctx, key, ms, cond)
        return int(changed)

    return handler


cmd_expire = _expire(1000, False, "expire")
cmd_pexpire = _expire(1, False, "pexpire")
cmd_expireat = _expire(1000, True, "expireat")
cmd_pexpireat = _expire(1, True, "pexpireat")


async def cmd_persist(ctx: Context, args: list[bytes]) -> Reply:
    _, changed = await retime(ctx, _key_ok(args[1]), None)
    return int(changed)


async def _ttl_ms(ctx: Context, key: bytes) -> int:
    """-2 absent, -1 no TTL, else the remaining ms."""
    cur = await read(ctx, key)
    if cur is None:
        return -2
    left = await ttl_of(ctx, cur)
    return -1 if left is None else left


async def cmd_ttl(ctx: Context, args: list[bytes]) -> Reply:
    ms = await _ttl_ms(ctx, _key_ok(args[1]))
    return ms if ms < 0 else (ms + 500) // 1000


async def cmd_pttl(ctx: Context, args: list[bytes]) -> Reply:
    return await _ttl_ms(ctx, _key_ok(args[1]))


async def cmd_pexpiretime(ctx: Context, args: list[bytes]) -> Reply:
    """The Unix time (ms) the key expires at: the answering node's wall clock plus the
    lease's remaining TTL on it."""
    ms = await _ttl_ms(ctx, _key_ok(args[1]))
    return ms if ms < 0 else now_ms() + ms


async def cmd_expiretime(ctx: Context, args: list[bytes]) -> Reply:
    ms = await _ttl_ms(ctx, _key_ok(args[1]))
    return ms if ms < 0 else (now_ms() + ms) // 1000


async def cmd_getex(ctx: Context, args: list[bytes]) -> Reply:
    key = _key_ok(args[1])
    opt = getex_option(args, now_ms())
    if opt is None:
        cur = await read(ctx, key)
    else:
        cur, _ = await retime(ctx, key, None if opt == PERSIST else int(opt))
    return None if cur is None else cur.value


def _setex(unit: int, name: str) -> Handler:
    async def handler(ctx: Context, args: list[bytes]) -> Reply:
        key = _key_ok(args[1])
        ms = ttl_ms(args[2], unit, False, 0, name, positive=True)
        return await set_with_ttl(ctx, key, args[3], SetOptions(ttl=ms, ttl_option=name))

    return handler


cmd_setex = _setex(1000, "setex")
cmd_psetex = _setex(1, "psetex")
