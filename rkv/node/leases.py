"""Leases on a running node: the Lessor driven by the raft loop, and the lease requests.

Owns: this node's rkv.lease.Lessor and LeaseDriver (reset from the store at the first turn,
fed the store's lease events after each raft-loop turn), the leader's proposals of what
the driver says is due (expiries asked for every tick, checkpoints every 100 ms: through the raft loop's inbox with a waiter
nobody waits on, as the upload sweep does), the minimum TTL a grant gets, the lease request
handlers (lease_grant, lease_keepalive, lease_revoke through the log; lease_ttl and
lease_list on any node after a read barrier, with the remaining TTL on this node's clock) and
the lease counters of the metrics.
Must not: touch the RawNode, decide what a lease command does (rkv.store.lease_apply) or
when a lease expires (rkv.lease), or look at a clock other than trio's (monotonic).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import trio

from rkv.codec import LeaseExpire, Request, encode_request
from rkv.config import NodeConfig
from rkv.errors import InternalError, LeaseNotFound
from rkv.lease import DUE_EVERY_MS, LeaseDriver, Lessor, min_ttl_ms
from rkv.node.handlers import ClientHandlers, Handler
from rkv.node.inbox import Frame, Propose, Waiter, log
from rkv.protocol import (
    ExistedReply,
    LeaseGrantReply,
    LeaseGrantRequest,
    LeaseKeepaliveReply,
    LeaseKeepaliveRequest,
    LeaseListItem,
    LeaseListReply,
    LeaseListRequest,
    LeaseRevokeRequest,
    LeaseTtlReply,
    LeaseTtlRequest,
)
from rkv.protocol.leases import MAX_LIST_KEYS


def now_ms() -> int:
    return int(trio.current_time() * 1000)


class LeaseKeeper:
    """The node's Lessor and the lease requests (see the module docstring)."""

    def __init__(self, cfg: NodeConfig, store: Any, handlers: ClientHandlers) -> None:
        self.cfg = cfg
        self.store = store
        self.handlers = handlers
        election_ms = cfg.election_ticks * cfg.tick_ms
        self.min_ttl_ms = min_ttl_ms(election_ms)
        self.lessor = Lessor(
            checkpoint_ms=max(1, int(cfg.lease_checkpoint_seconds * 1000)),
            retry_ms=max(1000, 2 * election_ms),
        )
        self.driver = LeaseDriver(
            self.lessor, due_every_ms=max(1, cfg.tick_ms), checkpoint_every_ms=DUE_EVERY_MS
        )
        """The glue (rkv.lease): resets from the store at its first step, counts expiries.
        The leader asks for expiries every tick (`due` costs O(what is due): a lease is
        proposed for expiry about a tick after its deadline, not up to 100 ms later) and
        for checkpoints every 100 ms (more leases per checkpoint entry)."""

    def routes(self) -> dict[str, Handler]:
        return {
            "lease_grant": self.grant,
            "lease_keepalive": self.keepalive,
            "lease_revoke": self.revoke,
            "lease_ttl": self.ttl,
            "lease_list": self.list,
        }

    def statistics(self) -> dict[str, int]:
        return {
            "leases": len(self.lessor),
            "expiries_proposed": self.driver.expiries_proposed,
            "expiries_applied": self.driver.expiries_applied,
            "checkpoints_proposed": self.driver.checkpoints_proposed,
            "checkpoint_entries_proposed": self.driver.checkpoint_commands,
        }

    # -- driving (the raft loop, after each turn) ------------------------------------------------

    def sync(self) -> int:
        """Feed the applies' lease events to the Lessor; returns the time (ms) used."""
        now = now_ms()
        self.driver.sync(self.store, now)
        return now

    def after_turn(self, leads: bool, term: int, offer: Any) -> None:
        """Sync, and when leading, propose what is due. A proposal the inbox refuses (full)
        is proposed again after the Lessor's retry interval."""
        for cmd in self.driver.step(self.store, now_ms(), leads, term):
            w = Waiter(deadline=trio.current_time() + self.cfg.request_timeout)
            if not offer(Propose(encode_request(Request(b"", 0, cmd)), w)):
                break
            if isinstance(cmd, LeaseExpire):
                log.info("%s: expiring %d lease(s) (term %d)", self.cfg.id, len(cmd.items), term)

    # -- requests ------------------------------------------------------------------------------

    async def grant(self, r: LeaseGrantRequest) -> Frame:
        """A TTL below the node's minimum (max(1 s, 3 election timeouts)) is raised to it;
        the reply says what was granted."""
        if r.ttl_ms < self.min_ttl_ms:
            r = dataclasses.replace(r, ttl_ms=self.min_ttl_ms)
        lease_id, rev = await self.handlers.propose(r)
        if type(lease_id) is not int:
            raise InternalError(f"lease grant answered {lease_id!r}")
        return LeaseGrantReply(lease_id, r.ttl_ms, rev).to_frame()

    async def keepalive(self, r: LeaseKeepaliveRequest) -> Frame:
        ttl, rev = await self.handlers.propose(r)
        if type(ttl) is not int:
            raise InternalError(f"lease keepalive answered {ttl!r}")
        return LeaseKeepaliveReply(ttl, rev).to_frame()

    async def revoke(self, r: LeaseRevokeRequest) -> Frame:
        existed, rev = await self.handlers.propose(r)
        return ExistedReply(bool(existed), rev).to_frame()

    async def ttl(self, r: LeaseTtlRequest) -> Frame:
        """After a read barrier: the lease as applied here, its remaining TTL on this node's
        clock (its deadline, which the leader's is no later than by more than a checkpoint
        interval)."""
        await self.handlers.raft.read_barrier()
        now = self.sync()
        rev = self.store.applied_index()
        st = self.store.lease(r.lease_id)
        if st is None:
            raise LeaseNotFound(f"no lease {r.lease_id}")
        keys = tuple(self.store.lease_keys(r.lease_id)[:MAX_LIST_KEYS]) if r.keys else None
        left = self._remaining(st.id, st.remaining_ms, now)
        return LeaseTtlReply(r.lease_id, st.ttl_ms, left, keys, rev).to_frame()

    async def list(self, r: LeaseListRequest) -> Frame:
        await self.handlers.raft.read_barrier()
        now = self.sync()
        rev = self.store.applied_index()
        items = []
        for st in self.store.leases():
            left = self._remaining(st.id, st.remaining_ms, now)
            items.append(LeaseListItem(st.id, st.ttl_ms, left, st.keys))
        return LeaseListReply(tuple(items), rev).to_frame()

    def _remaining(self, lease_id: int, stored_ms: int, now: int) -> int:
        """The lease's remaining TTL on this node's clock; a lease applied after the sync
        (the Lessor does not know it yet) has its stored remaining."""
        left = self.lessor.remaining_ms(lease_id, now)
        return stored_ms if left is None else left
