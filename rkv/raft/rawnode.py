"""RawNode: the runtime's handle on the pure Raft core, and the Ready/advance contract.

Owns: turning the core's state changes into `Ready` batches and taking them back with
`advance()`. Must not: do I/O; the caller persists, sends and applies.

The Ready contract (the caller's loop, in this order)::

    node.tick() / node.step(msg) / node.propose(data) / node.read_index(ctx) ...
    if node.has_ready():
        rd = node.ready()
        1. send rd.messages now, in any order relative to step 2 (they depend on nothing
           unpersisted: leader APPEND/HEARTBEAT/SNAPSHOT/TIMEOUT_NOW, PRE_VOTE, READ_INDEX(_RESP)).
           A leader may send entries before its own copy is durable (thesis §10.2.1).
        2. persist, in ONE durable write: rd.snapshot (if any; replaces the log), then
           rd.entries (replacing every stored entry with index >= rd.entries[0].index),
           then rd.hard_state (if any).
        3. only after that write is durable, send rd.persisted_messages (votes, vote and
           append responses, heartbeat responses: anything that depends on the persisted
           term, vote or log). If rd.must_sync is False there was nothing to write and
           they may go at once.
        4. restore the state machine from rd.snapshot (if any), then apply
           rd.committed_entries in order (they are committed: safe to apply even if they
           arrived in this same Ready). A CONF_CHANGE entry changes the membership: the
           core switches to it at advance(); the runtime connects to new members then.
        5. serve rd.read_states once the applied index >= ReadState.index.
        6. node.advance(rd).

- One Ready is outstanding at a time: `ready()` raises RuntimeError until the previous one
  is advanced, and `has_ready()` is False meanwhile. `step()`/`tick()`/`propose()` may be called
  between `ready()` and `advance()`; their effects appear in the next Ready.
- A leader counts its own log toward the commit index only for entries reported durable by
  `advance()`, so in a single-node cluster a proposal commits one Ready after it is persisted.
- Proposals made between two `ready()` calls leave as one APPEND per follower (flushed when the
  Ready is built, or by `flush()`), up to `max_size_per_msg` bytes each.
- Soft state (`rd.soft_state`, role and leader) is set only when it changed. When a leader
  loses leadership (role changes), the caller must fail its pending proposals and reads; they
  may or may not commit, and clients retry (sessions make that safe).
- A READ_INDEX forwarded to a leader that cannot serve it is dropped: callers time out reads.
- Restart: build storage, then `RawNode(Config(..., applied=<state machine's applied index>),
  storage, rng)`. Committed entries after `applied` are delivered again in committed_entries.
"""

from __future__ import annotations

import random

from rkv.raft.confchange import ConfChange
from rkv.raft.config import Config
from rkv.raft.core import IMMEDIATE_TYPES, Raft
from rkv.raft.storage import Storage
from rkv.raft.types import (
    CONF_CHANGE,
    LEADER,
    ConfState,
    HardState,
    Message,
    MessageType,
    NodeId,
    ProgressStatus,
    Ready,
    Role,
    SoftState,
    Status,
)

_VOTE_REQUESTS = frozenset({MessageType.VOTE, MessageType.PRE_VOTE})


