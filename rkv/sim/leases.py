"""Leases in the simulator: what clients do with them, and the checks of the lease promise.

Owns: `LeaseParams` (the workload's and the Lessor's knobs, in virtual time units, which
stand for milliseconds: a tick is 10 ms), the per-client lease workload (`ClientLeases`:
grant, keep some alive at their own interval, let others lapse, revoke some, put keys of
the lease key space `l0`, `l1`, ... attached to them) and `LeaseChecker`:
- promise: at the first application anywhere of the entries that delete a lease without a
  revoke, (1) a LeaseExpire of the entry's own term named the lease with the generation it
  had, and (2) at least its TTL has passed since the client sent the grant or keep-alive
  whose log index that generation is (the time the attempt that proposed the entry at
  (index, term) was sent); the checker's own lease table follows the log (grants, renewals,
  revokes, valid expiries) and must agree with the applying store's leases and generations;
- attachments: after every apply on every node, no key names a lease the store lacks, and
  every key a lease lists names it (so a lease's keys go in the apply that removes it);
- liveness (weak, at the end): with a stable leader in the quiet phase, a lease goes within
  its remaining TTL (from when that leader was first seen leading, or from the grant or
  keep-alive sent since) + an election timeout + slack (`settled`).
The nodes' lease glue is rkv.lease.LeaseDriver itself (driven by rkv.sim.cluster). Must not:
draw randomness but from the rng it is handed, read a clock, or decide what a lease
command does (rkv.store.lease_apply does; the checker's table only follows its outcome).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from rkv import codec
from rkv.lease import DUE_EVERY_MS, LeaseDriver, Lessor
from rkv.raft.types import Entry
from rkv.sim.invariants import InvariantViolation
from rkv.sim.node import Applied, request_of
from rkv.store import MemoryStore
from rkv.store.commands import ApplyResult

LEASE_KEY_PREFIX = "l"
"""The lease key space: `l0`, `l1`, ... (the key-value checks use `k0`, `k1`, ...)."""
_FIRST_ID = 1_000_000
"""Client c picks lease ids (c + 1) * 1,000,000 + n; id 0 asks for the entry's index."""


@dataclass(frozen=True, slots=True)
class LeaseParams:
    ttl: tuple[int, int] = (300, 1000)
    """A grant's TTL (ms), drawn: 3 to 10 election timeouts of 100 ms (the node raises a
    TTL to at least 1 s; the state machine takes any, and short ones probe the edges)."""
    checkpoint_ms: int = 300
    """The Lessor's checkpoint interval."""
    retry_ms: int = 400
    """The Lessor's retry interval (the node's: max(1 s, 2 x election timeout))."""
    keys: int = 3
    held: int = 3
    """Leases a client holds at most."""
    slack: int = DUE_EVERY_MS + 200
    """Liveness: added to TTL + election timeout + checkpoint interval."""

    def driver(self) -> LeaseDriver:
        return LeaseDriver(Lessor(checkpoint_ms=self.checkpoint_ms, retry_ms=self.retry_ms))


@dataclass(slots=True)
class _Held:
    ttl: int
    every: int | None
    """Keep-alive interval (None: let it lapse); some exceed the TTL."""
    next_renew: int


