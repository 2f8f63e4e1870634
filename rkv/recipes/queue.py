"""The waiting queue of a lock or an election, as etcd's concurrency package keeps it.

Owns: the key layout (a member of queue NAME is the key `NAME/<lease id, 16 hex digits>`,
attached to its lease), joining (`join`: one txn, put if the key's create revision is 0),
reading the queue (`read`: scans of the prefix with each key's record, PAGE keys a page,
each after the last key of the one before, at most `max_waiters` keys in all; reads, no
txn), and waiting for one's turn (`wait_turn`).
Pages are read at their own revisions: the queue read is the members with a create revision
up to the FIRST page's revision (`scanned`), each seen alive at its page's revision. Every
member created up to `scanned` and alive when its page was read is listed (its key existed
before any page was read); one created later is left out, and it comes after every listed
one, so the read is a true beginning of the queue (and a waiter, which joined before the
read, is in it).
The queue's order is the members' create revisions: the first is the owner (the lock holder,
the leader). A waiter watches only the deletion of its predecessor (the member created just
before it), from the revision it saw it alive at, so no deletion is missed and a release
wakes one waiter, not all (no thundering herd).
Must not: hold leases or tasks (rkv.recipes.session), print, or use the node runtime.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import AbstractAsyncContextManager, aclosing
from dataclasses import dataclass
from typing import cast

from rkv.client import Client, Cmp, KeyRecord, KeyValue, TxnOp, WatchEvent
from rkv.errors import Compacted, LeaseNotFound, LockLost, Unavailable

MAX_WAITERS = 100_000
"""Default most keys a queue read examines (Unavailable past them): its pages' bound."""
PAGE = 1000
"""Keys one scan of a queue read returns (with their records)."""
_HEX = frozenset(b"0123456789abcdef")


def prefix_of(name: str | bytes) -> bytes:
    """The key prefix of queue `name` (`name/`); ValueError for an empty or too long name."""
    raw = name.encode() if isinstance(name, str) else bytes(name)
    if not raw or len(raw) > 380:
        raise ValueError(f"a lock or election name must be 1..380 bytes, got {len(raw)}")
    return raw + b"/"


def queue_of(name: str | bytes, max_waiters: int) -> tuple[str, bytes]:
    """A lock's or an election's name as shown in errors, and its prefix; ValueError for a
    bad name or `max_waiters`."""
    if isinstance(max_waiters, bool) or not isinstance(max_waiters, int) or max_waiters < 1:
        raise ValueError(f"max_waiters must be a positive integer, got {max_waiters!r}")
    prefix = prefix_of(name)
    return prefix[:-1].decode(errors="backslashreplace"), prefix


def member_key(prefix: bytes, lease_id: int) -> bytes:
    return prefix + b"%016x" % lease_id


def is_member(prefix: bytes, key: bytes) -> bool:
    """Whether `key` is a member of the queue (not a key of a longer name under it)."""
    rest = key[len(prefix) :]
    return key.startswith(prefix) and len(rest) == 16 and set(rest) <= _HEX


@dataclass(frozen=True, slots=True)
class Member:
    """A member of the queue: its key, value, create revision, and the revision it was seen
    alive at."""

    key: bytes
    value: bytes
    create_revision: int
    seen_at: int


@dataclass(frozen=True, slots=True)
class Queue:
    """The members found alive, by create revision; `scanned`: the revision of the scan that
    listed them (no member created up to it is missing)."""

    members: tuple[Member, ...]
    scanned: int

    def find(self, key: bytes) -> Member | None:
        return next((m for m in self.members if m.key == key), None)


async def join(client: Client, prefix: bytes, lease_id: int, value: bytes) -> Member:
    """Put this lease's member key (if it is not there yet) with `value`; the member.
    LockLost if the lease is gone already (it expired or was revoked before the put)."""
    key = member_key(prefix, lease_id)
    try:
        r = await client.txn(
            [Cmp.create_revision(key, "==", 0)],
            [TxnOp.put(key, value, lease=lease_id), TxnOp.get(key)],
            [TxnOp.get(key)],
        )
    except LeaseNotFound:
        raise LockLost(
            f"queue {prefix[:-1]!r}: lease {lease_id:x} is gone before its key was put"
        ) from None
    kv = r.results[-1]
    assert isinstance(kv, KeyValue)
    return Member(key, kv.value, kv.create_revision, r.revision)


async def _scan(
    client: Client, prefix: bytes, limit: int, after: bytes | None
) -> tuple[list[tuple[bytes, KeyRecord]], int]:
    """One page of a queue read: up to `limit` keys under `prefix` after `after`, with
    their records, and the page's revision."""
    records, rev = await client.scan_records(prefix, limit, after=after)
    return records, rev or 0


async def read(client: Client, prefix: bytes, max_waiters: int = MAX_WAITERS) -> Queue:
    """The members alive, by create revision, read in pages (see the module docstring: the
    members created up to the first page's revision). Unavailable if the prefix holds more
    than `max_waiters` keys (the queue cannot be ordered from a partial read)."""
    members: list[Member] = []
    first: int | None = None
    after: bytes | None = None
    examined = 0
    while True:
        limit = min(PAGE, max_waiters + 1 - examined)
        records, rev = await _scan(client, prefix, limit, after)
        first = rev if first is None else first
        examined += len(records)
        if examined > max_waiters:
            raise Unavailable(
                f"queue {prefix[:-1]!r} holds more than {max_waiters} keys (max_waiters)"
            )
        members += [
            Member(k, r.value, r.create_revision, rev)
            for k, r in records
            if is_member(prefix, k) and r.create_revision <= first
        ]
        if len(records) < limit:
            break
        after = records[-1][0]
    members.sort(key=lambda m: m.create_revision)
    return Queue(tuple(members), first)


def watching(
    client: Client, prefix: bytes, after: int, *, exact: bool = False
) -> AbstractAsyncContextManager[AsyncGenerator[WatchEvent, None]]:
    """`client.watch(prefix, after + 1, exact=exact)`, closed when the block ends (a watch
    left by `break` or `return` is closed then, not when collected)."""
    gen = client.watch(prefix, start_revision=after + 1, exact=exact)
    return aclosing(cast(AsyncGenerator[WatchEvent, None], gen))


async def wait_deleted(client: Client, key: bytes, seen_at: int) -> None:
    """Return once `key`, alive at revision `seen_at`, is deleted (or the watch window lost
    the revisions after `seen_at`: the caller reads the queue again)."""
    try:
        async with watching(client, key, seen_at, exact=True) as evs:
            async for ev in evs:
                if ev.type == "delete":
                    return
    except Compacted:
        return


async def wait_turn(client: Client, me: Member, prefix: bytes, max_waiters: int) -> Member:
    """Wait until no member of the queue was created before `me`; `me` as last seen alive.
    LockLost if `me` is gone meanwhile (its lease expired or its key was deleted)."""
    while True:
        q = await read(client, prefix, max_waiters)
        mine = q.find(me.key)
        if mine is None or mine.create_revision != me.create_revision:
            raise LockLost(f"queue {prefix[:-1]!r}: key {me.key!r} is gone while waiting")
        before = [m for m in q.members if m.create_revision < me.create_revision]
        if not before:
            return mine
        await wait_deleted(client, before[-1].key, before[-1].seen_at)
