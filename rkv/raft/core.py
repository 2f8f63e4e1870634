"""The Raft role logic: how a node steps messages and ticks as follower, candidate or leader.

Owns: terms and votes, elections (randomized timeouts, PreVote, CheckQuorum, leadership
transfer), replication decisions (what APPEND/SNAPSHOT/HEARTBEAT to send to whom, coalesced
into one flush per Ready), the commit rule, ReadIndex bookkeeping, and membership (which
configuration is in force, and when a change may be proposed). Its outputs accumulate
in `msgs` and `read_states`; RawNode turns them into a Ready. Must not: do I/O, read clocks,
use global randomness, or iterate unordered collections (peers are visited in sorted order).

Its parts are functions of the Raft object, bound as its methods here (so the class, its
attributes and its method names are as before), by concern: elections.py (roles, campaigns,
votes, transfer, recovery), replication.py (appends, progress, commit), readindex.py and
membership.py. This module keeps the state, the helpers, ticks and the dispatch of
messages by role.

Follows etcd-io/raft's raft.go closely; differences are commented where they matter.
"""

from __future__ import annotations

import random
from collections import deque

from rkv.raft import elections, membership, quorum, readindex, replication
from rkv.raft.config import Config
from rkv.raft.elections import TRANSFER_CONTEXT, CampaignKind
from rkv.raft.log import RaftLog
from rkv.raft.progress import REPLICATE, Progress
from rkv.raft.progress import SNAPSHOT as SNAPSHOT_SENT
from rkv.raft.readindex import _PendingRead
from rkv.raft.recovery import Recovery
from rkv.raft.storage import Storage
from rkv.raft.types import (
    FOLLOWER,
    LEADER,
    MT,
    NONE,
    PRE_CANDIDATE,
    ConfState,
    Message,
    NodeId,
    ReadState,
)

__all__ = ["IMMEDIATE_TYPES", "TRANSFER_CONTEXT", "CampaignKind", "Raft"]

IMMEDIATE_TYPES = frozenset(
    {
        MT.APPEND,
        MT.HEARTBEAT,
        MT.SNAPSHOT,
        MT.TIMEOUT_NOW,
        MT.PRE_VOTE,
        MT.READ_INDEX,
        MT.READ_INDEX_RESP,
        MT.RECOVER,
        MT.RECOVER_RESP,
    }
)
"""Messages that depend on no unpersisted state; every other type leaves a Ready as a
persisted message, only once that Ready's write is durable (rkv.raft.rawnode)."""

_VOTE_REQUESTS = frozenset({MT.VOTE, MT.PRE_VOTE})
_FROM_LEADER = frozenset({MT.APPEND, MT.HEARTBEAT, MT.SNAPSHOT})
"""Messages only a leader (of their term) sends."""

_RESPONSE_TO = {
    MT.APPEND: MT.APPEND_RESP,
    MT.HEARTBEAT: MT.APPEND_RESP,
    MT.SNAPSHOT: MT.APPEND_RESP,
    MT.VOTE: MT.VOTE_RESP,
    MT.PRE_VOTE: MT.PRE_VOTE_RESP,
}


