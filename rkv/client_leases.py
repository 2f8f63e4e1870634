"""The client's lease API: grant, keep-alive, revoke, time-to-live, list, and `keep_alive`.

Owns: `Lease` and `LeaseInfo` (what the calls return), `LeaseCalls`, the async methods
rkv.client.Client has through it, `SyncLeaseCalls`, their blocking forms for SyncClient, and
the `keep_alive` context manager (renewing at a third of the TTL in a nursery it owns), and
`renew_lease`, the one renewal loop (keep_alive's, and that of the lease a lock or an
election holds: rkv.recipes.session), and `plain_errors` (an error inside a nursery of the
client's raised as itself, not as an ExceptionGroup; rkv.client uses it too). TTLs are
seconds here, milliseconds on the wire (rkv.protocol.leases). A lease that does not exist raises rkv.errors.LeaseNotFound.
Must not: import the node runtime or the store (client layering), or print.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import trio

from rkv.codec import MAX_LEASE_TTL_MS
from rkv.errors import LeaseNotFound, Timeout, Unavailable
from rkv.protocol import (
    ExistedReply,
    LeaseGrantReply,
    LeaseGrantRequest,
    LeaseKeepaliveReply,
    LeaseKeepaliveRequest,
    LeaseListReply,
    LeaseListRequest,
    LeaseRevokeRequest,
    LeaseTtlReply,
    LeaseTtlRequest,
)

T = TypeVar("T")


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for e in exc.exceptions:
            yield from _leaves(e)
    else:
        yield exc


@contextmanager
def plain_errors() -> Iterator[None]:
    """Callers catch `rkv.Unavailable`, not ExceptionGroups: our nurseries are an internal
    detail, so the first real error inside one is re-raised as itself."""
    try:
        yield
    except BaseExceptionGroup as group:
        for leaf in _leaves(group):
            if not isinstance(leaf, trio.Cancelled):
                raise leaf from None
        raise


@dataclass(frozen=True, slots=True)
class Lease:
    """A granted lease: its id and its TTL in seconds (the node may raise a short TTL to its
    minimum, max(1 s, 3 election timeouts))."""

    id: int
    ttl: float


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """A lease as a node sees it: TTL and remaining TTL in seconds (remaining on the
    answering node's clock), and its attached keys (a count from `lease_list`, the keys from
    `lease_time_to_live(..., keys=True)`)."""

    id: int
    ttl: float
    remaining: float
    keys: int
    key_names: tuple[bytes, ...] | None = None


def ttl_ms(seconds: float) -> int:
    """A TTL in seconds as the wire's milliseconds (at least 1 ms); ValueError if unusable."""
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not math.isfinite(seconds)
    ):
        raise ValueError(f"a lease TTL must be a number of seconds, got {seconds!r}")
    ms = math.ceil(seconds * 1000)
    if not 1 <= ms <= MAX_LEASE_TTL_MS:
        raise ValueError(
            f"a lease TTL must be in 0.001..{MAX_LEASE_TTL_MS // 1000} s, got {seconds}"
        )
    return ms


async def renew_lease(
    keepalive: Callable[[int], Awaitable[float]], lease_id: int, ttl: float, sent: float
) -> None:
    """Keep lease `lease_id` (TTL `ttl` seconds, last renewed by a call sent at trio time
    `sent`) alive: a `keepalive` every TTL/3, retried on Unavailable or Timeout every
    min(0.2 s, TTL/10). Runs until cancelled. A lease lives at least TTL after its last
    successful renewal was *sent* (docs/leases.md), so the holder may count on it until then
    and not after: Unavailable at that point if no renewal succeeded meanwhile;
    LeaseNotFound (from `keepalive`) if the lease is gone. The one renewal rule, for
    `LeaseCalls.keep_alive` and the recipes' lease (rkv.recipes.session)."""
    while True:
        await trio.sleep(ttl / 3)
        while True:
            with trio.move_on_at(sent + ttl) as scope:
                try:
                    now = trio.current_time()
                    ttl = await keepalive(lease_id)
                    sent = now
                    break
                except (Unavailable, Timeout):
                    await trio.sleep(min(0.2, ttl / 10))
            if scope.cancelled_caught:
                raise Unavailable(
                    f"lease {lease_id:x}: not renewed within its TTL ({ttl:g} s) of "
                    "the last renewal sent: it may have expired"
                )


