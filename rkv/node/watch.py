"""The watch hub: the changes this node applied, kept for its watchers (docs/contracts.md, Watch).

Owns: the window of recent changes (rkv.store.commands.Change, recorded by the store's apply
transaction with the value before each change), in revision order, bounded by
`history` changes and `history_bytes` bytes (whole revisions dropped, oldest first); the first
revision a watch can start after (`first`; below it a watch gets Compacted(first)), the
revision it is complete through (`rev`: the store's applied index as of the last feed), when
the node last had a leader, and the watch polls (`poll`): how many run, per node and per
connection.

Older revisions come from the durable history (`durable`, a HistoryReader: the LMDB store's,
rkv.store.history, written by the apply transaction itself and kept to the same bounds), read
in a worker thread, a reply's worth at a time, when a poll's cursor is below the window: so a
watch resumes across a restart of the node (the window starts empty; nothing is loaded at
start). Without one (the in-memory store), the window is all there is.

Fed by the raft loop after each turn (`feed`: appends and wakes the polls; it never waits and
never calls a watcher, so a slow watcher cannot hold up the apply). A watcher holds no memory
here: it is a revision cursor its client sends with each poll, the poll reads the shared
window from it (a watcher slow to poll again just reads further back). One that falls behind
the window (its history was dropped to bound memory, or a snapshot replaced the state) gets
Compacted with the first revision still held: never a silent gap.

Must not: touch the raft loop or the store (it is handed the changes, the applied index, the
leader, a ReadIndex barrier and a history reader), or frame anything for the wire (it returns
typed replies).
"""

from __future__ import annotations

import bisect
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import trio

from rkv.errors import Compacted, NoLeader, TooManyWatchers, Unavailable
from rkv.protocol import WatchEvent, WatchReply, WatchRequest
from rkv.store.commands import Change
from rkv.store.history import HistoryRead, held_size

_KEY_KINDS = frozenset({"put", "delete"})
_READERS = 2
"""Durable-history reads run at once, at most (worker threads)."""
WINDOW_WITH_DURABLE = 10_000
WINDOW_BYTES_WITH_DURABLE = 8 << 20
"""The memory window's bounds on a node whose store keeps the durable history (the node
passes the smaller of these and its watch_history bounds): the window then only spares the
store's reads for watchers near the head (100,000 changes held in memory cost a node about
35 MiB at 1M keys of 100 B)."""


class HistoryReader(Protocol):
    """The durable history of this node's applied changes (rkv.store.env.LmdbStore). Both
    calls are blocking and thread-safe; `history_first` is cheap (no I/O)."""

    def history_first(self) -> int:
        """The first revision held whole."""
        ...

    def read_history(self, after: int, top: int, max_bytes: int) -> HistoryRead:
        """The changes after revision `after` up to `top`, whole revisions, about `max_bytes`."""
        ...


