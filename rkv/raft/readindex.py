"""ReadIndex on the leader side of the Raft core (rkv.raft.core.Raft).

Owns: the pending read requests, the heartbeat rounds that confirm leadership for them
(a round id in the heartbeat context), answering them with the commit index once a quorum
acked a round, and dropping them when leadership ends.
Must not: do I/O or serve reads itself (the caller waits for the applied index).
Functions of the Raft object, bound as its methods (rkv.raft.core), which holds every
attribute.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rkv.raft import quorum
from rkv.raft.errors import ProposalDropped
from rkv.raft.types import (
    LEADER,
    MT,
    NONE,
    Message,
    NodeId,
    ReadState,
)

if TYPE_CHECKING:
    from rkv.raft.core import Raft


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


def _clear_reads(self: Raft) -> None:
    self._reads_waiting_commit = []
    self._reads_unsent = []
    self._reads_in_round = deque()
    self._round_acks = {}


# -- ReadIndex (leader side) ------------------------------------------------------------


def read_index(self: Raft, ctx: bytes) -> None:
    if self.role == LEADER:
        self._leader_read(ctx, self.id)
    elif self.leader != NONE:
        self._send(Message(MT.READ_INDEX, to=self.leader, frm=self.id, context=ctx))
    else:
        raise ProposalDropped("no leader known", NONE)


def _leader_read(self: Raft, ctx: bytes, frm: NodeId) -> None:
    if not self.committed_in_current_term():
        # our commit index may be stale until our own term's entry commits (§6.4 step 1)
        self._reads_waiting_commit.append((ctx, frm))
        return
    index = self.log.committed
    if len(self.voters) == 1:
        self._answer_read(_PendingRead(ctx, frm, index))
        return
    self._reads_unsent.append(_PendingRead(ctx, frm, index))


def _handle_read_ack(self: Raft, m: Message) -> None:
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


def _answer_read(self: Raft, r: _PendingRead) -> None:
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
