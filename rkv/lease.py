"""The Lessor: when leases expire, counted on one node's monotonic clock, and what to propose.

Owns: each lease's local *deadline* (never stored), the rules that set it, and `due`, the
expiry and checkpoint commands a leader proposes; `sync`, the glue that feeds a store's lease
events to a Lessor, and `LeaseDriver`, the whole glue a node's driver calls after each step
(the node runtime, rkv.node.leases; a simulator the same way with its own `now`): reset
from the store first, sync, and as leader what is due, at most every `due_every_ms`;
`min_ttl_ms`. Pure: no clocks (`now` is an argument, in ms), no I/O, no trio.
Must not: decide what a command does to the state (rkv.store.lease_apply), or propose by
itself (the caller proposes what `due` returns, when it leads).

Why it is safe (the promise: a key attached to a lease lives at least TTL after the client
*sent* its last successful keep-alive or the grant; assumption: the nodes' monotonic clocks
run at the same rate; their offsets do not matter, only intervals measured on one node are
used). Every node keeps, per lease, a deadline on its own clock:
- applying a grant or a renewal at local time `now`: deadline = now + ttl. The entry was
  proposed after the client sent it, so now >= t_send: deadline >= t_send + ttl.
- applying a checkpoint (remaining r, proposed by a leader at its time p when its own
  deadline was p + r): deadline = min(current deadline, now + r). now >= p, so both
  candidates are >= the proposer's deadline >= t_send + ttl (by induction).
- opening its store or installing a snapshot: deadline = now + stored remaining (the stored
  remaining comes from the last grant, renewal or checkpoint entry, proposed before now).
So on every node, at all times, deadline >= t_send(last successful renewal) + ttl. The
leader proposes expiry only once its own deadline has passed. A renewal goes through the
log, so a new leader after a change already has its own deadline (from when it applied the
renewal or a checkpoint): nothing restarts at full TTL (etcd#9395), nothing is cut short.
An expiry carries the lease's generation (the log index of the grant or renewal that set its
TTL) and the proposer's term; apply deletes the lease only if the generation still matches
(a renewal in between wins) and the command's term is the entry's term (a stale expiry of a
deposed leader carried into a later term's entry is ignored; etcd#12528, #15247).
Bound: a leader proposes expiry at its deadline, and a new leader's deadline is at most a
checkpoint interval later than the old leader's (checkpoints keep the stored remaining
within an interval of the truth): gone within TTL + election timeout + checkpoint interval.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from rkv.codec import MAX_LEASE_BATCH, LeaseCheckpoint, LeaseExpire
from rkv.store.leases import LeaseEvent, LeaseEvents, LeaseState

DEFAULT_CHECKPOINT_MS = 5000
"""A leader checkpoints a lease once its stored remaining TTL exceeds the real one by this."""
DEFAULT_RETRY_MS = 2000
"""A proposed expiry or checkpoint not applied within this is proposed again."""
MIN_TTL_FLOOR_MS = 1000


def min_ttl_ms(election_timeout_ms: int) -> int:
    """The least TTL a node grants: max(1 s, 3 x election timeout) (a shorter lease could
    expire during one leader change); a grant asking for less gets this."""
    return max(MIN_TTL_FLOOR_MS, 3 * election_timeout_ms)


@dataclass(slots=True)
class _Lease:
    gen: int
    ttl_ms: int
    deadline: int
    stored_ms: int
    """The remaining TTL as stored (by the grant/renewal or the last checkpoint)."""
    version: int
    """Bumped by every change: heap entries of an older version are stale."""


class Lessor:
    """Deadlines of every lease a store holds, on this node's clock (ms).

    `due` costs O(what is due x log leases), not O(leases): two heaps hold, per lease, when
    to look at it next (its deadline; when its stored remaining will be checkpoint_ms too
    high; after a proposal, the retry time), entries made stale by a change are skipped
    (the lease's version moved on) and the heaps are rebuilt when stale ones dominate."""

    def __init__(
        self,
        checkpoint_ms: int = DEFAULT_CHECKPOINT_MS,
        retry_ms: int = DEFAULT_RETRY_MS,
        max_batch: int = MAX_LEASE_BATCH,
    ) -> None:
        if checkpoint_ms < 1 or retry_ms < 1 or not 1 <= max_batch <= MAX_LEASE_BATCH:
            raise ValueError("checkpoint_ms and retry_ms must be >= 1, max_batch in 1..1024")
        self.checkpoint_ms = checkpoint_ms
        self.retry_ms = retry_ms
        self.max_batch = max_batch
        self._leases: dict[int, _Lease] = {}
        self._expiry: list[tuple[int, int, int]] = []
        """(when to look, lease id, version): a min-heap."""
        self._checkpoint: list[tuple[int, int, int]] = []
        self._versions = 0

    def __len__(self) -> int:
        return len(self._leases)

    def _put(self, lid: int, x: _Lease) -> None:
        """Record a new or changed lease (a new version) in both heaps."""
        self._versions += 1
        x.version = self._versions
        self._leases[lid] = x
        heapq.heappush(self._expiry, (x.deadline, lid, x.version))
        when = x.deadline - x.stored_ms + self.checkpoint_ms
        heapq.heappush(self._checkpoint, (when, lid, x.version))
        if len(self._expiry) + len(self._checkpoint) > 4 * len(self._leases) + 4096:
            self._rebuild()

    def _rebuild(self) -> None:
        self._expiry = [(x.deadline, lid, x.version) for lid, x in self._leases.items()]
        self._checkpoint = [
            (x.deadline - x.stored_ms + self.checkpoint_ms, lid, x.version)
            for lid, x in self._leases.items()
        ]
        heapq.heapify(self._expiry)
        heapq.heapify(self._checkpoint)

    def reset(self, leases: Iterable[LeaseState], now: int) -> None:
        """Start over from a store's leases (its open, a snapshot install)."""
        self._leases = {
            x.id: _Lease(x.gen, x.ttl_ms, now + x.remaining_ms, x.remaining_ms, 0) for x in leases
        }
        self._rebuild()

    def on_applied(self, events: Iterable[LeaseEvent], now: int) -> None:
        """What committed entries did to leases, applied here at `now`."""
        for ev in events:
            cur = self._leases.get(ev.id)
            if ev.kind == "set":
                self._put(ev.id, _Lease(ev.gen, ev.ms, now + ev.ms, ev.ms, 0))
            elif ev.kind == "checkpoint":
                if cur is not None and cur.gen == ev.gen:
                    cur.deadline = min(cur.deadline, now + ev.ms)
                    cur.stored_ms = min(cur.stored_ms, ev.ms)
                    self._put(ev.id, cur)
            else:  # "gone", "expired"
                self._leases.pop(ev.id, None)

    def remaining_ms(self, lease_id: int, now: int) -> int | None:
        """The lease's remaining TTL on this node's clock (0 once its deadline passed, until
        its expiry applies); None if this node knows no such lease."""
        cur = self._leases.get(lease_id)
        return None if cur is None else max(0, cur.deadline - now)

    def _pop_due(
        self, heap: list[tuple[int, int, int]], now: int, keep: Callable[[_Lease], bool]
    ) -> list[tuple[int, _Lease]]:
        """Up to max_batch current entries of `heap` due at `now` that `keep` takes,
        earliest first; each is pushed back for the retry time (a proposal not applied is
        proposed again then). Stale entries and those `keep` refuses are dropped."""
        out: list[tuple[int, _Lease]] = []
        budget = 4 * self.max_batch  # bounded work per call, stale entries included
        while heap and heap[0][0] <= now and len(out) < self.max_batch and budget:
            budget -= 1
            _, lid, version = heapq.heappop(heap)
            x = self._leases.get(lid)
            if x is not None and x.version == version and keep(x):
                out.append((lid, x))
        for lid, x in out:
            heapq.heappush(heap, (now + self.retry_ms, lid, x.version))
        return out

    def due(
        self, now: int, term: int, checkpoints: bool = True
    ) -> list[LeaseExpire | LeaseCheckpoint]:
        """What a leader of `term` proposes at `now`: one LeaseExpire for leases whose
        deadline passed, one LeaseCheckpoint for leases whose stored remaining exceeds the
        real one by at least checkpoint_ms (unless `checkpoints` is False: they wait for a
        later call); each at most max_batch leases (earliest due first), none proposed again
        within retry_ms unless applied (which changes it)."""
        out: list[LeaseExpire | LeaseCheckpoint] = []
        expire = self._pop_due(self._expiry, now, lambda x: True)
        if expire:
            out.append(LeaseExpire(term, tuple((lid, x.gen) for lid, x in expire)))
        if not checkpoints:
            return out
        # a lease past its deadline needs its expiry, not a checkpoint
        ckpt = self._pop_due(self._checkpoint, now, lambda x: x.deadline > now)
        if ckpt:
            out.append(LeaseCheckpoint(tuple((lid, x.gen, x.deadline - now) for lid, x in ckpt)))
        return out


class LeaseSource(Protocol):
    """What `sync` needs of a store (LmdbStore and MemoryStore)."""

    def take_lease_events(self) -> LeaseEvents: ...
    def leases(self) -> list[LeaseState]: ...


def sync(lessor: Lessor, store: LeaseSource, now: int) -> list[LeaseEvent]:
    """Feed the store's lease events since the last call to the Lessor (starting over from
    `store.leases()` when the store says so). Call it after each apply, before `due` or
    `remaining_ms`, from whatever drives the node (its runtime, a simulator). Returns the
    events (a caller may count them)."""
    got = store.take_lease_events()
    if got.reset:
        lessor.reset(store.leases(), now)
    lessor.on_applied(got.events, now)
    return got.events


DUE_EVERY_MS = 100
"""How often a leader asks its Lessor what is due, by default (the node asks every tick for
expiries, every DUE_EVERY_MS for checkpoints: rkv.node.leases)."""


class LeaseDriver:
    """The glue between a store and its Lessor for whatever drives a node: call `step` after
    each apply (or turn, or tick) with the node's clock; propose what it returns (as seq 0
    requests) when it returns anything. Counts the expiries it proposed and the ones
    applied, and the checkpoints it proposed (the node's metrics)."""

    def __init__(
        self,
        lessor: Lessor,
        due_every_ms: int = DUE_EVERY_MS,
        checkpoint_every_ms: int | None = None,
    ) -> None:
        self.lessor = lessor
        self.due_every_ms = due_every_ms
        self.checkpoint_every_ms = (
            due_every_ms if checkpoint_every_ms is None else checkpoint_every_ms
        )
        """Checkpoints are proposed at most this often (default: with every expiry check);
        longer gathers more leases per checkpoint entry. The bound's checkpoint interval
        grows by at most this."""
        self._next_checkpoint = 0
        self.expiries_proposed = 0
        self.expiries_applied = 0
        self.checkpoints_proposed = 0
        """Leases named by the LeaseCheckpoint commands this driver returned."""
        self.checkpoint_commands = 0
        """LeaseCheckpoint commands returned (each one log entry when proposed)."""
        self._started = False
        self._next_due = 0

    def sync(self, store: LeaseSource, now: int) -> None:
        """Feed the store's lease events to the Lessor (the first call resets it from the
        store: what led to the state it holds was never seen)."""
        if not self._started:
            self._started = True
            store.take_lease_events()
            self.lessor.reset(store.leases(), now)
        for ev in sync(self.lessor, store, now):
            if ev.kind == "expired":
                self.expiries_applied += 1

    def step(
        self, store: LeaseSource, now: int, leads: bool, term: int
    ) -> list[LeaseExpire | LeaseCheckpoint]:
        """Sync; when this node leads in `term`, what to propose now (at most every
        due_every_ms; checkpoints at most every checkpoint_every_ms). The caller proposes them; one it could not propose is proposed again
        after the Lessor's retry interval."""
        self.sync(store, now)
        if not leads or now < self._next_due:
            return []
        self._next_due = now + self.due_every_ms
        checkpoints = now >= self._next_checkpoint
        if checkpoints:
            self._next_checkpoint = now + self.checkpoint_every_ms
        out = self.lessor.due(now, term, checkpoints)
        for c in out:
            if isinstance(c, LeaseExpire):
                self.expiries_proposed += len(c.items)
            else:
                self.checkpoints_proposed += len(c.items)
                self.checkpoint_commands += 1
        return out
