"""Leader election: `rkv.Election(client, name, ttl)`, as etcd's concurrency.Election.

Owns: `Election`. Candidates queue like a lock's waiters (rkv.recipes.queue: keys
`name/<lease id hex>`, ordered by create revision); the first is the leader and its key's
value is the leader's proclamation. Inside `async with election:` the candidate holds a lease
of its own (rkv.recipes.session); `campaign(value)` joins the queue and returns once leader
(its key's create revision: a fencing token, strictly increasing across leaders);
`proclaim(value)` changes the value only while still leader (a txn comparing the key's create
revision); `resign()` deletes the key (the next candidate leads). Losing the lease, or the
leader's key, cancels the block with rkv.errors.LockLost. `leader()` and `observe()` need no
`async with` (nor a lease): the current leader as (value, revision), and each change of
leader or of its value, from a watch of the prefix.
Must not: print, or use the node runtime.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import trio

from rkv.client import Client, Cmp, TxnOp
from rkv.client_reads import as_bytes
from rkv.errors import Compacted, LockLost, RkvError
from rkv.recipes.queue import (
    MAX_WAITERS,
    Member,
    is_member,
    join,
    queue_of,
    read,
    wait_turn,
    watching,
)
from rkv.recipes.session import Entered, Held, held_lease, watch_gone

RESIGN_TIMEOUT = 5.0
"""Seconds a cancelled campaign spends withdrawing its key (shielded); past that the key goes
with the lease when the `async with` ends."""


class Election(Entered):
    """The election `name`; candidates hold leases of `ttl` seconds. `max_waiters`: the most
    keys its queue may hold when read (rkv.Unavailable beyond)."""

    def __init__(
        self,
        client: Client,
        name: str | bytes,
        ttl: float = 60.0,
        *,
        max_waiters: int = MAX_WAITERS,
    ) -> None:
        self.client = client
        self.name, self.prefix = queue_of(name, max_waiters)
        self.ttl = ttl
        self.max_waiters = max_waiters
        self.key: bytes | None = None
        """This candidate's key while leader (None otherwise)."""
        self.revision: int | None = None
        """The key's create revision while leader: the leader's fencing token."""
        self._held_lease: Held | None = None
        self._guard: trio.CancelScope | None = None

    def __repr__(self) -> str:
        return f"Election({self.name!r})"

    @asynccontextmanager
    async def _held(self) -> AsyncIterator[Election]:
        async with held_lease(self.client, self.ttl, f"election {self.name!r}") as held:
            self._held_lease = held
            try:
                yield self
            finally:
                self._held_lease = self._guard = None
                self.key = self.revision = None

    def _lease(self) -> Held:
        if self._held_lease is None:
            raise RuntimeError(f"{self!r}: campaign inside `async with` the election")
        return self._held_lease

    async def _withdraw(self, key: bytes, revision: int) -> None:
        await self.client.txn([Cmp.create_revision(key, "==", revision)], [TxnOp.delete(key)])

    async def _watch_key(
        self, key: bytes, seen_at: int, *, task_status: trio.TaskStatus[trio.CancelScope]
    ) -> None:
        with trio.CancelScope() as scope:
            task_status.started(scope)
            await watch_gone(self.client, key, seen_at, f"election {self.name!r}")

    async def campaign(self, value: bytes | str) -> int:
        """Join the candidates with `value` and return once leader: the fencing token (the
        key's create revision). A cancel while waiting withdraws the candidacy."""
        held = self._lease()
        if self.key is not None:
            raise RuntimeError(f"{self!r}: already the leader (resign first)")
        v = as_bytes(value, "value")
        me = await join(self.client, self.prefix, held.lease.id, v)
        try:
            if me.value != v:  # a key of this lease left from before: take the new value
                await self._put(me, v)
            me = await wait_turn(self.client, me, self.prefix, self.max_waiters)
        except BaseException:
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + RESIGN_TIMEOUT
                with suppress(RkvError):  # else it goes with the lease at the block's end
                    await self._withdraw(me.key, me.create_revision)
            raise
        self._guard = await held.nursery.start(self._watch_key, me.key, me.seen_at)
        self.key, self.revision = me.key, me.create_revision
        return me.create_revision

    async def _put(self, me: Member, value: bytes) -> None:
        lease = self._lease().lease.id
        r = await self.client.txn(
            [Cmp.create_revision(me.key, "==", me.create_revision)],
            [TxnOp.put(me.key, value, lease=lease)],
        )
        if not r.succeeded:
            raise LockLost(f"{self!r}: the candidate's key {me.key!r} is gone")

    async def proclaim(self, value: bytes | str) -> None:
        """Set the leader's value, only while this candidate still leads (LockLost if not)."""
        if self.key is None or self.revision is None:
            raise RuntimeError(f"{self!r}: not the leader (campaign first)")
        await self._put(Member(self.key, b"", self.revision, 0), as_bytes(value, "value"))

    async def resign(self) -> None:
        """Stop leading (or do nothing if not leading): the key is deleted and the next
        candidate leads. The election's lease stays held: `campaign` may be called again."""
        key, revision, guard = self.key, self.revision, self._guard
        if key is None or revision is None:
            return
        if guard is not None:
            guard.cancel()
        self.key = self.revision = self._guard = None
        await self._withdraw(key, revision)

    async def leader(self) -> tuple[bytes, int] | None:
        """The current leader's (value, fencing token), or None without a leader."""
        q = await read(self.client, self.prefix, self.max_waiters)
        return (q.members[0].value, q.members[0].create_revision) if q.members else None

    async def observe(self) -> AsyncIterator[tuple[bytes, int]]:
        """The leader, then each change of leader or of its value, as (value, fencing
        token); an async iterator running until the caller stops iterating. (A change
        undone before it was seen, or a watch that fell behind the nodes' watch window, may
        be skipped: what it yields is always the leader as of then.)"""
        last: tuple[bytes, int] | None = None
        while True:
            q = await read(self.client, self.prefix, self.max_waiters)
            cur = q.members[0] if q.members else None
            if cur is not None and (cur.value, cur.create_revision) != last:
                last = (cur.value, cur.create_revision)
                yield last
            # from the scan's revision: a candidate created after it is an event below
            try:
                async with watching(self.client, self.prefix, q.scanned) as events:
                    async for ev in events:
                        if not is_member(self.prefix, ev.key):
                            continue
                        if cur is None:
                            if ev.type == "put":
                                break  # a candidate: read who leads
                        elif ev.key == cur.key:
                            if ev.type == "delete":
                                break  # the leader went: read who leads now
                            fresh = ev.type == "put" and ev.rev > cur.seen_at
                            if fresh and ev.value is not None and ev.value != (last or (b"",))[0]:
                                last = (ev.value, cur.create_revision)
                                yield last
            except Compacted:
                pass  # the watch window moved past it: read the queue again