class WatchHub:
    def __init__(
        self,
        applied: int,
        *,
        history: int = 100_000,
        history_bytes: int = 64 << 20,
        max_watchers: int = 1024,
        max_per_conn: int = 64,
        election_timeout: float = 1.0,
        reply_bytes: int = 4 << 20,
        durable: HistoryReader | None = None,
    ) -> None:
        self.history = history
        """At most about this many changes are held (whole revisions are dropped, oldest first)."""
        self.history_bytes = history_bytes
        """... and about this many bytes of keys and values (new and previous)."""
        self._bytes = 0
        self.max_watchers = max_watchers
        self.max_per_conn = max_per_conn
        self.election_timeout = election_timeout
        self.reply_bytes = reply_bytes
        """A reply stops at the end of the revision that takes it past this many bytes."""
        self._changes: list[Change] = []
        self._revs: list[int] = []
        """The revision of each change (bisect)."""
        self._held_first = applied + 1
        """The first revision whose changes are all held in the window."""
        self._durable = durable
        self._readers = trio.CapacityLimiter(_READERS)
        self.history_reads = 0
        """Polls' reads of the durable history."""
        self.rev = applied
        """Every change up to this revision is held (or was dropped below `first`)."""
        self._wake = trio.Event()
        self._leaderless_since: float | None = None
        self.watching = 0
        self._per_conn: dict[object, int] = {}
        self.polls = 0
        self.compacted = 0
        """Polls answered Compacted."""
        self.no_leader = 0
        """Polls answered NoLeader."""
        self.delivered = 0
        """Events sent in replies (an event sent to n watchers counts n times)."""

    # -- fed by the raft loop ------------------------------------------------------------------

    def feed(self, changes: Sequence[Change], applied: int, leader: str, now: float) -> None:
        """After a raft-loop turn: the changes applied since the last feed (in order), the
        applied index they bring the store to, and the leader known now ("" for none)."""
        for c in changes:
            if c.kind == "reset":  # a snapshot replaced the state: what came before is unknown
                self._changes.clear()
                self._revs.clear()
                self._bytes = 0
                self._held_first = max(self._held_first, c.revision + 1)
                continue
            self._changes.append(c)
            self._revs.append(c.revision)
            self._bytes += held_size(c)
        self._trim()
        if leader:
            self._leaderless_since = None
        elif self._leaderless_since is None:
            self._leaderless_since = now
        if applied > self.rev:
            self.rev = applied
            self._wake.set()
            self._wake = trio.Event()

    def _trim(self) -> None:
        """Drop the oldest revisions, whole, once over a bound: down to `history` changes
        (in steps of an eighth: amortized O(1) per change) and `history_bytes` bytes."""
        excess = len(self._changes) - self.history
        drop = excess if excess > max(64, self.history // 8) else 0
        if self._bytes > self.history_bytes:
            target, freed = self._bytes - self.history_bytes * 7 // 8, 0
            n = 0
            while n < len(self._changes) and freed < target:
                freed += held_size(self._changes[n])
                n += 1
            drop = max(drop, n)
        if drop <= 0:
            return
        cut_rev = self._revs[drop - 1]
        cut = bisect.bisect_right(self._revs, cut_rev)  # whole revisions
        self._bytes -= sum(held_size(c) for c in self._changes[:cut])
        del self._changes[:cut]
        del self._revs[:cut]
        self._held_first = max(self._held_first, cut_rev + 1)

    @property
    def first(self) -> int:
        """The first revision whose changes are all held, in the window or the durable
        history: a watch may start there (after first - 1), not below."""
        d = self._durable
        return self._held_first if d is None else min(self._held_first, d.history_first())

    # -- the polls -----------------------------------------------------------------------------

    def leaderless(self, now: float) -> bool:
        """The node has had no leader for longer than an election timeout."""
        since = self._leaderless_since
        return since is not None and now - since > self.election_timeout

    def _compacted(self, after: int, first: int) -> Compacted:
        self.compacted += 1
        return Compacted(
            f"revision {after + 1} is no longer held by this node (first: {first})", first
        )

    async def _gather(self, req: WatchRequest, after: int) -> tuple[tuple[WatchEvent, ...], int]:
        """The events of revisions after `after` (up to `rev`) on the watch's keys, whole
        revisions up to the reply's bounds, and the revision the answer is complete through:
        from the durable history while `after` is below the window, then from the window."""
        while after + 1 < self._held_first:
            if self._durable is None:
                raise self._compacted(after, self._held_first)
            self.history_reads += 1
            got = await trio.to_thread.run_sync(
                self._durable.read_history,
                after,
                self.rev,
                self.reply_bytes,
                limiter=self._readers,
            )
            if after + 1 < got.first:
                raise self._compacted(after, min(got.first, self._held_first))
            events, upto = _select(req, got.changes, 0, got.through, self.reply_bytes)
            if events or upto <= after:
                return events, max(upto, after)
            after = upto  # nothing for this watch there: read on
        return self._collect(req, after)

    def _collect(self, req: WatchRequest, after: int) -> tuple[tuple[WatchEvent, ...], int]:
        """What `_gather` answers, from the window (`after` is in it)."""
        if after + 1 < self._held_first:
            raise self._compacted(after, self._held_first)
        i = bisect.bisect_right(self._revs, after)
        events, upto = _select(req, self._changes, i, self.rev, self.reply_bytes)
        return events, max(upto, after)

    def _admit(self, conn: object) -> None:
        if self.watching >= self.max_watchers:
            raise TooManyWatchers(f"this node serves {self.max_watchers} watches at most")
        if self._per_conn.get(conn, 0) >= self.max_per_conn:
            raise TooManyWatchers(f"a connection may run {self.max_per_conn} watches at most")
        self.watching += 1
        self._per_conn[conn] = self._per_conn.get(conn, 0) + 1

    def _leave(self, conn: object) -> None:
        self.watching -= 1
        left = self._per_conn[conn] - 1
        if left:
            self._per_conn[conn] = left
        else:
            del self._per_conn[conn]

    async def poll(
        self,
        req: WatchRequest,
        conn: object,
        *,
        barrier: Callable[[], Awaitable[None]],
        applied: Callable[[], int],
    ) -> WatchReply:
        """One poll: the watch's events after `req.after` as soon as there are some; with
        none for `req.wait_ms`, a progress reply whose revision a ReadIndex (`barrier`, then
        `applied`: the store's applied index it waited for) proved current. NoLeader once
        the node has had no leader for an election timeout (checked at least twice per
        election timeout while waiting); Compacted below the window; TooManyWatchers."""
        self._admit(conn)
        try:
            self.polls += 1
            after = self.rev if req.after is None else req.after
            deadline = trio.current_time() + req.wait_ms / 1000
            while True:
                events, upto = await self._gather(req, after)
                if events:
                    self.delivered += len(events)
                    return WatchReply(events, upto)
                after = upto  # nothing for this watch up to there: not read again
                now = trio.current_time()
                if self.leaderless(now):
                    self.no_leader += 1
                    raise NoLeader(
                        f"no leader for over {self.election_timeout:g} s: this node may be "
                        "cut off (watch through another node)"
                    )
                if now >= deadline:
                    break
                with trio.move_on_at(min(deadline, now + self.election_timeout / 2)):
                    await self._wake.wait()
            # Progress: a ReadIndex proves which revision is current, the window is read up
            # to it, so the progress revision never overtakes an event not yet delivered.
            await barrier()
            target = applied()
            with trio.move_on_after(max(1.0, 4 * self.election_timeout)):
                while self.rev < target:  # fed at the end of the turn that applied it
                    await self._wake.wait()
            if self.rev < target:
                raise Unavailable(f"the watch window did not reach revision {target}; retry")
            events, upto = await self._gather(req, after)
            self.delivered += len(events)
            return WatchReply(events, upto, progress=upto >= target)
        finally:
            self._leave(conn)

    def statistics(self) -> dict[str, int]:
        return {
            "watch_polls": self.polls,
            "watch_active": self.watching,
            "watch_held_changes": len(self._changes),
            "watch_held_bytes": self._bytes,
            "watch_first_revision": self.first,
            "watch_history_reads": self.history_reads,
            "watch_compacted": self.compacted,
            "watch_no_leader": self.no_leader,
            "watch_events_delivered": self.delivered,
        }


def _select(
    req: WatchRequest, changes: Sequence[Change], i: int, top: int, reply_bytes: int
) -> tuple[tuple[WatchEvent, ...], int]:
    """The events on the watch's keys among changes[i:] up to revision `top`, whole revisions
    up to the reply's bounds (req.limit events, `reply_bytes` bytes), and the revision they
    are complete through (`top` unless cut short)."""
    out: list[WatchEvent] = []
    size = 0
    prefix, prev, exact = req.prefix, req.prev, req.exact
    n = len(changes)
    while i < n:
        c = changes[i]
        if c.revision > top:
            break
        if (len(out) >= req.limit or size >= reply_bytes) and c.revision != out[-1].rev:
            return tuple(out), out[-1].rev
        i += 1
        if (c.key != prefix) if exact else not c.key.startswith(prefix):
            continue
        known = prev and c.kind in _KEY_KINDS  # files carry no previous content
        ev = WatchEvent(c.revision, c.kind, c.key, c.value, c.prev if known else None, known)
        out.append(ev)
        size += len(c.key) + len(c.value or b"") + (len(c.prev or b"") if prev else 0) + 32
    return tuple(out), top