@dataclass(slots=True)
class ClientLeases:
    """One client's leases: what it holds and what to do next."""

    client: int
    held: dict[int, _Held] = field(default_factory=dict)
    granted: int = 0

    def choose(
        self, rng: random.Random, now: int, p: LeaseParams
    ) -> tuple[str, int, int, str, str | None]:
        """The next lease operation: (kind, lease, ttl, key, value)."""
        due = [(h.next_renew, lid) for lid, h in self.held.items() if h.every is not None]
        due = sorted(d for d in due if d[0] <= now)
        if due:
            return "renew", due[0][1], 0, "", None
        r = rng.random()
        if not self.held or (r < 0.3 and len(self.held) < p.held):
            self.granted += 1
            lid = 0 if rng.random() < 0.25 else (self.client + 1) * _FIRST_ID + self.granted
            return "grant", lid, rng.randint(*p.ttl), "", None
        lid = rng.choice(sorted(self.held))
        if r < 0.8:
            key = f"{LEASE_KEY_PREFIX}{rng.randrange(p.keys)}"
            return "lput", lid, 0, key, f"v{self.client}.{self.granted}.{rng.randrange(1000)}"
        if r < 0.9:
            return "renew", lid, 0, "", None  # maybe one it lets lapse: a race with expiry
        return "revoke", lid, 0, "", None

    def done(
        self,
        kind: str,
        lease: int,
        ttl: int,
        res: ApplyResult | None,
        invoked: int,
        rng: random.Random,
    ) -> bool | None:
        """Learn from an answer; returns what the client is told (the history's result)."""
        ok = res is not None and res.ok
        if kind == "grant":
            if ok and res is not None and type(res.value) is int:
                every = None if rng.random() < 0.3 else rng.randint(ttl // 5, ttl * 6 // 5)
                self.held[res.value] = _Held(ttl, every, invoked + (every or 0))
            return ok
        if kind == "revoke":
            self.held.pop(lease, None)
            return bool(res.value) if res is not None else None
        if not ok:
            self.held.pop(lease, None)  # lease not found: it expired
        elif kind == "renew" and lease in self.held:
            h = self.held[lease]
            if h.every is not None:
                h.next_renew = invoked + h.every
        return ok


@dataclass(slots=True)
class _Lease:
    gen: int
    ttl: int


class LeaseChecker:
    """The lease checks (see the module docstring), fed by the cluster."""

    def __init__(self, p: LeaseParams, election_ms: int) -> None:
        self.p = p
        self.election_ms = election_ms
        self.sent: dict[tuple[int, int], int] = {}
        """(index, term) of a grant or renewal a client proposed -> when it sent it."""
        self.table: dict[int, _Lease] = {}
        """The leases as of the first-applied log (the frontier)."""
        self.expired = 0
        self.revoked = 0
        self.liveness_skipped = 0
        self.lead: tuple[str, int] = ("", 0)
        self.lead_since = 0
        self.at_lead: dict[int, tuple[int, int]] = {}
        """(gen, stored remaining) of the leases the leader held when first seen leading."""

    def on_sent(self, index: int, term: int, now: int) -> None:
        self.sent[(index, term)] = now

    def _sent(self, log: Sequence[Entry], gen: int, lid: int) -> int:
        e = log[gen - 1] if 0 < gen <= len(log) else None
        req = request_of(e) if e is not None else None
        cmd = req.command if req is not None else None
        if not isinstance(cmd, codec.LeaseGrant | codec.LeaseRenew) or e is None:
            raise InvariantViolation("lease-gen", f"lease {lid}: gen {gen} holds no grant/renewal")
        t = self.sent.get((gen, e.term))
        if t is None:
            raise InvariantViolation(
                "lease-gen", f"lease {lid}: no client sent the entry at {gen}@{e.term}"
            )
        return t

    def on_frontier(
        self, batch: Sequence[Applied], log: Sequence[Entry], store: MemoryStore, now: int
    ) -> None:
        """Entries applied for the first time anywhere (`batch`, in order, by `store`, which
        now holds the state after them) at `now`."""
        revoked: set[int] = set()
        named: set[tuple[int, int]] = set()
        for a in batch:
            req = request_of(a.entry)
            cmd = req.command if req is not None else None
            e, res = a.entry, a.result
            if not a.executed and not isinstance(cmd, codec.LeaseExpire):
                continue  # a no-op, or a retry answered from its session
            if isinstance(cmd, codec.LeaseGrant) and res.ok and type(res.value) is int:
                self.table[res.value] = _Lease(e.index, cmd.ttl_ms)
            elif isinstance(cmd, codec.LeaseRenew) and res.ok:
                old = self.table.get(cmd.lease_id)
                if old is None:
                    raise InvariantViolation(
                        "lease-table", f"lease {cmd.lease_id} renewed at {e.index}: never granted"
                    )
                old.gen = e.index
            elif isinstance(cmd, codec.LeaseRevoke):
                if self.table.pop(cmd.lease_id, None) is not None:
                    self.revoked += 1
                revoked.add(cmd.lease_id)
            elif isinstance(cmd, codec.LeaseExpire) and cmd.term == e.term:
                named.update(cmd.items)
        have = {x.id: x.gen for x in store.leases()}
        for lid, x in list(self.table.items()):
            if lid in have:
                if have[lid] != x.gen:
                    raise InvariantViolation(
                        "lease-table",
                        f"lease {lid} has gen {have[lid]} in the store, the log says {x.gen}",
                    )
                continue
            sent = self._sent(log, x.gen, lid)
            if now < sent + x.ttl:
                raise InvariantViolation(
                    "lease-promise",
                    f"lease {lid} (ttl {x.ttl}) expired at t={now}, {now - sent} after the "
                    f"client sent its grant/keep-alive at {x.gen} (t={sent})",
                )
            if (lid, x.gen) not in named:
                raise InvariantViolation(
                    "lease-vanished",
                    f"lease {lid} (gen {x.gen}) gone at t={now} by no revoke and no expiry "
                    f"of its gen in its own term",
                )
            del self.table[lid]
            self.expired += 1
        extra = set(have) - set(self.table)
        if extra:
            raise InvariantViolation(
                "lease-table", f"the store holds leases {sorted(extra)} the log does not"
            )

    @staticmethod
    def check_attachments(node_id: str, store: MemoryStore) -> None:
        """No key names a missing lease; each key a lease lists names it."""
        for x in store.leases():
            for key in store.lease_keys(x.id):
                rec = store.get_record(key)
                if rec is None or rec.lease != x.id:
                    raise InvariantViolation(
                        "lease-keys",
                        f"{node_id} at {store.applied_index()}: lease {x.id} lists {key!r}, "
                        f"which names {None if rec is None else rec.lease}",
                    )
        for key, _ in store.scan(LEASE_KEY_PREFIX.encode(), 1 << 20):
            rec = store.get_record(key)
            if rec is not None and rec.lease and store.lease(rec.lease) is None:
                raise InvariantViolation(
                    "lease-keys",
                    f"{node_id} at {store.applied_index()}: {key!r} names lease {rec.lease}, "
                    "which is gone",
                )

    def settled(
        self, leader: str, term: int, store: MemoryStore, log: Sequence[Entry], now: int
    ) -> bool:
        """Liveness at the end: True once `leader`'s store holds no lease; raises if one
        outlived its bound. A new leader (or term) starts the count again.

        The bound of a lease still at the generation it had when this leader was first seen
        leading (at `lead_since`, with the stored remaining r then): lead_since + r (the
        leader's deadline is at most that: it was set before, by the grant or renewal, by a
        checkpoint, or by its restart at then + the stored remaining, none above r since);
        of a lease granted or renewed since: max(sent, lead_since) + TTL. Both plus an
        election timeout and the slack (the leader asks its Lessor every 100 ms; commit and
        apply). So a leader that restarts leases at full TTL is caught too."""
        if (leader, term) != self.lead:
            self.lead, self.lead_since = (leader, term), now
            self.at_lead = {x.id: (x.gen, x.remaining_ms) for x in store.leases()}
        live = store.leases()
        if not live:
            return True
        for x in live:
            was = self.at_lead.get(x.id)
            if was is not None and was[0] == x.gen:
                last, left = self.lead_since, was[1]
            else:
                last, left = max(self._sent(log, x.gen, x.id), self.lead_since), x.ttl_ms
            bound = last + left + 2 * self.election_ms + self.p.slack
            if now > bound:
                raise InvariantViolation(
                    "lease-liveness",
                    f"lease {x.id} (ttl {x.ttl_ms}, gen {x.gen}) still held by leader {leader} "
                    f"at t={now}: due by t={bound} ({left} ms left at t={last})",
                )
        return False
