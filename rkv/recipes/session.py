"""The lease a lock or an election candidacy lives on: granted, renewed, revoked.

Owns: `held_lease(client, ttl, what)`, an async context manager that grants a lease, keeps it
alive (a renewal every TTL/3) in a nursery of its own, yields a `Held` (the lease, and that
nursery for the owner's other guard tasks), and revokes the lease at the end (shielded and
bounded: the lease's keys go with it in one revision; if the revoke fails, the lease expires
after its TTL). If the lease is lost while the block runs (a renewal answers LeaseNotFound,
or none succeeds within the TTL since the last successful one was sent), the renewal task
raises rkv.errors.LockLost: trio cancels the block (it runs inside the nursery) and LockLost
comes out of the `async with`, not an ExceptionGroup. Also `watch_gone`, a guard task
raising LockLost when a key is deleted, and `Entered`, the `async with` of an object whose
`_held()` is its context.
Must not: know about queues, locks or elections (rkv.recipes.queue, lock, election) beyond
watching a key, print, or use the node runtime.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import trio

from rkv.client import Client, Lease
from rkv.client_leases import plain_errors, renew_lease
from rkv.errors import Compacted, LeaseNotFound, LockLost, RkvError, Unavailable
from rkv.recipes.queue import watching

REVOKE_TIMEOUT = 5.0
"""Seconds the release spends revoking the lease (shielded from cancellation); past that,
the lease and its keys go when its TTL runs out."""


@dataclass(frozen=True, slots=True)
class Held:
    """A lease kept alive: the lease, and the nursery its renewal runs in (the owner starts
    its guard tasks there: they are cancelled with the block)."""

    lease: Lease
    nursery: trio.Nursery


async def _renew(client: Client, lease: Lease, sent: float, what: str) -> None:
    """rkv.client_leases.renew_lease from the grant (`sent`: when it was sent), its errors
    as LockLost: the lease gone, or not renewed within its TTL of the last renewal sent."""

    async def keepalive(lease_id: int) -> float:  # looked up per call, as the client's is
        return await client.lease_keepalive(lease_id)

    try:
        await renew_lease(keepalive, lease.id, lease.ttl, sent)
    except LeaseNotFound as exc:
        raise LockLost(f"{what}: its lease {lease.id:x} is gone (expired or revoked)") from exc
    except Unavailable as exc:  # only the overdue one: renew_lease retries the others
        raise LockLost(
            f"{what}: its lease {lease.id:x} could not be renewed within its TTL: {exc}"
        ) from exc


async def watch_gone(client: Client, key: bytes, seen_at: int, what: str) -> None:
    """Raise LockLost once `key` (alive at revision `seen_at`) is deleted. Returns quietly if
    the watch itself fails (the lease's renewal still guards the lock)."""
    try:
        async with watching(client, key, seen_at, exact=True) as evs:
            async for ev in evs:
                if ev.type == "delete":
                    raise LockLost(f"{what}: its key {key!r} was deleted at revision {ev.rev}")
    except (Unavailable, Compacted):
        return


@asynccontextmanager
async def held_lease(client: Client, ttl: float, what: str) -> AsyncIterator[Held]:
    """A lease of `ttl` seconds kept alive while the block runs, revoked after it; LockLost
    (the block cancelled) if it is lost meanwhile. `what` names the owner in errors."""
    sent = trio.current_time()
    lease = await client.lease_grant(ttl)
    try:
        with plain_errors():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_renew, client, lease, sent, what)
                try:
                    yield Held(lease, nursery)
                finally:
                    nursery.cancel_scope.cancel()
    finally:
        deadline = trio.current_time() + REVOKE_TIMEOUT
        with trio.CancelScope(shield=True, deadline=deadline), suppress(RkvError):
            await client.lease_revoke(lease.id)  # if not revoked, it expires after its TTL


class Entered:
    """`async with obj:` runs `obj._held()` (an async context manager yielding `obj`), one at
    a time per object (RuntimeError if already entered); it may be entered again after."""

    _cm: AbstractAsyncContextManager[Any] | None = None

    def _held(self) -> AbstractAsyncContextManager[Any]:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        if self._cm is not None:
            raise RuntimeError(f"{self!r} is already entered")
        self._cm = cm = self._held()
        try:
            await cm.__aenter__()
        except BaseException:
            self._cm = None
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        cm, self._cm = self._cm, None
        assert cm is not None
        return await cm.__aexit__(exc_type, exc, tb)