class Raft:
    """One node's consensus state machine. Driven by RawNode; not thread-safe."""

    def __init__(self, config: Config, storage: Storage, rng: random.Random) -> None:
        config.validate()
        self.cfg = config
        self.id = config.id
        self.rng = rng
        hs, base = storage.initial_state()
        if base.is_empty() and config.voters:
            base = ConfState(tuple(sorted(config.voters)))
        self.voters: tuple[NodeId, ...] = base.voters
        self.learners: tuple[NodeId, ...] = base.learners
        self._conf_base = base
        """The configuration at the start of the log (a snapshot's, or the bootstrap one)."""
        self._peers: tuple[NodeId, ...] = ()
        self._peers_of: tuple[tuple[NodeId, ...], tuple[NodeId, ...]] | None = None
        """The (voters, learners) tuples `_peers` was computed from (peers() runs per tick)."""
        self._conf_base_index = 0
        self._conf_history: list[tuple[int, ConfState]] = []
        """(index, configuration) of every CONF_CHANGE applied since the log's start."""
        self.removed: set[NodeId] = set()
        """Nodes this node saw removed from its configuration (ids are never reused). Their
        vote requests are ignored (RawNode.step); nobody else's are, whatever our possibly
        stale configuration says about them."""
        self.pending_conf_index = 0
        """A leader proposes no membership change until it applied this index (etcd's rule)."""
        self._transfer_after_apply = False
        self.log = RaftLog(storage)
        self.log.on_rewind = self._on_log_rewound
        if hs.commit:
            if hs.commit > self.log.last_index():
                raise ValueError(
                    f"stored commit {hs.commit} is past the last index {self.log.last_index()}"
                )
            self.log.commit_to(hs.commit)
        if config.applied:
            if config.applied > self.log.committed:
                raise ValueError(
                    f"Config.applied={config.applied} is past the commit index {self.log.committed}"
                )
            if config.applied < self.log.first_index() - 1:
                raise ValueError(
                    f"Config.applied={config.applied} is below the snapshot index "
                    f"{self.log.first_index() - 1}"
                )
            self.log.applied_to(config.applied)
        self.term = hs.term
        self.vote = hs.vote
        self.recovery = Recovery(rng) if hs.recovering else None
        """Set while the storage may have forgotten votes and entries (rkv.raft.recovery)."""
        self.role = FOLLOWER
        self.leader: NodeId = NONE
        self.msgs: list[Message] = []
        self.read_states: list[ReadState] = []
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_timeout = self._draw_timeout()
        self.votes: dict[NodeId, bool] = {}
        self.prs: dict[NodeId, Progress] = {}
        self.lead_transferee: NodeId = NONE
        self.need_flush = False
        # ReadIndex (leader side)
        self._read_round = 0
        self._reads_waiting_commit: list[tuple[bytes, NodeId]] = []
        self._reads_unsent: list[_PendingRead] = []
        self._reads_in_round: deque[_PendingRead] = deque()
        self._round_acks: dict[int, set[NodeId]] = {}
        self._replay_conf_changes()
        if self.recovery is not None and self.recovery.decide(self.id, self.voters) == 0:
            self.recovery = None  # the only voter, or not one: nobody's word is needed

    # -- helpers ----------------------------------------------------------------------------

    def _draw_timeout(self) -> int:
        t = self.cfg.election_tick
        return t + self.rng.randrange(t)

    def _reset_election_timer(self) -> None:
        self.election_elapsed = 0
        self.randomized_timeout = self._draw_timeout()

    def promotable(self) -> bool:
        return self.id in self.voters

    def peers(self) -> tuple[NodeId, ...]:
        """Everyone a leader replicates to: the other voters and the learners."""
        voters, learners = self.voters, self.learners
        of = self._peers_of
        if of is None or of[0] is not voters or of[1] is not learners:
            self._peers = tuple(m for m in sorted(voters + learners) if m != self.id)
            self._peers_of = (voters, learners)
        return self._peers

    def voter_peers(self) -> tuple[NodeId, ...]:
        return tuple(v for v in self.voters if v != self.id)

    def members(self) -> tuple[NodeId, ...]:
        return tuple(sorted(self.voters + self.learners))

    def conf_state(self) -> ConfState:
        return ConfState(self.voters, self.learners)

    def _send(self, m: Message) -> None:
        self.msgs.append(m)

    # -- messages queued for after the write -------------------------------------------------
    #
    # Between two Readies the core queues responses that may leave only once the next write
    # is durable (votes, append and heartbeat acks). Each promises something about the state
    # that write makes durable: "I voted for you in term T", "I hold your entries up to i".
    # If the term changes or the log is rewound before the Ready is taken, the write no
    # longer holds what the queued message promises: the follower would ack, after persisting
    # 28@5, an entry 29@4 that a term-5 leader had truncated (issue 14, sim seed 9120063; the
    # old leader may then count an entry the follower never stored). Such messages are
    # dropped where the state changes, as canonical/raft drops an AppendEntries result whose
    # term changed while the entries were being written (canonical/raft#367). Dropping is
    # always safe (the network may drop any message); the sender retries or has been deposed.

    def _drop_stale_responses(self) -> None:
        """The term just rose: queued responses of an earlier term promise nothing now."""
        term = self.term
        if self.msgs:
            self.msgs = [m for m in self.msgs if m.type in IMMEDIATE_TYPES or m.term >= term]

    def _on_log_rewound(self, after: int) -> None:
        """The log from `after` on was replaced (a conflicting append, or a snapshot restore
        when `after` is the snapshot's index + 1): queued acks of entries there are void."""
        if self.msgs:
            self.msgs = [
                m
                for m in self.msgs
                if not (m.type == MT.APPEND_RESP and not m.reject and m.index >= after)
            ]

    def in_lease(self) -> bool:
        """We heard from a leader within the minimum election timeout."""
        return self.leader != NONE and self.election_elapsed < self.cfg.election_tick

    def committed_in_current_term(self) -> bool:
        return self.log.term(self.log.committed) == self.term

    # -- tick -------------------------------------------------------------------------------

    def tick(self) -> None:
        if self.recovery is not None:
            self._tick_recovery()
        if self.role == LEADER:
            self._tick_leader()
        else:
            self.election_elapsed += 1
            if self.election_elapsed >= self.randomized_timeout and self.promotable():
                self.hup()

    def inert_ticks(self) -> int:
        """How many of the next tick() calls, with no other input between them, would only
        advance elapsed-tick counters: no message, no campaign, no change of role, term, vote,
        log, commit or progress state, so nothing a Ready could carry. Pure (reads only); a
        driver may use it to skip looking for a Ready after such ticks (rkv.sim does). Mirrors
        `tick`, `_tick_leader` and `_tick_recovery`: a change to either must change both
        (tests/raft/test_inert_ticks.py steps every role through ticks against it)."""
        n = 1 << 30
        rec = self.recovery
        if rec is not None and not rec.knows_term:
            # the next tick sends RECOVER when it brings `elapsed` to 0 or to heartbeat_tick
            n = 0 if rec.elapsed < 0 else self.cfg.heartbeat_tick - rec.elapsed - 1
        if self.role == LEADER:
            cfg = self.cfg
            n = min(
                n,
                cfg.heartbeat_tick - self.heartbeat_elapsed - 1,
                cfg.election_tick - self.election_elapsed - 1,
            )
            for peer in self.peers():
                pr = self.prs[peer]
                if pr.state == SNAPSHOT_SENT:
                    n = min(n, cfg.election_tick - pr.snapshot_ticks - 1)
        elif self.promotable():
            n = min(n, self.randomized_timeout - self.election_elapsed - 1)
        return max(n, 0)

    def _tick_leader(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.cfg.election_tick:
            self.election_elapsed = 0
            if self.cfg.check_quorum and not self._quorum_active():
                self.become_follower(self.term, NONE)
                return
            if self.lead_transferee != NONE:
                self.lead_transferee = NONE  # abort: resume normal operation
        for peer in self.peers():
            pr = self.prs[peer]
            if pr.state == SNAPSHOT_SENT:
                pr.snapshot_ticks += 1
                if pr.snapshot_ticks >= self.cfg.election_tick:
                    # the snapshot (or its ack) was probably lost: probe again, which resends
                    pr.become_probe()
                    self.need_flush = True
        if self.heartbeat_elapsed >= self.cfg.heartbeat_tick:
            self.heartbeat_elapsed = 0
            self._bcast_heartbeat()

    def _quorum_active(self) -> bool:
        active = {
            v: (v == self.id or self.prs[v].recent_active) for v in self.voters if v in self.prs
        }
        for peer in self.peers():
            self.prs[peer].recent_active = False
        return quorum.vote_result(self.voters, active) == quorum.VoteResult.WON

    # -- step -------------------------------------------------------------------------------

    def step(self, m: Message) -> None:
        rec = self.recovery
        if m.type == MT.RECOVER:
            self._answer_recover(m)
            return
        if m.type == MT.RECOVER_RESP:
            if rec is not None and rec.is_answer(m.context):
                self._on_recover_answer(m, rec)
            return
        if rec is not None and not rec.knows_term:
            return  # it might acknowledge a leader its earlier self had deposed
        if m.type == MT.READ_INDEX:
            # carries no term (like etcd's MsgReadIndex): only the leader answers it
            if self.role == LEADER:
                self._leader_read(m.context, m.frm)
            return
        if m.term > self.term:
            if m.type in _VOTE_REQUESTS:
                forced = m.context == TRANSFER_CONTEXT
                if not forced and self.cfg.check_quorum and self.in_lease():
                    # a leader is alive: this candidate is disruptive (§6.4.1, §9.6)
                    return
            if m.type == MT.PRE_VOTE or (m.type == MT.PRE_VOTE_RESP and not m.reject):
                pass  # PreVote traffic never changes terms
            elif m.type in _FROM_LEADER:
                self.become_follower(m.term, m.frm)
            else:
                self.become_follower(m.term, NONE)
        elif m.term < self.term:
            resp = _RESPONSE_TO.get(m.type)
            if resp is not None:
                # tell the stale sender our term, so it steps down; change nothing else
                self._send(Message(resp, to=m.frm, frm=self.id, term=self.term, reject=True))
            return

        if m.type in _VOTE_REQUESTS:
            self._handle_vote_request(m)
        elif self.role == LEADER:
            self._step_leader(m)
        elif self.role == FOLLOWER:
            self._step_follower(m)
            if rec is not None:
                self._maybe_recovered(rec)
        else:
            self._step_candidate(m)

    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t in _FROM_LEADER:
            self._transfer_after_apply = False
        if t == MT.APPEND:
            self._reset_election_timer()
            self.leader = m.frm
            self._handle_append(m)
        elif t == MT.HEARTBEAT:
            self._reset_election_timer()
            self.leader = m.frm
            self._handle_heartbeat(m)
        elif t == MT.SNAPSHOT:
            self._reset_election_timer()
            self.leader = m.frm
            self._handle_snapshot(m)
        elif t == MT.TIMEOUT_NOW:
            # only our term's leader sends this (m.term == term here)
            self.hup(CampaignKind.TRANSFER)
        elif t == MT.READ_INDEX_RESP and not m.reject:
            self.read_states.append(ReadState(index=m.index, context=m.context))
        # other types (stale responses of an earlier role) are ignored

    def _step_candidate(self, m: Message) -> None:
        t = m.type
        if t in _FROM_LEADER:
            # a leader of our term exists (m.term == term here)
            self.become_follower(self.term, m.frm)
            self._step_follower(m)
            return
        expected = MT.PRE_VOTE_RESP if self.role == PRE_CANDIDATE else MT.VOTE_RESP
        if t != expected:
            return
        self.votes.setdefault(m.frm, not m.reject)
        result = quorum.vote_result(self.voters, self.votes)
        if result == quorum.VoteResult.WON:
            if self.role == PRE_CANDIDATE:
                self._campaign(CampaignKind.ELECTION)
            else:
                self._become_leader()
        elif result == quorum.VoteResult.LOST:
            self.become_follower(self.term, NONE)

    def _step_leader(self, m: Message) -> None:
        t = m.type
        pr = self.prs.get(m.frm)
        if pr is None:
            return
        if t == MT.APPEND_RESP:
            pr.recent_active = True
            self._handle_append_resp(m, pr)
        elif t == MT.HEARTBEAT_RESP:
            pr.recent_active = True
            pr.probe_sent = False
            if pr.state == REPLICATE and pr.inflights.full():
                # an ack was probably lost; let one more APPEND out rather than stall
                pr.inflights.free_first_one()
            if pr.match < self.log.last_index():
                pr.nudge = True
                self.need_flush = True
            self._handle_read_ack(m)
        # VOTE_RESP/PRE_VOTE_RESP of our own election, TIMEOUT_NOW etc.: nothing to do

    # -- roles, campaigns, votes, leadership transfer, recovery (elections.py) -----------

    become_follower = elections.become_follower
    _become_pre_candidate = elections._become_pre_candidate
    _become_candidate = elections._become_candidate
    _become_leader = elections._become_leader
    hup = elections.hup
    _campaign = elections._campaign
    _handle_vote_request = elections._handle_vote_request
    _tick_recovery = elections._tick_recovery
    _answer_recover = elections._answer_recover
    _on_recover_answer = elections._on_recover_answer
    _maybe_recovered = elections._maybe_recovered
    _send_timeout_now = elections._send_timeout_now
    transfer_leader = elections.transfer_leader

    # -- appends, progress, the commit rule (replication.py) -----------------------------

    _handle_append = replication._handle_append
    _reject_hint = replication._reject_hint
    _handle_heartbeat = replication._handle_heartbeat
    _handle_snapshot = replication._handle_snapshot
    propose = replication.propose
    _append_entries = replication._append_entries
    on_persisted = replication.on_persisted
    _maybe_commit = replication._maybe_commit
    _handle_append_resp = replication._handle_append_resp
    _next_probe = replication._next_probe
    flush = replication.flush
    _maybe_send_append = replication._maybe_send_append
    _send_snapshot = replication._send_snapshot
    _bcast_heartbeat = replication._bcast_heartbeat

    # -- ReadIndex, leader side (readindex.py) -------------------------------------------

    _clear_reads = readindex._clear_reads
    read_index = readindex.read_index
    _leader_read = readindex._leader_read
    _handle_read_ack = readindex._handle_read_ack
    _answer_read = readindex._answer_read

    # -- membership (membership.py) ------------------------------------------------------

    propose_conf_change = membership.propose_conf_change
    conf_at = membership.conf_at
    apply_conf_entry = membership.apply_conf_entry
    after_applied = membership.after_applied
    _replay_conf_changes = membership._replay_conf_changes
    _unapplied_conf_change = membership._unapplied_conf_change
    _switch_conf = membership._switch_conf
