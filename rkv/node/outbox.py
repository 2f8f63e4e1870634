"""Commit notices held back (part of the raft loop's room: only rkv.node.ready and the loop
use it, from the loop's task).

When the leader's commit index moves and a follower already holds every entry, the core sends
that follower an APPEND with no entries only to tell it the new commit index (a *commit
notice*). At one client that is one extra frame to each follower per put, a follower turn to
take it, and an answer back that costs the leader a turn too: about a third of a put's server
CPU. The follower needs the commit index only to apply (which it defers anyway) and to serve
reads, and the next APPEND or HEARTBEAT carries it. So a commit notice is held here: dropped
when a later APPEND (any) or HEARTBEAT with at least its commit goes to the same follower,
and sent otherwise once a tick passed (`tick`, then `release` after the tick's Ready, whose
heartbeats may carry the commit index instead), so a follower learns a commit index at most
one tick (20 ms) later than before when writes stop. Delaying or dropping a message is safe
in Raft; the core's own record of what it told the follower (`sent_commit`) only decides when
it sends another notice. A linearizable read's heartbeat round carries the commit index, so a
follower's reads wait no longer.

Owns: the held notices, one per follower. Must not: change any message, or hold anything but
a commit notice to a follower known to hold the message's whole prefix.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rkv.raft.types import Message, MessageType

APPEND = MessageType.APPEND
HEARTBEAT = MessageType.HEARTBEAT


class CommitNotices:
    def __init__(self, match: Callable[[str], int | None]) -> None:
        """`match(peer)`: the leader's match index of `peer` when it replicates normally
        (REPLICATE state), None otherwise."""
        self._match = match
        self.held: dict[str, Message] = {}
        self._due: set[str] = set()
        """Followers whose held notice is older than the last tick."""
        self.held_total = 0
        """Notices held (for the statistics)."""
        self.dropped_total = 0
        """Held notices dropped because a later message carried the commit index."""

    def filter(self, messages: Sequence[Message]) -> Sequence[Message]:
        """`messages` without the commit notices (held), and without dropping anything else."""
        if not messages:
            return messages
        held = self.held
        out: list[Message] | None = None
        for i, m in enumerate(messages):
            if held and m.to in held:
                h = held[m.to]
                if m.type == APPEND or (m.type == HEARTBEAT and m.commit >= h.commit):
                    del held[m.to]
                    self._due.discard(m.to)
                    self.dropped_total += 1
            if m.type == APPEND and not m.entries and self._match(m.to) == m.index:
                held[m.to] = m
                self.held_total += 1
                if out is None:
                    out = list(messages[:i])
                continue
            if out is not None:
                out.append(m)
        return messages if out is None else out

    def tick(self) -> None:
        """A tick passed: what is held now is sent by the next `release`."""
        self._due.update(self.held)

    def release(self) -> list[Message]:
        """The notices held since before the last tick and not superseded since (to send
        now)."""
        if not self._due:
            return []
        out = [self.held.pop(p) for p in self._due if p in self.held]
        self._due.clear()
        return out
