"""The Raft role logic: how a node steps messages and ticks as follower, candidate or leader.

Owns: terms and votes, elections (randomized timeouts, PreVote, CheckQuorum, leadership
transfer), replication decisions (what APPEND/SNAPSHOT/HEARTBEAT to send to whom, coalesced
into one flush per Ready), the commit rule, ReadIndex bookkeeping, and membership (which
configuration is in force, and when a change may be proposed). Its outputs accumulate
in `msgs` and `read_states`; RawNode turns them into a Ready. Must not: do I/O, read clocks,
use global randomness, or iterate unordered collections (peers are visited in sorted order).

Follows etcd-io/raft's raft.go closely; differences are commented where they matter.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from enum import IntEnum

from rkv.raft import confchange, quorum
from rkv.raft.confchange import ConfChange, ConfChangeEntry, ConfChangeError
from rkv.raft.config import Config
from rkv.raft.errors import ConfChangeRefused, LogSafetyError, ProposalDropped
from rkv.raft.log import RaftLog
from rkv.raft.progress import PROBE, REPLICATE, Progress
from rkv.raft.progress import SNAPSHOT as SNAPSHOT_SENT
from rkv.raft.recovery import ANSWER_MARK, Recovery
from rkv.raft.storage import Storage
from rkv.raft.types import (
    CANDIDATE,
    CONF_CHANGE,
    FOLLOWER,
    LEADER,
    MT,
    NONE,
    NORMAL,
    PRE_CANDIDATE,
    ConfState,
    Entry,
    EntryType,
    Message,
    NodeId,
    ReadState,
    Snapshot,
)

TRANSFER_CONTEXT = b"transfer"
"""VOTE.context of an election started by TIMEOUT_NOW: voters bypass their leader lease."""


class CampaignKind(IntEnum):
    PRE_ELECTION = 0
    ELECTION = 1
    TRANSFER = 2


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


@dataclass(slots=True)
class _PendingRead:
    ctx: bytes
    frm: NodeId
    index: int
    round: int = 0


def _round_ctx(round_id: int) -> bytes:
    return round_id.to_bytes(8, "big")


def _round_of(ctx: bytes) -> int | None:
    return int.from_bytes(ctx, "big") if len(ctx) == 8 else None


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

    # -- role transitions -------------------------------------------------------------------

    def become_follower(self, term: int, leader: NodeId) -> None:
        # The election timer is deliberately not reset here (checklist: only on granting a
        # vote, hearing the current leader, or starting an election).
        if term != self.term:
            self.term = term
            self.vote = NONE
            self._transfer_after_apply = False
            self._drop_stale_responses()
        self.role = FOLLOWER
        self.leader = leader
        self.lead_transferee = NONE
        self.votes = {}
        self.prs = {}
        self._clear_reads()

    def _become_pre_candidate(self) -> None:
        # term and vote are untouched: a PreVote round changes nobody's durable state
        self.role = PRE_CANDIDATE
        self.leader = NONE
        self.votes = {}
        self.prs = {}
        self._clear_reads()

    def _become_candidate(self) -> None:
        if self.role == LEADER:  # pragma: no cover - guarded by callers
            raise LogSafetyError("a leader cannot become candidate")
        self.term += 1
        self.vote = self.id
        self._drop_stale_responses()
        self.role = CANDIDATE
        self.leader = NONE
        self.votes = {}
        self.prs = {}
        self._clear_reads()

    def _become_leader(self) -> None:
        self.role = LEADER
        self.leader = self.id
        self.lead_transferee = NONE
        self.heartbeat_elapsed = 0
        self.election_elapsed = 0
        self.votes = {}
        last = self.log.last_index()
        cap = self.cfg.max_inflight_msgs
        self.prs = {m: Progress(last + 1, cap) for m in self.members()}
        # a change inherited in the log may still be uncommitted: none until all is applied
        self.pending_conf_index = last
        self._transfer_after_apply = False
        me = self.prs.get(self.id)
        if me is not None:
            me.match = self.log.persisted_last()
            me.recent_active = True
            me.become_replicate()
            me.next = last + 1
        self._clear_reads()
        # the no-op: commits earlier-term entries and enables ReadIndex (Figure 8, §6.4)
        self._append_entries([b""])

    def _clear_reads(self) -> None:
        self._reads_waiting_commit = []
        self._reads_unsent = []
        self._reads_in_round = deque()
        self._round_acks = {}

    # -- campaigns --------------------------------------------------------------------------

    def hup(self, kind: CampaignKind | None = None) -> None:
        """Start an election (a PreVote round first when configured)."""
        if self.role == LEADER or not self.promotable() or self.recovery is not None:
            return
        if self._unapplied_conf_change():
            # The configuration may be about to change under us: a candidate counting votes
            # with the old one could win without a majority of the new one. Wait for apply.
            if kind == CampaignKind.TRANSFER:
                self._transfer_after_apply = True
            return
        if kind is None:
            kind = CampaignKind.PRE_ELECTION if self.cfg.pre_vote else CampaignKind.ELECTION
        self._campaign(kind)

    def _campaign(self, kind: CampaignKind) -> None:
        if kind == CampaignKind.PRE_ELECTION:
            self._become_pre_candidate()
            vote_type, term = MT.PRE_VOTE, self.term + 1
        else:
            self._become_candidate()
            vote_type, term = MT.VOTE, self.term
        self._reset_election_timer()
        self.votes[self.id] = True
        result = quorum.vote_result(self.voters, self.votes)
        if result == quorum.VoteResult.WON:
            if kind == CampaignKind.PRE_ELECTION:
                self._campaign(CampaignKind.ELECTION)
            else:
                self._become_leader()
            return
        ctx = TRANSFER_CONTEXT if kind == CampaignKind.TRANSFER else b""
        last, last_term = self.log.last_index(), self.log.last_term()
        for peer in self.voter_peers():
            self._send(
                Message(
                    vote_type,
                    to=peer,
                    frm=self.id,
                    term=term,
                    index=last,
                    log_term=last_term,
                    context=ctx,
                )
            )

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

    def _handle_vote_request(self, m: Message) -> None:
        pre = m.type == MT.PRE_VOTE
        rec = self.recovery
        if rec is not None and not rec.may_vote(m.term, (m.log_term, m.index)):
            # a term its earlier self may have voted in, or a candidate that may lack entries
            # its earlier self helped commit (rkv.raft.recovery)
            can_vote = False
        elif pre and self.in_lease():
            # PreVote is granted only if no leader was heard within the election timeout
            can_vote = False
        else:
            can_vote = (
                self.vote == m.frm
                or (self.vote == NONE and self.leader == NONE)
                or (pre and m.term > self.term)
            )
        resp = MT.PRE_VOTE_RESP if pre else MT.VOTE_RESP
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            self._send(Message(resp, to=m.frm, frm=self.id, term=m.term))
            if not pre:
                self._reset_election_timer()
                self.vote = m.frm
        else:
            self._send(Message(resp, to=m.frm, frm=self.id, term=self.term, reject=True))

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

    # -- follower handlers ------------------------------------------------------------------

    def _handle_append(self, m: Message) -> None:
        log = self.log
        if m.index < log.committed:
            self._send(
                Message(MT.APPEND_RESP, to=m.frm, frm=self.id, term=self.term, index=log.committed)
            )
            return
        last_new = log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last_new is not None:
            self._send(
                Message(MT.APPEND_RESP, to=m.frm, frm=self.id, term=self.term, index=last_new)
            )
            return
        hint, hint_term = self._reject_hint(m.index)
        self._send(
            Message(
                MT.APPEND_RESP,
                to=m.frm,
                frm=self.id,
                term=self.term,
                index=m.index,
                reject=True,
                reject_hint=hint,
                log_term=hint_term,
            )
        )

    def _reject_hint(self, rejected: int) -> tuple[int, int]:
        """(first index of the conflicting term, that term), or (last index, 0) if shorter.

        Entries at or below commit match the leader's, so the search starts after commit.
        """
        log = self.log
        last = log.last_index()
        if rejected > last:
            return last, 0
        t = log.term(rejected)
        assert t is not None  # rejected > committed >= snapshot index
        first = log.first_index_of_term(t, log.committed + 1, rejected)
        return first, t

    def _handle_heartbeat(self, m: Message) -> None:
        # The leader sends min(commit, our match), which we hold durably. Also while this
        # storage recovers: it follows only leaders of terms above every answered one, which
        # never counted a match of its earlier self (rkv.raft.recovery).
        self.log.commit_to(min(m.commit, self.log.last_index()))
        self._send(
            Message(MT.HEARTBEAT_RESP, to=m.frm, frm=self.id, term=self.term, context=m.context)
        )

    def _handle_snapshot(self, m: Message) -> None:
        snap = m.snapshot
        if snap is None:
            return
        log = self.log
        idx, term = snap.meta.index, snap.meta.term
        if idx > log.committed:
            if log.match_term(idx, term):
                # we already have the snapshot's last entry: just fast-forward the commit
                log.commit_to(idx)
            else:
                log.restore(snap)
                if snap.meta.voters:
                    self._conf_base = snap.meta.conf
                    self._conf_base_index = idx
                    self._conf_history = []
                    self._switch_conf(snap.meta.conf)
                self._send(
                    Message(
                        MT.APPEND_RESP,
                        to=m.frm,
                        frm=self.id,
                        term=self.term,
                        index=log.last_index(),
                    )
                )
                return
        self._send(
            Message(MT.APPEND_RESP, to=m.frm, frm=self.id, term=self.term, index=log.committed)
        )

    # -- recovery (rkv.raft.recovery) -------------------------------------------------------

    def _tick_recovery(self) -> None:
        rec = self.recovery
        assert rec is not None
        if rec.knows_term:
            return  # every voter answered: only catching up is left
        rec.elapsed += 1
        # Every heartbeat: a new cluster's nodes then all finish within a few heartbeats of
        # each other, before any election timeout, so none is left waiting for a leader's
        # answer when that leader is lost right after the first election.
        if rec.elapsed and rec.elapsed < self.cfg.heartbeat_tick:
            return
        rec.elapsed = 0
        for peer in self.voter_peers():
            self._send(Message(MT.RECOVER, to=peer, frm=self.id, term=self.term, context=rec.nonce))

    def _answer_recover(self, m: Message) -> None:
        if self.role == LEADER and m.frm in self.prs:
            # Its log is new: what we knew it to match is gone (a stale match would make us
            # ignore its rejections as stale, and it would never catch up). Probe afresh.
            self.prs[m.frm] = Progress(self.log.last_index() + 1, self.cfg.max_inflight_msgs)
        self._send(
            Message(
                MT.RECOVER_RESP,
                to=m.frm,
                frm=self.id,
                term=self.term,
                log_term=self.log.last_term(),
                index=self.log.last_index(),
                context=m.context + ANSWER_MARK,
            )
        )

    def _on_recover_answer(self, m: Message, rec: Recovery) -> None:
        if rec.knows_term:
            return
        rec.on_answer(m.frm, m.term, (m.log_term, m.index))
        term = rec.decide(self.id, self.voters)
        if term is None:
            return
        if term == 0:
            self.recovery = None  # nobody ever left term 0: nothing to forget
            return
        if rec.first_term() > self.term:
            # Acknowledge only leaders of terms above every answered one: a leader of T or
            # older may count an acknowledgement of our earlier self (rkv.raft.recovery).
            self.become_follower(rec.first_term(), NONE)
        self._maybe_recovered(rec)

    def _maybe_recovered(self, rec: Recovery) -> None:
        if rec.caught_up((self.log.last_term(), self.log.last_index())):
            self.recovery = None

    # -- leader -----------------------------------------------------------------------------

    def propose(self, data: bytes) -> int:
        if self.role != LEADER:
            raise ProposalDropped("not the leader", self.leader)
        if self.lead_transferee != NONE:
            raise ProposalDropped("leadership transfer in progress", self.id)
        return self._append_entries([data])

    def _append_entries(self, datas: list[bytes], type: EntryType = NORMAL) -> int:
        last = self.log.last_index()
        term = self.term
        ents = [
            Entry(term=term, index=last + 1 + k, data=d, type=type) for k, d in enumerate(datas)
        ]
        last = self.log.append(ents)
        # followers get these at the next flush (one APPEND per follower per Ready); our own
        # copy counts toward commit only once advance() reports it durable
        self.need_flush = True
        return last

    def on_persisted(self) -> None:
        """Called by RawNode.advance() after entries became durable."""
        if self.role != LEADER:
            return
        me = self.prs.get(self.id)
        if me is not None and me.maybe_update(self.log.persisted_last()):
            self._maybe_commit()

    def _maybe_commit(self) -> bool:
        match = {v: pr.match for v, pr in self.prs.items()}
        mci = quorum.committed_index(self.voters, match)
        if mci <= self.log.committed or self.log.term(mci) != self.term:
            # only current-term entries are committed by counting replicas (Figure 8)
            return False
        self.log.commit_to(mci)
        self.need_flush = True
        if self._reads_waiting_commit:
            waiting, self._reads_waiting_commit = self._reads_waiting_commit, []
            for ctx, frm in waiting:
                self._leader_read(ctx, frm)
        return True

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

    def _handle_append_resp(self, m: Message, pr: Progress) -> None:
        if m.reject:
            next_hint = self._next_probe(m)
            if pr.maybe_decr_to(m.index, next_hint):
                self.need_flush = True
            return
        updated = pr.maybe_update(m.index)
        if not updated and not (pr.state == PROBE and pr.match == m.index):
            return  # stale
        if pr.state == PROBE:
            pr.become_replicate()
        elif pr.state == SNAPSHOT_SENT:
            if pr.match + 1 >= self.log.first_index():
                pr.become_probe()
                pr.become_replicate()
        else:
            pr.inflights.free_le(m.index)
        self._maybe_commit()
        self.need_flush = True
        if m.frm == self.lead_transferee and pr.match == self.log.last_index():
            self._send_timeout_now(m.frm)

    def _next_probe(self, m: Message) -> int:
        """Where to probe next after a rejection, skipping whole terms."""
        if m.log_term == 0:
            return m.reject_hint + 1
        found = self.log.last_index_with_term_at_most(m.log_term, m.index)
        if found is not None and found[1] == m.log_term:
            # we have the follower's conflicting term up to found[0]: it matches there
            return found[0] + 1
        return m.reject_hint

    def flush(self) -> None:
        """Send what proposals, acks and commits made due: at most one batch per follower."""
        if self.role != LEADER:
            self.need_flush = False
            return
        if self.need_flush:
            self.need_flush = False
            for peer in self.peers():
                while self._maybe_send_append(peer):
                    pass
        if self._reads_unsent:
            self._read_round += 1
            rid = self._read_round
            for r in self._reads_unsent:
                r.round = rid
            self._reads_in_round.extend(self._reads_unsent)
            self._reads_unsent = []
            self._round_acks[rid] = {self.id}
            self._bcast_heartbeat(_round_ctx(rid))

    def _maybe_send_append(self, to: NodeId) -> bool:
        """Send one APPEND (or SNAPSHOT) to `to` if due; True if another may follow at once."""
        pr = self.prs[to]
        if pr.is_paused():
            return False
        log = self.log
        last = log.last_index()
        prev = pr.next - 1
        prev_term = log.term(prev)
        if prev_term is None:
            self._send_snapshot(to, pr)
            return False
        # prev >= first_index - 1 here, so nothing below is compacted
        ents = log.slice(pr.next, last + 1, self.cfg.max_size_per_msg)
        commit = log.committed
        if not ents:
            lagging = pr.sent_commit < min(commit, pr.match)
            probing = pr.state == PROBE and pr.match < prev
            if not (lagging or probing or pr.nudge):
                return False
        pr.nudge = False
        self._send(
            Message(
                MT.APPEND,
                to=to,
                frm=self.id,
                term=self.term,
                index=prev,
                log_term=prev_term,
                entries=tuple(ents),
                commit=commit,
            )
        )
        sent_last = prev + len(ents)
        pr.sent_commit = max(pr.sent_commit, min(commit, sent_last))
        if ents:
            pr.sent_entries(sent_last)
            return pr.state == REPLICATE and sent_last < last
        if pr.state == PROBE:
            pr.probe_sent = True
        return False

    def _send_snapshot(self, to: NodeId, pr: Progress) -> None:
        snap: Snapshot = self.log.snapshot()
        if snap.is_empty():  # pragma: no cover - storage compacted without a snapshot
            raise LogSafetyError(f"follower {to} needs compacted entries but no snapshot exists")
        pr.become_snapshot(snap.meta.index)
        self._send(
            Message(
                MT.SNAPSHOT,
                to=to,
                frm=self.id,
                term=self.term,
                index=snap.meta.index,
                log_term=snap.meta.term,
                snapshot=snap,
            )
        )

    def _bcast_heartbeat(self, ctx: bytes | None = None) -> None:
        if ctx is None:
            # re-confirm the newest unconfirmed read round, in case its heartbeats were lost
            ctx = _round_ctx(self._read_round) if self._reads_in_round else b""
        commit = self.log.committed
        for peer in self.peers():
            pr = self.prs[peer]
            self._send(
                Message(
                    MT.HEARTBEAT,
                    to=peer,
                    frm=self.id,
                    term=self.term,
                    commit=min(pr.match, commit),
                    context=ctx,
                )
            )

    def _send_timeout_now(self, to: NodeId) -> None:
        self._send(Message(MT.TIMEOUT_NOW, to=to, frm=self.id, term=self.term))

    def transfer_leader(self, to: NodeId) -> None:
        if self.role != LEADER:
            raise ProposalDropped("not the leader", self.leader)
        if to not in self.voters:
            raise ValueError(f"cannot transfer leadership to {to!r}: not a voter")
        if to == self.id or to == self.lead_transferee:
            return
        self.lead_transferee = to
        # the transfer gets one full election timeout before it is aborted
        self.election_elapsed = 0
        if self.prs[to].match == self.log.last_index():
            self._send_timeout_now(to)
        else:
            self.need_flush = True

    # -- membership (single-server changes, thesis §4.1; in force once applied, as in etcd) ---
    #
    # Safety rests on three rules: (1) a leader proposes a change only after it applied every
    # earlier one (pending_conf_index), so configurations in force differ by at most one voter;
    # (2) it proposes one only after it committed an entry of its own term (otherwise a change
    # left uncommitted by an earlier leader could conflict with it: Ongaro, raft-dev 2015);
    # (3) nobody campaigns while a committed change is not applied yet. The simulator checks
    # the consequences (rkv/sim, docs/sim.md).

    def propose_conf_change(self, cc: ConfChange) -> int:
        if self.role != LEADER:
            raise ProposalDropped("not the leader", self.leader)
        if self.lead_transferee != NONE:
            raise ProposalDropped("leadership transfer in progress", self.id)
        if self.pending_conf_index > self.log.applied:
            raise ConfChangeRefused("another membership change is not applied yet; retry")
        if not self.committed_in_current_term():
            raise ConfChangeRefused("the new leader has not committed an entry yet; retry")
        conf = confchange.apply_change(self.conf_state(), cc)
        data = confchange.encode(ConfChangeEntry(cc, conf))
        index = self._append_entries([data], CONF_CHANGE)
        self.pending_conf_index = index
        return index

    def conf_at(self, index: int) -> ConfState:
        """The configuration in force once `index` is applied (index must not be below the
        log's start, nor past the applied index)."""
        conf = self._conf_base
        for i, c in self._conf_history:
            if i > index:
                break
            conf = c
        return conf

    def apply_conf_entry(self, e: Entry) -> None:
        """The runtime applied CONF_CHANGE entry `e` (called by RawNode.advance, in order)."""
        if e.index <= self._conf_base_index:
            # A Ready taken before a snapshot was stepped is being advanced: the snapshot's
            # configuration is newer than this entry's already.
            return
        try:
            ce = confchange.decode(e.data)
        except ConfChangeError as err:
            raise LogSafetyError(
                f"committed conf change at {e.index} is malformed: {err}"
            ) from None
        self._conf_history.append((e.index, ce.conf))
        self._switch_conf(ce.conf)

    def after_applied(self) -> None:
        """Called by RawNode.advance once entries were applied: resume a deferred transfer."""
        if self._transfer_after_apply and not self._unapplied_conf_change():
            self._transfer_after_apply = False
            self.hup(CampaignKind.TRANSFER)

    def _replay_conf_changes(self) -> None:
        """After a restart: the configuration as of the applied index, from the log."""
        log = self.log
        self._conf_base_index = log.first_index() - 1
        lo, hi = log.first_index(), log.applied + 1
        while lo < hi:
            chunk = log.slice(lo, hi, 16 << 20)
            for e in chunk:
                if e.type == CONF_CHANGE:
                    self.apply_conf_entry(e)
            lo = chunk[-1].index + 1

    def _unapplied_conf_change(self) -> bool:
        log = self.log
        if log.applied < log.first_index() - 1:
            return True  # a snapshot (and its configuration) is not applied yet
        lo, hi = log.applied + 1, log.committed + 1
        while lo < hi:
            chunk = log.slice(lo, hi, 16 << 20)
            if any(e.type == CONF_CHANGE for e in chunk):
                return True
            lo = chunk[-1].index + 1
        return False

    def _switch_conf(self, conf: ConfState) -> None:
        new = set(conf.voters + conf.learners)
        self.removed |= set(self.voters + self.learners) - new
        self.removed -= new
        self.voters, self.learners = conf.voters, conf.learners
        if self.role != LEADER:
            if self.role != FOLLOWER and not self.promotable():
                self.become_follower(self.term, NONE)
            return
        members = set(self.members())
        for m in list(self.prs):
            if m not in members:
                del self.prs[m]
        cap = self.cfg.max_inflight_msgs
        for m in self.members():
            if m not in self.prs:
                self.prs[m] = Progress(self.log.last_index() + 1, cap)
        if self.lead_transferee != NONE and self.lead_transferee not in self.voters:
            self.lead_transferee = NONE
        if self.id not in self.voters:
            # Removed (the change is committed and applied): hand over to the most caught-up
            # voter at once rather than leave the cluster to an election timeout.
            best = max(self.voter_peers(), key=lambda v: (self.prs[v].match, v), default=NONE)
            if best != NONE and self.prs[best].match == self.log.last_index():
                self._send_timeout_now(best)
            self.become_follower(self.term, NONE)
            return
        self._maybe_commit()
        self.need_flush = True

    # -- ReadIndex (leader side) ------------------------------------------------------------

    def read_index(self, ctx: bytes) -> None:
        if self.role == LEADER:
            self._leader_read(ctx, self.id)
        elif self.leader != NONE:
            self._send(Message(MT.READ_INDEX, to=self.leader, frm=self.id, context=ctx))
        else:
            raise ProposalDropped("no leader known", NONE)

    def _leader_read(self, ctx: bytes, frm: NodeId) -> None:
        if not self.committed_in_current_term():
            # our commit index may be stale until our own term's entry commits (§6.4 step 1)
            self._reads_waiting_commit.append((ctx, frm))
            return
        index = self.log.committed
        if len(self.voters) == 1:
            self._answer_read(_PendingRead(ctx, frm, index))
            return
        self._reads_unsent.append(_PendingRead(ctx, frm, index))

    def _handle_read_ack(self, m: Message) -> None:
        rid = _round_of(m.context)
        if rid is None:
            return
        acks = self._round_acks.get(rid)
        if acks is None:
            return
        acks.add(m.frm)
        granted = {v: True for v in sorted(acks)}
        if quorum.vote_result(self.voters, granted) != quorum.VoteResult.WON:
            return
        # a quorum confirmed leadership after every read of rounds <= rid arrived
        q = self._reads_in_round
        while q and q[0].round <= rid:
            self._answer_read(q.popleft())
        for r in [r for r in self._round_acks if r <= rid]:
            del self._round_acks[r]

    def _answer_read(self, r: _PendingRead) -> None:
        if r.frm == self.id:
            self.read_states.append(ReadState(index=r.index, context=r.ctx))
        else:
            self._send(
                Message(
                    MT.READ_INDEX_RESP,
                    to=r.frm,
                    frm=self.id,
                    term=self.term,
                    index=r.index,
                    context=r.ctx,
                )
            )
