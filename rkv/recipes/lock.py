"""A distributed lock: `async with rkv.Lock(client, name, ttl) as lock:`.

Owns: `Lock`, etcd's mutex on rkv: the lock holds a lease of its own (rkv.recipes.session,
renewed in a nursery the lock owns while it is held), joins the queue NAME/ with its lease's
key (rkv.recipes.queue) and waits until no key of the queue was created before its own
(watching only its predecessor's deletion). `lock.revision`, its key's create revision, is
a fencing token: the holders of one lock get strictly increasing tokens, so a store that
refuses a token lower than the highest it has seen refuses a late write of an old holder.
If the lease is lost or the key deleted while the lock is held, the block is cancelled and
rkv.errors.LockLost is raised. Release (leaving the block, an error, or a cancel while
waiting) revokes the lease, which deletes the key in the same revision.
Must not: print, or use the node runtime.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from rkv.client import Client, Cmp
from rkv.errors import Timeout
from rkv.recipes.queue import MAX_WAITERS, join, queue_of, wait_turn
from rkv.recipes.session import Entered, held_lease, watch_gone
from rkv.txn import Compare


class Lock(Entered):
    """A lock named `name` (its keys: `name/<lease id hex>`), held by a lease of `ttl`
    seconds. `timeout`: seconds `async with` waits for it before raising rkv.Timeout (None:
    no limit). `max_waiters`: the most keys its queue may hold when read (rkv.Unavailable
    beyond). One `async with` at a time per Lock object; it may be entered again after."""

    def __init__(
        self,
        client: Client,
        name: str | bytes,
        ttl: float = 60.0,
        *,
        timeout: float | None = None,
        max_waiters: int = MAX_WAITERS,
        value: bytes = b"",
    ) -> None:
        if timeout is not None and not timeout > 0:
            raise ValueError(f"a lock timeout must be positive seconds, got {timeout!r}")
        self.client = client
        self.name, self.prefix = queue_of(name, max_waiters)
        self.ttl = ttl
        self.timeout = timeout
        self.max_waiters = max_waiters
        self.value = value
        self.key: bytes | None = None
        """The lock's key while held (None otherwise)."""
        self.revision: int | None = None
        """The fencing token while held: the key's create revision (None otherwise)."""
        self.lease_id: int | None = None

    def is_owner(self) -> Compare:
        """A txn compare that holds only while this lock is held (its key has its create
        revision): guard writes with it."""
        if self.key is None or self.revision is None:
            raise RuntimeError("the lock is not held")
        return Cmp.create_revision(self.key, "==", self.revision)

    @asynccontextmanager
    async def _held(self) -> AsyncIterator[Lock]:
        what = f"lock {self.name!r}"
        async with held_lease(self.client, self.ttl, what) as held:
            self.lease_id = held.lease.id
            try:
                me = await join(self.client, self.prefix, held.lease.id, self.value)
                if self.timeout is None:
                    me = await wait_turn(self.client, me, self.prefix, self.max_waiters)
                else:
                    with trio.move_on_after(self.timeout) as scope:
                        me = await wait_turn(self.client, me, self.prefix, self.max_waiters)
                    if scope.cancelled_caught:
                        raise Timeout(f"{what}: not acquired within {self.timeout:g} s")
                held.nursery.start_soon(watch_gone, self.client, me.key, me.seen_at, what)
                self.key, self.revision = me.key, me.create_revision
                yield self
            finally:
                self.key = self.revision = self.lease_id = None

    def __repr__(self) -> str:
        return f"Lock({self.name!r})"
