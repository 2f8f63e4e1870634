"""Membership of the Raft core (rkv.raft.core.Raft): single-server changes (thesis §4.1).

Owns: proposing a configuration change (one at a time, etcd's rule), which configuration
is in force at an index, applying CONF_CHANGE entries (in force once applied, as in etcd),
replaying them after a restart, and switching the progress set to a new configuration.
Must not: do I/O or iterate unordered collections. Functions of the Raft object, bound
as its methods (rkv.raft.core), which holds every attribute.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rkv.raft import confchange
from rkv.raft.confchange import ConfChange, ConfChangeEntry, ConfChangeError
from rkv.raft.elections import CampaignKind
from rkv.raft.errors import ConfChangeRefused, LogSafetyError, ProposalDropped
from rkv.raft.progress import Progress
from rkv.raft.types import (
    CONF_CHANGE,
    FOLLOWER,
    LEADER,
    NONE,
    ConfState,
    Entry,
)

if TYPE_CHECKING:
    from rkv.raft.core import Raft


def propose_conf_change(self: Raft, cc: ConfChange) -> int:
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


def conf_at(self: Raft, index: int) -> ConfState:
    """The configuration in force once `index` is applied (index must not be below the
    log's start, nor past the applied index)."""
    conf = self._conf_base
    for i, c in self._conf_history:
        if i > index:
            break
        conf = c
    return conf


def apply_conf_entry(self: Raft, e: Entry) -> None:
    """The runtime applied CONF_CHANGE entry `e` (called by RawNode.advance, in order)."""
    if e.index <= self._conf_base_index:
        # A Ready taken before a snapshot was stepped is being advanced: the snapshot's
        # configuration is newer than this entry's already.
        return
    try:
        ce = confchange.decode(e.data)
    except ConfChangeError as err:
        raise LogSafetyError(f"committed conf change at {e.index} is malformed: {err}") from None
    self._conf_history.append((e.index, ce.conf))
    self._switch_conf(ce.conf)


def after_applied(self: Raft) -> None:
    """Called by RawNode.advance once entries were applied: resume a deferred transfer."""
    if self._transfer_after_apply and not self._unapplied_conf_change():
        self._transfer_after_apply = False
        self.hup(CampaignKind.TRANSFER)


def _replay_conf_changes(self: Raft) -> None:
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


def _unapplied_conf_change(self: Raft) -> bool:
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


def _switch_conf(self: Raft, conf: ConfState) -> None:
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
