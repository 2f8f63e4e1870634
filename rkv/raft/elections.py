"""Elections of the Raft core (rkv.raft.core.Raft): roles, campaigns, votes, leadership transfer.

Owns: the role transitions (follower, pre-candidate, candidate, leader), starting a
campaign (PreVote, election, transfer), answering vote requests, handing leadership over
(TIMEOUT_NOW), and the recovery of a node whose storage may have forgotten its votes
(rkv.raft.recovery: asking the voters before it votes again).
Must not: do I/O, read clocks or use global randomness (the Raft object's rng only), or
decide replication (replication.py). Functions of the Raft object, bound as its methods
(rkv.raft.core), which holds every attribute.
"""

from __future__ import annotations

from enum import IntEnum
from typing import TYPE_CHECKING

from rkv.raft import quorum
from rkv.raft.errors import LogSafetyError, ProposalDropped
from rkv.raft.progress import Progress
from rkv.raft.recovery import ANSWER_MARK, Recovery
from rkv.raft.types import (
    CANDIDATE,
    FOLLOWER,
    LEADER,
    MT,
    NONE,
    PRE_CANDIDATE,
    Message,
    NodeId,
)

if TYPE_CHECKING:
    from rkv.raft.core import Raft

TRANSFER_CONTEXT = b"transfer"
"""VOTE.context of an election started by TIMEOUT_NOW: voters bypass their leader lease."""


class CampaignKind(IntEnum):
    PRE_ELECTION = 0
    ELECTION = 1
    TRANSFER = 2


# -- role transitions -------------------------------------------------------------------


def become_follower(self: Raft, term: int, leader: NodeId) -> None:
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


def _become_pre_candidate(self: Raft) -> None:
    # term and vote are untouched: a PreVote round changes nobody's durable state
    self.role = PRE_CANDIDATE
    self.leader = NONE
    self.votes = {}
    self.prs = {}
    self._clear_reads()


def _become_candidate(self: Raft) -> None:
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


def _become_leader(self: Raft) -> None:
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


# -- campaigns --------------------------------------------------------------------------


def hup(self: Raft, kind: CampaignKind | None = None) -> None:
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


def _campaign(self: Raft, kind: CampaignKind) -> None:
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


def _handle_vote_request(self: Raft, m: Message) -> None:
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


# -- recovery (rkv.raft.recovery) -------------------------------------------------------


def _tick_recovery(self: Raft) -> None:
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


def _answer_recover(self: Raft, m: Message) -> None:
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


def _on_recover_answer(self: Raft, m: Message, rec: Recovery) -> None:
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


def _maybe_recovered(self: Raft, rec: Recovery) -> None:
    if rec.caught_up((self.log.last_term(), self.log.last_index())):
        self.recovery = None


def _send_timeout_now(self: Raft, to: NodeId) -> None:
    self._send(Message(MT.TIMEOUT_NOW, to=to, frm=self.id, term=self.term))


def transfer_leader(self: Raft, to: NodeId) -> None:
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
