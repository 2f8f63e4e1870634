"""What a leader knows about one follower's log: match/next, flow-control state, in-flight window.

Owns: the per-follower replication state machine (probe -> replicate, snapshot) and the bounded
window of unacknowledged APPENDs, as in etcd's tracker/progress.go. Must not: build messages or
read the log; the core decides what to send from what this says.
"""

from __future__ import annotations

from collections import deque
from enum import IntEnum


class ProgressState(IntEnum):
    PROBE = 0
    """Match point unknown: at most one APPEND in flight, until a response arrives."""
    REPLICATE = 1
    """Match point known: APPENDs are pipelined, bounded by the in-flight window."""
    SNAPSHOT = 2
    """A snapshot was sent; nothing else is sent until it is acknowledged or times out."""


# The members as module constants: Python 3.11 reads ProgressState.PROBE through
# EnumType.__getattr__'s slow path, and these are read per message and tick.
PROBE = ProgressState.PROBE
REPLICATE = ProgressState.REPLICATE
SNAPSHOT = ProgressState.SNAPSHOT


class Inflights:
    """The last index of each unacknowledged APPEND, bounded by count."""

    __slots__ = ("_cap", "_q")

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._q: deque[int] = deque()

    def __len__(self) -> int:
        return len(self._q)

    def full(self) -> bool:
        return len(self._q) >= self._cap

    def add(self, last_index: int) -> None:
        if self.full():
            raise OverflowError("in-flight window is full")
        self._q.append(last_index)

    def free_le(self, index: int) -> None:
        """Forget every APPEND whose last index is <= index (it was acknowledged)."""
        q = self._q
        while q and q[0] <= index:
            q.popleft()

    def free_first_one(self) -> None:
        if self._q:
            self._q.popleft()

    def reset(self) -> None:
        self._q.clear()


class Progress:
    __slots__ = (
        "inflights",
        "match",
        "next",
        "nudge",
        "pending_snapshot",
        "probe_sent",
        "recent_active",
        "sent_commit",
        "snapshot_ticks",
        "state",
    )

    def __init__(self, next_index: int, max_inflight: int, match: int = 0) -> None:
        self.match = match
        self.next = next_index
        self.state = PROBE
        self.probe_sent = False
        self.pending_snapshot = 0
        self.snapshot_ticks = 0
        self.recent_active = False
        self.nudge = False
        """Send an APPEND even if empty: the follower answered a heartbeat while behind, so an
        APPEND of ours may have been lost; an empty one finds out (it is rejected if so)."""
        self.sent_commit = 0
        """Highest commit index this follower can have learned from our APPENDs."""
        self.inflights = Inflights(max_inflight)

    def __repr__(self) -> str:
        return (
            f"Progress({self.state.name} match={self.match} next={self.next} "
            f"inflight={len(self.inflights)} paused={self.is_paused()})"
        )

    def _reset(self, state: ProgressState) -> None:
        self.state = state
        self.probe_sent = False
        self.pending_snapshot = 0
        self.snapshot_ticks = 0
        self.inflights.reset()

    def become_probe(self) -> None:
        if self.state == SNAPSHOT:
            # the snapshot may have been applied: probe right after it, not before
            pending = self.pending_snapshot
            self._reset(PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset(PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset(REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset(SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def maybe_update(self, index: int) -> bool:
        """An APPEND_RESP acknowledged `index`; False if that is stale (nothing new)."""
        if index <= self.match:
            return False
        self.match = index
        self.next = max(self.next, index + 1)
        self.probe_sent = False
        return True

    def sent_entries(self, last_index: int) -> None:
        """An APPEND carrying entries up to last_index went out."""
        if self.state == REPLICATE:
            self.next = last_index + 1
            self.inflights.add(last_index)
        elif self.state == PROBE:
            self.probe_sent = True

    def maybe_decr_to(self, rejected: int, next_hint: int) -> bool:
        """The follower rejected the APPEND with prev index `rejected`; move `next` back.

        `next_hint` is the leader's best guess of the next index to try. Returns False for a
        stale rejection (one about an APPEND that no longer matters).
        """
        if self.state == REPLICATE:
            if rejected <= self.match:
                return False
            self.become_probe()
        elif self.state == PROBE:
            if self.next - 1 != rejected:
                return False
        else:
            return False
        self.next = max(self.match + 1, min(next_hint, rejected))
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        if self.state == PROBE:
            return self.probe_sent
        if self.state == REPLICATE:
            return self.inflights.full()
        return True
