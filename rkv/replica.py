"""Synchronous glue between the Raft core and the store: one replica of the state machine.

Owns: the RawNode and the store of one node, and the steps of handling a Ready in the order
the contract demands (persist, then the messages that depend on it, then apply, then
advance); the bookkeeping of pending proposals (matched to applied entries by index and term)
and pending linearizable reads (released once the applied index reaches their read index);
with `defer_apply`, the backlog of committed entries not yet written to the store.
Must not: use trio, sockets or clocks. The node runtime calls the blocking steps (`persist`,
`apply`) from a worker thread and everything else from its raft loop task, and owns deadlines.

Pending work is identified by caller tokens (any object: the runtime uses its waiter objects),
so this module never decides how a result reaches a client.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Protocol, TypeVar

from rkv.errors import BadRequest, NotLeader, RkvError, Unavailable
from rkv.raft.confchange import ConfChange, ConfChangeError
from rkv.raft.config import Config
from rkv.raft.errors import ConfChangeRefused, ProposalDropped
from rkv.raft.rawnode import RawNode
from rkv.raft.storage import Storage
from rkv.raft.types import (
    LEADER,
    NONE,
    NORMAL,
    Entry,
    HardState,
    Message,
    NodeId,
    Ready,
    Role,
    Snapshot,
)

log = logging.getLogger("rkv.replica")

T = TypeVar("T")


class ReplicaStore(Storage, Protocol):
    """What the replica needs from rkv.store (LmdbStore and MemoryStore both fit)."""

    def save(
        self, hard_state: HardState | None, entries: list[Entry], snapshot: Snapshot | None = None
    ) -> None: ...

    def install_snapshot(
        self, hard_state: HardState | None, entries: list[Entry], snapshot: Snapshot
    ) -> None: ...

    def apply(self, entries: list[Entry]) -> Sequence[Any]: ...

    def save_and_apply(
        self, hard_state: HardState | None, entries: list[Entry], committed: list[Entry]
    ) -> Sequence[Any]: ...

    def applied_index(self) -> int: ...

    def log_bytes(self) -> int: ...


@dataclass(frozen=True, slots=True)
class CompactionPolicy:
    """When to compact the log (see docs/snapshots.md).

    Compaction is due once more than `max_entries` applied entries, or more than `max_bytes`
    of log, lie beyond the last snapshot. It then drops the log up to the applied index minus
    a trailing margin of at most `keep_entries` entries and about `keep_bytes` bytes, so that
    followers a little behind still catch up from the log instead of needing a snapshot.
    """

    max_entries: int = 10_000
    max_bytes: int = 256 << 20
    keep_entries: int = 1_000
    keep_bytes: int = 16 << 20


@dataclass(slots=True)
class Outcome(Generic[T]):
    """What one handled Ready means for the callers waiting on this replica."""

    completed: list[tuple[T, Entry, Any]] = field(default_factory=list)
    """(token, entry, apply result) for proposals whose entry was applied."""
    failed: list[tuple[T, RkvError]] = field(default_factory=list)
    """Proposals and reads that can no longer succeed (retry is safe)."""
    reads: list[tuple[T, int]] = field(default_factory=list)
    """(token, read index) of linearizable reads that may now be served from the local store
    (its applied index is at or past the read index)."""
    role_changed: bool = False
    leader_changed: bool = False


@dataclass(slots=True)
class _Pending(Generic[T]):
    term: int
    token: T
    early: bool = False
    """The caller needs no apply result (a put): it may be answered once its entry commits
    (see `answer_committed`)."""


@dataclass(slots=True)
class _Read(Generic[T]):
    token: T
    index: int | None = None


class Replica(Generic[T]):
    """One node's RawNode + store, driven one Ready at a time.

    Usage per turn (the runtime's raft loop): feed inputs with `step`/`tick`/`propose`/`read`,
    then while `has_ready()`: `ready = take_ready()`, send `ready.messages`, `persist(ready)`,
    send `ready.persisted_messages`, `results = apply(ready)`, `outcome = finish(ready,
    results)`. `handle_ready()` does the same synchronously, for tests and simple callers.

    Deferred apply (`defer_apply=True`, the node runtime's choice): committed entries that
    nobody waits on are kept in a backlog instead of costing a store transaction (and its
    flush) of their own, and are applied in batches of up to `max_backlog` entries or
    `max_backlog_bytes`: once the batch is full, in the next transaction that saves log
    entries (group commit: no flush of its own), or by `apply_backlog` (the runtime calls it
    when the backlog stops growing or grows old), and at once when a linearizable read, a
    caller that needs its result or a membership change asks for it. Until a batch is full,
    log writes carry only the log: the state machine's share of the work stays out of the
    path every commit waits on, and one large batch costs less than many small ones (one
    transaction; and the store writes a batch's keys in key order, which fills LMDB's pages
    better). `applied` is always the store's applied index: reads, compaction and snapshots
    only ever see what the store holds. A crash loses nothing:
    the backlog is committed log, applied again after a restart from the store's applied
    index, exactly once.
    """

    def __init__(
        self,
        config: Config,
        store: ReplicaStore,
        *,
        rng: random.Random | None = None,
        raw_node_factory: Callable[[Config, Storage, random.Random], RawNode] = RawNode,
        address_of: Callable[[NodeId], str | None] = lambda _id: None,
        defer_apply: bool = False,
        max_backlog: int = 512,
        max_backlog_bytes: int = 1 << 20,
    ) -> None:
        self.store = store
        hs, _voters = store.initial_state()
        if hs.commit < store.applied_index():
            # Commit-only hard states are not saved (see `persist`): the applied index, durable
            # with the state machine, proves how far the log was committed. Bring the stored
            # commit up to it before the core reads it.
            hs = replace(hs, commit=store.applied_index())
            store.save(hs, [])
        self._durable = (hs.term, hs.vote, hs.recovering)
        """Term, vote and recovering flag of the last saved hard state."""
        rng = rng if rng is not None else random.Random()
        self.raw = raw_node_factory(config, store, rng)
        self.id = config.id
        self._address_of = address_of
        self._proposals: dict[int, _Pending[T]] = {}
        self._reads: dict[bytes, _Read[T]] = {}
        self._fail_later: list[tuple[T, RkvError]] = []
        self._read_ids = itertools.count(1)
        self._read_prefix = rng.getrandbits(32).to_bytes(4, "big")
        self.applied = store.applied_index()
        """The store's applied index (the backlog lies beyond it)."""
        self._defer = defer_apply
        self._max_backlog = max_backlog
        self._max_backlog_bytes = max_backlog_bytes
        self._backlog: list[Entry] = []
        self._backlog_bytes = 0
        self.role = Role.FOLLOWER
        self.leader: NodeId = NONE
        self.term = 0
        self.readies = 0
        self.saves = 0
        self.applies = 0
        self.snapshots_installed = 0

    # -- inputs ----------------------------------------------------------------------------

    def tick(self) -> None:
        self.raw.tick()

    def step(self, msg: Message) -> None:
        self.raw.step(msg)

    def leader_address(self) -> str | None:
        return self._address_of(self.leader) if self.leader else None

    def propose(self, data: bytes, token: T, *, early: bool = False) -> int:
        """Propose `data`; `token` is reported in a later Outcome. Returns the entry's index.
        `early`: the caller needs no apply result, so `answer_committed` may report it as
        soon as the entry commits (the runtime passes it for puts, whose result is always ok).

        Raises NotLeader (with the leader's address when known) or Unavailable (no leader).
        """
        try:
            index = self.raw.propose(data)
        except ProposalDropped as e:
            raise self._dropped(e, "cannot propose") from None
        return self._track(index, token, early)

    def _dropped(self, e: ProposalDropped, what: str) -> RkvError:
        """NotLeader (redirect) when another leader is known, else Unavailable."""
        leader = e.leader or self.leader
        if leader and leader != self.id:
            return NotLeader(leader_addr=self._address_of(leader))
        return Unavailable(f"{what}: {e.reason}")

    def propose_conf_change(self, cc: ConfChange, token: T) -> int:
        """Propose a membership change; like `propose`. Also raises Unavailable while another
        change is pending (retry) and BadRequest when `cc` does not fit the configuration."""
        try:
            index = self.raw.propose_conf_change(cc)
        except ProposalDropped as e:
            raise self._dropped(e, "cannot change membership") from None
        except ConfChangeRefused as e:
            raise Unavailable(e.reason) from None
        except ConfChangeError as e:
            raise BadRequest(str(e)) from None
        return self._track(index, token)

    def _track(self, index: int, token: T, early: bool = False) -> int:
        term = self.raw.term
        old = self._proposals.get(index)
        if old is not None:
            # A new proposal at an index we still track: the old one was overwritten by a
            # leader change we have not noticed yet. It can never be applied as proposed.
            self._fail_later.append((old.token, Unavailable("proposal lost to a leader change")))
        self._proposals[index] = _Pending(term, token, early)
        return index

    def read(self, token: T) -> bytes:
        """Start a linearizable read; `token` appears in `Outcome.reads` once it may be served
        locally. Returns the read's context (for `cancel_read`). Raises Unavailable when no
        leader is known."""
        ctx = self._read_prefix + next(self._read_ids).to_bytes(8, "big")
        try:
            self.raw.read_index(ctx)
        except ProposalDropped as e:
            raise Unavailable(f"cannot read: {e.reason}") from None
        self._reads[ctx] = _Read(token)
        return ctx

    def cancel_read(self, ctx: bytes) -> None:
        self._reads.pop(ctx, None)

    def cancel_proposal(self, index: int, token: T) -> None:
        """Forget a proposal whose caller gave up (the entry may still be applied)."""
        p = self._proposals.get(index)
        if p is not None and p.token is token:
            del self._proposals[index]

    @property
    def pending_proposals(self) -> int:
        return len(self._proposals)

    @property
    def pending_reads(self) -> int:
        return len(self._reads)

    @property
    def backlog(self) -> int:
        """Committed entries not yet applied to the store (see defer_apply)."""
        return len(self._backlog)

    @property
    def backlog_bytes(self) -> int:
        return self._backlog_bytes

    @property
    def uncommitted(self) -> bool:
        """Whether the log holds entries not known to be committed: writes under way."""
        log = self.raw.raft.log
        return log.last_index() > log.committed

    # -- one Ready -------------------------------------------------------------------------

    def has_ready(self) -> bool:
        return self.raw.has_ready()

    def take_ready(self) -> Ready:
        self.readies += 1
        return self.raw.ready()

    def persist(self, ready: Ready) -> None:
        """Blocking: snapshot, entries and hard state in one durable store transaction.

        A snapshot from the leader replaces the state machine too: its state must have been
        staged in the store first (the runtime streams it before stepping the SNAPSHOT
        message), and the store swaps it in within the same transaction."""
        if ready.snapshot is not None:
            self.store.install_snapshot(ready.hard_state, list(ready.entries), ready.snapshot)
            self.saves += 1
            self.snapshots_installed += 1
            # The core takes a snapshot only past its commit index: the backlog (all at or
            # below it) is part of the state the snapshot replaces.
            self._backlog.clear()
            self._backlog_bytes = 0
            self.applied = self.store.applied_index()
        elif self._must_save(ready):
            self.store.save(ready.hard_state, list(ready.entries), ready.snapshot)
            self.saves += 1
        # else: only the commit index moved. Raft needs no durable commit index (a restarted
        # node learns it again from the leader), so that costs no transaction and no fsync;
        # it is saved with the next entries or vote, and `__init__` repairs commit < applied.
        if ready.hard_state is not None:
            hs = ready.hard_state
            if hs.recovering != self._durable[2]:
                log.info("%s: caught up with the cluster: votes again", self.id)
            self._durable = (hs.term, hs.vote, hs.recovering)

    def _must_save(self, ready: Ready) -> bool:
        return bool(ready.entries) or (
            ready.hard_state is not None
            and (ready.hard_state.term, ready.hard_state.vote, ready.hard_state.recovering)
            != self._durable
        )

    def can_group_commit(self, ready: Ready) -> bool:
        """Whether `persist_and_apply` would write `ready` in one transaction (no snapshot,
        something to save and something to apply now: committed entries that may not wait,
        see `_may_defer`, or a full backlog)."""
        return (
            ready.snapshot is None
            and bool(ready.committed_entries or self._backlog)
            and self._must_save(ready)
            and (self._backlog_full() or not self._may_defer(ready.committed_entries))
        )

    def _backlog_full(self) -> bool:
        return (
            len(self._backlog) >= self._max_backlog
            or self._backlog_bytes >= self._max_backlog_bytes
        )

    def persist_and_apply(self, ready: Ready) -> Sequence[Any]:
        """Blocking: `persist` then `apply`, as ONE durable store transaction when
        `can_group_commit` (group commit: one fsync for log and state machine; the Ready
        contract allows it: the entries are durable when the results become visible). The
        backlog goes into that transaction too. Returns the apply results of
        `ready.committed_entries`. `persisted_messages` go out after it returns."""
        if not self.can_group_commit(ready):
            self.persist(ready)
            return self.apply(ready)
        backlog, entries = self._with_backlog(ready.committed_entries)
        results = self.store.save_and_apply(ready.hard_state, list(ready.entries), entries)
        self.saves += 1
        self.applies += 1
        self.applied = entries[-1].index
        if ready.hard_state is not None:
            hs = ready.hard_state
            if hs.recovering != self._durable[2]:
                log.info("%s: caught up with the cluster: votes again", self.id)
            self._durable = (hs.term, hs.vote, hs.recovering)
        return results[backlog:]

    def apply(self, ready: Ready) -> Sequence[Any]:
        """Blocking: apply the committed entries (after the backlog) in one store transaction;
        with defer_apply, add them to the backlog instead when nothing asks for them now.
        Returns the results of `ready.committed_entries` (none when deferred)."""
        committed = ready.committed_entries
        if not committed:
            if self._backlog and (self._reads or ready.read_states):
                self._flush_backlog()  # a read waits for the store's applied index
            return ()
        if self._may_defer(committed):
            self._backlog.extend(committed)
            self._backlog_bytes += sum(len(e.data) for e in committed)
            return ()
        backlog, entries = self._with_backlog(committed)
        results = self.store.apply(entries)
        self.applies += 1
        self.applied = entries[-1].index
        return results[backlog:]

    def apply_backlog(self) -> Outcome[T]:
        """Blocking: write the backlog to the store now (one transaction); returns the reads
        this releases. Call between Readies."""
        out: Outcome[T] = Outcome()
        if self._backlog:
            self._flush_backlog()
            self._release_reads(out)
        return out

    def _flush_backlog(self) -> None:
        _, entries = self._with_backlog(())
        self.store.apply(entries)
        self.applies += 1
        self.applied = entries[-1].index

    def _with_backlog(self, committed: Sequence[Entry]) -> tuple[int, list[Entry]]:
        """(number of backlog entries, backlog + committed), emptying the backlog."""
        entries = self._backlog
        n = len(entries)
        entries.extend(committed)
        self._backlog = []
        self._backlog_bytes = 0
        return n, entries

    def _may_defer(self, committed: Sequence[Entry]) -> bool:
        """Whether `committed` can wait in the backlog: nobody needs the store to hold them
        now. Linearizable reads wait for the store's applied index, callers for their results
        (early ones were answered already), membership changes must be in force once the core
        counts them applied, and the backlog is one batch at most."""
        if not self._defer or self._reads:
            return False
        if len(self._backlog) + len(committed) > self._max_backlog:
            return False
        if self._backlog_bytes + sum(len(e.data) for e in committed) > self._max_backlog_bytes:
            return False
        proposals = self._proposals
        return all(e.type == NORMAL and e.index not in proposals for e in committed)

    def answer_committed(self, ready: Ready) -> Outcome[T]:
        """The `early` proposals among `ready.committed_entries`: their callers may be answered
        now, before the entries are applied (call right after `take_ready`). Committed means
        durable on a majority, which is all an acknowledged write promises; a linearizable
        read started after the answer still waits until the store applied its read index."""
        out: Outcome[T] = Outcome()
        proposals = self._proposals
        if not proposals:
            return out
        for e in ready.committed_entries:
            p = proposals.get(e.index)
            if p is not None and p.early and p.term == e.term:
                del proposals[e.index]
                out.completed.append((p.token, e, None))
        return out

    def finish(self, ready: Ready, results: Sequence[Any]) -> Outcome[T]:
        """Match results to proposals, release reads, note role changes, then advance."""
        out: Outcome[T] = Outcome()
        if self._fail_later:
            out.failed.extend(self._fail_later)
            self._fail_later.clear()
        if ready.hard_state is not None:
            self.term = ready.hard_state.term
        if ready.soft_state is not None:
            self._on_soft_state(ready.soft_state.role, ready.soft_state.leader, out)
        if ready.snapshot is not None:
            snap_index = ready.snapshot.meta.index
            for i in [i for i in self._proposals if i <= snap_index]:
                # replaced by the leader's state: whether it was applied is unknown here
                lost = self._proposals.pop(i)
                out.failed.append((lost.token, Unavailable("log replaced by a snapshot; retry")))
        committed = ready.committed_entries
        if committed:
            by_index = _results_by_index(committed, results)
            for e in committed:
                p = self._proposals.pop(e.index, None)
                if p is None:
                    continue
                if p.term != e.term:
                    out.failed.append(
                        (p.token, Unavailable("proposal lost to a leader change; retry"))
                    )
                else:
                    out.completed.append((p.token, e, by_index.get(e.index)))
        for rs in ready.read_states:
            r = self._reads.get(rs.context)
            if r is not None:
                r.index = rs.index
        self._release_reads(out)
        self.raw.advance(ready)
        return out

    def _release_reads(self, out: Outcome[T]) -> None:
        if self._reads:
            for ctx, r in list(self._reads.items()):
                if r.index is not None and r.index <= self.applied:
                    del self._reads[ctx]
                    out.reads.append((r.token, r.index))

    def handle_ready(
        self, send: Callable[[Sequence[Message]], None] = lambda _m: None
    ) -> Outcome[T]:
        """Process every available Ready synchronously (persist, send, apply, advance)."""
        out: Outcome[T] = Outcome()
        while self.has_ready():
            ready = self.take_ready()
            if ready.messages:
                send(ready.messages)
            self.persist(ready)
            if ready.persisted_messages:
                send(ready.persisted_messages)
            o = self.finish(ready, self.apply(ready))
            out.completed += o.completed
            out.failed += o.failed
            out.reads += o.reads
            out.role_changed |= o.role_changed
            out.leader_changed |= o.leader_changed
        return out

    def compaction_index(self, policy: CompactionPolicy) -> int | None:
        """The index to compact the log to now (store.compact), or None if not due.

        Call between Readies (the core reads the log through the store). None while a
        leader's snapshot is stepped but not installed yet: the core's log and configuration
        history then describe that snapshot, not the store, so `conf_at` would name the wrong
        configuration for the compaction marker (sim seed 846944260: a crash before the
        install left a marker with a later configuration than the applied index's)."""
        if self.raw.raft.log.unstable.snapshot is not None:
            return None
        store = self.store
        snap = store.first_index() - 1
        applied = self.applied
        if applied <= snap:
            return None
        log_bytes = store.log_bytes()
        if applied - snap <= policy.max_entries and log_bytes <= policy.max_bytes:
            return None
        in_log = max(store.last_index() - snap, 1)
        avg = max(log_bytes / in_log, 1.0)
        keep = min(policy.keep_entries, int(policy.keep_bytes / avg))
        index = applied - keep
        return index if index > snap else None

    def forget(self, pred: Callable[[T], bool]) -> list[T]:
        """Stop tracking proposals and reads whose token satisfies `pred` (callers past their
        deadline). A forgotten proposal may still be applied; nobody is told. Returns the
        forgotten tokens."""
        tokens: list[T] = []
        for i in [i for i, p in self._proposals.items() if pred(p.token)]:
            tokens.append(self._proposals.pop(i).token)
        for c in [c for c, r in self._reads.items() if pred(r.token)]:
            tokens.append(self._reads.pop(c).token)
        return tokens

    def fail_all(self, err: RkvError) -> list[tuple[T, RkvError]]:
        """Drop every pending proposal and read (shutdown)."""
        failed = [(p.token, err) for p in self._proposals.values()]
        failed += [(r.token, err) for r in self._reads.values()]
        self._proposals.clear()
        self._reads.clear()
        return failed

    # -- internals -------------------------------------------------------------------------

    def _on_soft_state(self, role: Role, leader: NodeId, out: Outcome[T]) -> None:
        if role != self.role:
            out.role_changed = True
            log.info("%s: role %s -> %s", self.id, self.role.name.lower(), role.name.lower())
            if self.role == LEADER and self._proposals:
                # Entries proposed while leader may still commit under the next leader, but we
                # cannot tell: the client retries with the same seq and sessions dedupe it.
                err = Unavailable("leadership lost before the write committed; retry")
                out.failed.extend((p.token, err) for p in self._proposals.values())
                self._proposals.clear()
            self.role = role
        if leader != self.leader:
            out.leader_changed = True
            log.info("%s: leader %s -> %s", self.id, self.leader or "-", leader or "-")
            # Reads forwarded to the old leader may never get an answer.
            lost = [ctx for ctx, r in self._reads.items() if r.index is None]
            if lost:
                err = Unavailable("leader changed during a read; retry")
                for ctx in lost:
                    out.failed.append((self._reads.pop(ctx).token, err))
            self.leader = leader


def _results_by_index(entries: Sequence[Entry], results: Sequence[Any]) -> dict[int, Any]:
    """Map apply results to entry indices: by their `index` attribute when they have one,
    else positionally (one result per entry)."""
    if not results:
        return {}
    first = results[0]
    idx = getattr(first, "index", None)
    if isinstance(idx, int):
        return {r.index: r for r in results}
    return {e.index: r for e, r in zip(entries, results, strict=False)}
