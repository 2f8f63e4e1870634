"""Replication of the Raft core (rkv.raft.core.Raft): appends, progress, the commit rule.

Owns: the follower's handling of APPEND, HEARTBEAT and SNAPSHOT (with rejection hints);
the leader's proposals, its per-peer progress (probe, pipelining, snapshots), what
APPEND/SNAPSHOT/HEARTBEAT to send to whom (coalesced into one flush per Ready), and the
commit rule.
Must not: do I/O or read clocks; it only queues messages (Raft.msgs). Functions of the
Raft object, bound as its methods (rkv.raft.core), which holds every attribute.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rkv.raft import quorum
from rkv.raft.errors import LogSafetyError, ProposalDropped
from rkv.raft.progress import PROBE, REPLICATE, Progress
from rkv.raft.progress import SNAPSHOT as SNAPSHOT_SENT
from rkv.raft.readindex import _round_ctx
from rkv.raft.types import (
    LEADER,
    MT,
    NONE,
    NORMAL,
    Entry,
    EntryType,
    Message,
    NodeId,
    Snapshot,
)

if TYPE_CHECKING:
    from rkv.raft.core import Raft


# -- follower handlers ------------------------------------------------------------------


def _handle_append(self: Raft, m: Message) -> None:
    log = self.log
    if m.index < log.committed:
        self._send(
            Message(MT.APPEND_RESP, to=m.frm, frm=self.id, term=self.term, index=log.committed)
        )
        return
    last_new = log.maybe_append(m.index, m.log_term, m.commit, m.entries)
    if last_new is not None:
        self._send(Message(MT.APPEND_RESP, to=m.frm, frm=self.id, term=self.term, index=last_new))
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


def _reject_hint(self: Raft, rejected: int) -> tuple[int, int]:
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


def _handle_heartbeat(self: Raft, m: Message) -> None:
    # The leader sends min(commit, our match), which we hold durably. Also while this
    # storage recovers: it follows only leaders of terms above every answered one, which
    # never counted a match of its earlier self (rkv.raft.recovery).
    self.log.commit_to(min(m.commit, self.log.last_index()))
    self._send(Message(MT.HEARTBEAT_RESP, to=m.frm, frm=self.id, term=self.term, context=m.context))


def _handle_snapshot(self: Raft, m: Message) -> None:
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
    self._send(Message(MT.APPEND_RESP, to=m.frm, frm=self.id, term=self.term, index=log.committed))


# -- leader -----------------------------------------------------------------------------


def propose(self: Raft, data: bytes) -> int:
    if self.role != LEADER:
        raise ProposalDropped("not the leader", self.leader)
    if self.lead_transferee != NONE:
        raise ProposalDropped("leadership transfer in progress", self.id)
    return self._append_entries([data])


def _append_entries(self: Raft, datas: list[bytes], type: EntryType = NORMAL) -> int:
    last = self.log.last_index()
    term = self.term
    ents = [Entry(term=term, index=last + 1 + k, data=d, type=type) for k, d in enumerate(datas)]
    last = self.log.append(ents)
    # followers get these at the next flush (one APPEND per follower per Ready); our own
    # copy counts toward commit only once advance() reports it durable
    self.need_flush = True
    return last


def on_persisted(self: Raft) -> None:
    """Called by RawNode.advance() after entries became durable."""
    if self.role != LEADER:
        return
    me = self.prs.get(self.id)
    if me is not None and me.maybe_update(self.log.persisted_last()):
        self._maybe_commit()


def _maybe_commit(self: Raft) -> bool:
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


def _handle_append_resp(self: Raft, m: Message, pr: Progress) -> None:
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


def _next_probe(self: Raft, m: Message) -> int:
    """Where to probe next after a rejection, skipping whole terms."""
    if m.log_term == 0:
        return m.reject_hint + 1
    found = self.log.last_index_with_term_at_most(m.log_term, m.index)
    if found is not None and found[1] == m.log_term:
        # we have the follower's conflicting term up to found[0]: it matches there
        return found[0] + 1
    return m.reject_hint


def flush(self: Raft) -> None:
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


def _maybe_send_append(self: Raft, to: NodeId) -> bool:
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


def _send_snapshot(self: Raft, to: NodeId, pr: Progress) -> None:
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


def _bcast_heartbeat(self: Raft, ctx: bytes | None = None) -> None:
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