class LeaseCalls:
    """The lease methods of rkv.client.Client (which provides `_write` and `_call`)."""

    _write: Callable[..., Awaitable[dict[str, Any]]]
    _call: Callable[..., Awaitable[dict[str, Any]]]

    async def lease_grant(self, ttl_seconds: float, lease_id: int = 0) -> Lease:
        """A new lease of `ttl_seconds` (lease_id 0: the cluster picks the id)."""
        ms = ttl_ms(ttl_seconds)
        reply = await self._write(
            lambda c, s: LeaseGrantRequest(ms, client_id=c, seq=s, lease_id=lease_id)
        )
        r = LeaseGrantReply.from_frame(reply)
        return Lease(r.lease_id, r.ttl_ms / 1000)

    async def lease_keepalive(self, lease_id: int) -> float:
        """Renew the lease for its full TTL from now; returns the TTL (seconds)."""
        reply = await self._write(lambda c, s: LeaseKeepaliveRequest(lease_id, client_id=c, seq=s))
        return LeaseKeepaliveReply.from_frame(reply).ttl_ms / 1000

    async def lease_revoke(self, lease_id: int) -> bool:
        """Delete the lease and its keys (one revision); whether it existed."""
        reply = await self._write(lambda c, s: LeaseRevokeRequest(lease_id, client_id=c, seq=s))
        return ExistedReply.from_frame(reply).existed

    async def lease_time_to_live(self, lease_id: int, keys: bool = False) -> LeaseInfo | None:
        """The lease (None if it does not exist), read after a linearizable read barrier;
        with `keys`, the attached keys (at most 10,000)."""
        try:
            reply = await self._call(LeaseTtlRequest(lease_id, keys=bool(keys)))
        except LeaseNotFound:
            return None
        r = LeaseTtlReply.from_frame(reply)
        n = len(r.keys) if r.keys is not None else 0
        return LeaseInfo(r.lease_id, r.ttl_ms / 1000, r.remaining_ms / 1000, n, r.keys)

    async def lease_list(self) -> list[LeaseInfo]:
        """Every lease, by id (remaining TTLs on the answering node's clock)."""
        r = LeaseListReply.from_frame(await self._call(LeaseListRequest()))
        return [
            LeaseInfo(x.lease_id, x.ttl_ms / 1000, x.remaining_ms / 1000, x.keys) for x in r.leases
        ]

    @asynccontextmanager
    async def keep_alive(self, lease_id: int) -> AsyncIterator[float]:
        """Keep the lease alive while the block runs: renewed now (the TTL is what the block
        gets) and then every TTL/3 by a task of a nursery this owns. If the lease is lost
        (LeaseNotFound) or cannot be renewed before the TTL since the last renewal runs out
        (the cluster unavailable), the block is cancelled and that error is raised. The TTL
        counts from when the last successful renewal was *sent* (the lease's promise,
        docs/leases.md), not from its answer."""
        sent = trio.current_time()
        ttl = await self.lease_keepalive(lease_id)

        async def keepalive(lease_id: int) -> float:  # looked up per call (tests replace it)
            return await self.lease_keepalive(lease_id)

        with plain_errors():  # the renewal's error itself, not an ExceptionGroup
            async with trio.open_nursery() as nursery:
                nursery.start_soon(renew_lease, keepalive, lease_id, ttl, sent)
                try:
                    yield ttl
                finally:
                    nursery.cancel_scope.cancel()


class SyncLeaseCalls:
    """The blocking forms of LeaseCalls, for rkv.client.SyncClient (`_run` runs a coroutine
    on its loop; `_client` is the async Client)."""

    _run: Callable[..., Any]
    _client: LeaseCalls

    def lease_grant(self, ttl_seconds: float, lease_id: int = 0) -> Lease:
        r: Lease = self._run(self._client.lease_grant, ttl_seconds, lease_id)
        return r

    def lease_keepalive(self, lease_id: int) -> float:
        r: float = self._run(self._client.lease_keepalive, lease_id)
        return r

    def lease_revoke(self, lease_id: int) -> bool:
        r: bool = self._run(self._client.lease_revoke, lease_id)
        return r

    def lease_time_to_live(self, lease_id: int, keys: bool = False) -> LeaseInfo | None:
        r: LeaseInfo | None = self._run(self._client.lease_time_to_live, lease_id, keys)
        return r

    def lease_list(self) -> list[LeaseInfo]:
        r: list[LeaseInfo] = self._run(self._client.lease_list)
        return r