class RawNode:
    def __init__(self, config: Config, storage: Storage, rng: random.Random) -> None:
        self.raft = Raft(config, storage, rng)
        self._prev_soft = SoftState(leader=self.raft.leader, role=self.raft.role)
        self._prev_hard = self._hard_state()
        self._outstanding: Ready | None = None

    @property
    def id(self) -> NodeId:
        return self.raft.id

    @property
    def term(self) -> int:
        """The current term (cheap, unlike `status()`: callers may ask per proposal)."""
        return self.raft.term

    def _hard_state(self) -> HardState:
        r = self.raft
        return HardState(
            term=r.term, vote=r.vote, commit=r.log.committed, recovering=r.recovery is not None
        )

    def _soft_state(self) -> SoftState:
        return SoftState(leader=self.raft.leader, role=self.raft.role)

    # -- inputs -----------------------------------------------------------------------------

    def tick(self) -> None:
        self.raft.tick()

    def campaign(self) -> None:
        """Start an election now (PreVote first if configured), as if the timer fired."""
        self.raft.hup()

    def step(self, msg: Message) -> None:
        """Feed a message from a peer. Messages to another id are ignored, and so are vote
        requests from a node this node saw removed (`Raft.removed`): a removed node that never
        heard of its removal must not disrupt the cluster. Everything else is taken from
        anyone, by term, as Raft says, vote requests of nodes that are learners or unknown in
        our configuration included: our configuration may be stale, and the sender may be a
        voter of the newer one whose election needs our vote (ignoring it deadlocked a
        two-voter cluster whose other voter lagged a promotion behind: sim seed 877307055,
        3 nodes, --membership). A leader we do not know of yet is how we learn the newer
        configuration."""
        r = self.raft
        if msg.to != r.id or msg.frm == r.id:
            return
        if msg.type in _VOTE_REQUESTS and msg.frm in r.removed:
            return
        r.step(msg)

    def propose(self, data: bytes) -> int:
        """Append a command; returns its log index. Raises ProposalDropped if not leader or
        while a leadership transfer is under way."""
        return self.raft.propose(data)

    def read_index(self, ctx: bytes) -> None:
        """Request a linearizable read; a ReadState(index, ctx) appears once it is safe.

        Raises ProposalDropped when no leader is known."""
        self.raft.read_index(ctx)

    def propose_conf_change(self, cc: ConfChange) -> int:
        """Append a membership change (leader only); returns its log index. It is in force on
        each node once applied. Raises ProposalDropped (not leader, transfer under way),
        ConfChangeRefused (another change pending, or no entry of this term committed yet:
        retry later) or ConfChangeError (the change does not fit the configuration)."""
        return self.raft.propose_conf_change(cc)

    def conf_state(self) -> ConfState:
        """The configuration in force (as of the applied index)."""
        return self.raft.conf_state()

    def conf_at(self, index: int) -> ConfState:
        """The configuration in force at an applied index (for snapshots taken there)."""
        return self.raft.conf_at(index)

    def transfer_leader(self, to: NodeId) -> None:
        """Hand leadership to voter `to` (leader only; raises ProposalDropped otherwise)."""
        self.raft.transfer_leader(to)

    def flush(self) -> None:
        """Build now the messages that would otherwise wait for the next ready()."""
        self.raft.flush()

    # -- Ready ------------------------------------------------------------------------------

    def has_ready(self) -> bool:
        if self._outstanding is not None:
            return False
        r = self.raft
        if r.msgs or r.need_flush or r.read_states:
            return True
        log = r.log
        u = log.unstable
        if u.in_progress < u.offset + len(u.entries):
            return True
        # a snapshot not handed out yet (u.next_snapshot()), or, without an unstable snapshot,
        # committed entries to apply (log.has_next_committed_entries()), inlined
        if u.snapshot is not None:
            if not u.snapshot_in_progress:
                return True
        elif log.committed > log.applied:
            return True
        if r.role == LEADER and r._reads_unsent:
            return True
        # soft and hard state, compared field by field (this runs after every input)
        soft, hard = self._prev_soft, self._prev_hard
        return (
            r.leader != soft.leader
            or r.role != soft.role
            or r.term != hard.term
            or r.vote != hard.vote
            or log.committed != hard.commit
            or (r.recovery is not None) != hard.recovering
        )

    def ready(self) -> Ready:
        if self._outstanding is not None:
            raise RuntimeError("advance() the previous Ready before asking for another")
        r = self.raft
        r.flush()
        log = r.log
        prev_soft, prev_hard = self._prev_soft, self._prev_hard
        soft = (
            prev_soft
            if r.leader == prev_soft.leader and r.role == prev_soft.role
            else self._soft_state()
        )
        hard = (
            prev_hard
            if r.term == prev_hard.term
            and r.vote == prev_hard.vote
            and log.committed == prev_hard.commit
            and (r.recovery is not None) == prev_hard.recovering
            else self._hard_state()
        )
        msgs, r.msgs = r.msgs, []
        immediate = IMMEDIATE_TYPES  # a module global, so a teeth test can widen it
        now: list[Message] = []
        later: list[Message] = []
        for m in msgs:
            (now if m.type in immediate else later).append(m)
        committed = (
            tuple(log.next_committed_entries(r.cfg.max_committed_size_per_ready))
            if log.has_next_committed_entries()
            else ()
        )
        rd = Ready(
            soft_state=None if soft is prev_soft else soft,
            hard_state=None if hard is prev_hard else hard,
            entries=tuple(log.unstable.next_entries()),
            snapshot=log.unstable.next_snapshot(),
            messages=tuple(now),
            persisted_messages=tuple(later),
            committed_entries=committed,
            read_states=tuple(r.read_states),
        )
        r.read_states = []
        log.unstable.accept_in_progress()
        self._prev_soft = soft
        self._prev_hard = hard
        self._outstanding = rd
        return rd

    def advance(self, rd: Ready) -> None:
        """The caller persisted, sent and applied `rd` as the contract says."""
        if rd is not self._outstanding:
            raise RuntimeError("advance() must be given the Ready returned by the last ready()")
        self._outstanding = None
        log = self.raft.log
        if rd.snapshot is not None:
            log.stable_snap_to(rd.snapshot.meta.index)
            log.applied_to(rd.snapshot.meta.index)
        if rd.entries:
            last = rd.entries[-1]
            log.stable_to(last.index, last.term)
        if rd.committed_entries:
            for e in rd.committed_entries:
                if e.type == CONF_CHANGE:
                    self.raft.apply_conf_entry(e)
            log.applied_to(rd.committed_entries[-1].index)
            self.raft.after_applied()
        if rd.entries or rd.snapshot is not None:
            self.raft.on_persisted()

    # -- observation ------------------------------------------------------------------------

    def status(self) -> Status:
        r = self.raft
        log = r.log
        progress: tuple[ProgressStatus, ...] = ()
        if r.role == Role.LEADER:
            progress = tuple(
                ProgressStatus(
                    id=v,
                    match=pr.match,
                    next=pr.next,
                    state=pr.state.name,
                    inflight=len(pr.inflights),
                    paused=pr.is_paused(),
                )
                for v, pr in sorted(r.prs.items())
            )
        return Status(
            id=r.id,
            term=r.term,
            vote=r.vote,
            role=r.role,
            leader=r.leader,
            commit=log.committed,
            applied=log.applied,
            last_index=log.last_index(),
            first_index=log.first_index(),
            lead_transferee=r.lead_transferee,
            voters=r.voters,
            learners=r.learners,
            progress=progress,
            recovering=r.recovery is not None,
        )
