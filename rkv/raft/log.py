"""The Raft log as the core sees it: stable storage plus the not-yet-persisted tail.

Owns: the `Unstable` tail (entries and a snapshot the runtime has not yet made durable, with a
cursor of what was already handed out in a Ready), the committed/applied cursors, and the log
algorithms (term lookup across the snapshot boundary, conflict search, maybe_append, reject-hint
searches). Must not: write to storage (the runtime does, from a Ready), send messages, or
truncate at or below the commit index (LogSafetyError).

Invariant: the log is storage[first .. unstable.offset - 1] followed by unstable.entries.
Storage may still hold stale entries at or after unstable.offset (a pending truncation); they
are never read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rkv.raft.errors import LogSafetyError
from rkv.raft.storage import Compacted, Storage, StorageError, Unavailable, limit_size
from rkv.raft.types import Entry, Snapshot


class Unstable:
    """Entries (and possibly a snapshot) accepted by the core but not yet durable."""

    __slots__ = ("entries", "in_progress", "offset", "snapshot", "snapshot_in_progress")

    def __init__(self, offset: int) -> None:
        self.offset = offset
        """Index of entries[0] (where the next entry goes when empty)."""
        self.entries: list[Entry] = []
        self.in_progress = offset
        """Entries below this index were handed out in a Ready (being persisted)."""
        self.snapshot: Snapshot | None = None
        self.snapshot_in_progress = False

    def maybe_first_index(self) -> int | None:
        return self.snapshot.meta.index + 1 if self.snapshot is not None else None

    def maybe_last_index(self) -> int | None:
        if self.entries:
            return self.offset + len(self.entries) - 1
        if self.snapshot is not None:
            return self.snapshot.meta.index
        return None

    def maybe_term(self, index: int) -> int | None:
        if index < self.offset:
            if self.snapshot is not None and self.snapshot.meta.index == index:
                return self.snapshot.meta.term
            return None
        k = index - self.offset
        if k < len(self.entries):
            return self.entries[k].term
        return None

    def next_entries(self) -> list[Entry]:
        return self.entries[self.in_progress - self.offset :]

    def next_snapshot(self) -> Snapshot | None:
        if self.snapshot is None or self.snapshot_in_progress:
            return None
        return self.snapshot

    def accept_in_progress(self) -> None:
        self.in_progress = self.offset + len(self.entries)
        self.snapshot_in_progress = self.snapshot is not None

    def stable_to(self, index: int, term: int) -> None:
        """Entries up to `index` (with that term there) are durable: drop them."""
        k = index - self.offset
        if k < 0 or k >= len(self.entries) or self.entries[k].term != term:
            # superseded by a truncation since it was handed out; the newer entries follow
            return
        del self.entries[: k + 1]
        self.offset = index + 1
        self.in_progress = max(self.in_progress, self.offset)

    def stable_snap_to(self, index: int) -> None:
        if self.snapshot is not None and self.snapshot.meta.index == index:
            self.snapshot = None
            self.snapshot_in_progress = False

    def restore(self, snap: Snapshot) -> None:
        self.offset = snap.meta.index + 1
        self.entries = []
        self.in_progress = self.offset
        self.snapshot = snap
        self.snapshot_in_progress = False

    def truncate_and_append(self, ents: Sequence[Entry]) -> None:
        after = ents[0].index
        end = self.offset + len(self.entries)
        if after == end:
            self.entries.extend(ents)
        elif after <= self.offset:
            # replaces everything unstable (and, once persisted, the stored suffix from `after`)
            self.offset = after
            self.entries = list(ents)
            self.in_progress = after
        else:
            del self.entries[after - self.offset :]
            self.entries.extend(ents)
            self.in_progress = min(self.in_progress, after)

    def slice(self, lo: int, hi: int) -> list[Entry]:
        return self.entries[lo - self.offset : hi - self.offset]


class RaftLog:
    __slots__ = ("applied", "committed", "on_rewind", "storage", "unstable")

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.on_rewind: Callable[[int], None] | None = None
        """Called with `after` when entries from index `after` on are replaced (a truncating
        append, or a snapshot restore: its index + 1), before the new state is in place."""
        first = storage.first_index()
        self.unstable = Unstable(storage.last_index() + 1)
        self.committed = first - 1
        self.applied = first - 1

    def __repr__(self) -> str:
        return (
            f"RaftLog(first={self.first_index()} last={self.last_index()} "
            f"committed={self.committed} applied={self.applied} "
            f"unstable.offset={self.unstable.offset} unstable.len={len(self.unstable.entries)})"
        )

    # -- shape ------------------------------------------------------------------------------

    # first_index, last_index and term run on every message: they inline the Unstable
    # lookups (maybe_first_index, maybe_last_index, maybe_term) rather than call them.

    def first_index(self) -> int:
        snap = self.unstable.snapshot
        return snap.meta.index + 1 if snap is not None else self.storage.first_index()

    def last_index(self) -> int:
        u = self.unstable
        if u.entries:
            return u.offset + len(u.entries) - 1
        if u.snapshot is not None:
            return u.snapshot.meta.index
        return self.storage.last_index()

    def term(self, index: int) -> int | None:
        """Term at index, including the snapshot's index; None if compacted or past the end."""
        u = self.unstable
        k = index - u.offset
        if k >= 0:
            if k < len(u.entries):
                return u.entries[k].term
        elif u.snapshot is not None and u.snapshot.meta.index == index:
            return u.snapshot.meta.term
        # outside the log (index < first_index() - 1 or index > last_index(), inlined)
        snap = u.snapshot
        if index < (snap.meta.index if snap is not None else self.storage.first_index() - 1):
            return None
        if u.entries:
            if k >= len(u.entries):
                return None
        elif index > (snap.meta.index if snap is not None else self.storage.last_index()):
            return None
        try:
            return self.storage.term(index)
        except StorageError:
            return None

    def last_term(self) -> int:
        t = self.term(self.last_index())
        if t is None:  # pragma: no cover - storage answers term(last_index) by contract
            raise LogSafetyError(f"no term for the last index {self.last_index()}")
        return t

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """A candidate with this last (index, term) is at least as up to date as we are."""
        my_term = self.last_term()
        return last_term > my_term or (last_term == my_term and last_index >= self.last_index())

    def snapshot(self) -> Snapshot:
        if self.unstable.snapshot is not None:
            return self.unstable.snapshot
        return self.storage.snapshot()

    def persisted_last(self) -> int:
        """Last index known durable *and* part of this log (stale stored suffixes excluded)."""
        if self.unstable.snapshot is not None:
            return 0
        if self.unstable.entries:
            return self.unstable.offset - 1
        return min(self.storage.last_index(), self.unstable.offset - 1)

    # -- reading entries --------------------------------------------------------------------

    def slice(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries [lo, hi), at most max_bytes (but at least one). Raises Compacted/Unavailable."""
        if lo >= hi:
            return []
        if lo < self.first_index():
            raise Compacted(f"entries from {lo}: first index is {self.first_index()}")
        if hi > self.last_index() + 1:
            raise Unavailable(f"entries up to {hi - 1}: last index is {self.last_index()}")
        off = self.unstable.offset
        out: list[Entry] = []
        if lo < off:
            upto = min(hi, off)
            out = list(self.storage.entries(lo, upto, max_bytes))
            if len(out) < upto - lo:
                return out
        if hi > off:
            tail = self.unstable.slice(max(lo, off), hi)
            if max_bytes is None:
                out.extend(tail)
            elif not out:
                out = limit_size(tail, max_bytes)
            else:
                budget = max_bytes - sum(e.size() for e in out)
                for e in tail:
                    budget -= e.size()
                    if budget < 0:
                        break
                    out.append(e)
        return out

    def has_next_committed_entries(self) -> bool:
        return self.unstable.snapshot is None and self.committed > self.applied

    def next_committed_entries(self, max_bytes: int | None) -> list[Entry]:
        if not self.has_next_committed_entries():
            return []
        lo = max(self.applied + 1, self.first_index())
        return self.slice(lo, self.committed + 1, max_bytes)

    # -- searches (terms are non-decreasing along the log, so binary search is valid) -------

    def find_conflict(self, entries: Sequence[Entry]) -> int:
        """Index of the first entry that is new or disagrees with the log; 0 if all match.

        By the Log Matching property, matching entries form a prefix of `entries`.
        """
        if not entries:
            return 0
        if entries[0].index > self.last_index():
            return entries[0].index
        lo, hi = 0, len(entries)
        while lo < hi:
            mid = (lo + hi) // 2
            e = entries[mid]
            if self.term(e.index) == e.term:
                lo = mid + 1
            else:
                hi = mid
        return entries[lo].index if lo < len(entries) else 0

    def first_index_of_term(self, term: int, lo: int, hi: int) -> int:
        """Smallest i in [lo, hi] with term(i) >= term (hi if none); all of [lo, hi] exist."""
        while lo < hi:
            mid = (lo + hi) // 2
            t = self.term(mid)
            if t is not None and t >= term:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def last_index_with_term_at_most(self, term: int, hi: int) -> tuple[int, int] | None:
        """Largest i <= hi (down to the snapshot index) with term(i) <= term, and its term."""
        lo = self.first_index() - 1
        hi = min(hi, self.last_index())
        t_lo = self.term(lo)
        if hi < lo or t_lo is None or t_lo > term:
            return None
        while lo < hi:
            mid = (lo + hi + 1) // 2
            t = self.term(mid)
            if t is not None and t <= term:
                lo = mid
            else:
                hi = mid - 1
        t = self.term(lo)
        assert t is not None
        return lo, t

    # -- writing ----------------------------------------------------------------------------

    def append(self, entries: Sequence[Entry]) -> int:
        """Put entries at entries[0].index (truncating any suffix there); returns last index."""
        if not entries:
            return self.last_index()
        after = entries[0].index
        if after - 1 < self.committed:
            raise LogSafetyError(
                f"append at {after} would truncate committed entries (commit={self.committed})"
            )
        last = self.last_index()
        if after > last + 1:
            raise LogSafetyError(f"append at {after} leaves a gap after {last}")
        if after <= last and self.on_rewind is not None:
            self.on_rewind(after)
        self.unstable.truncate_and_append(entries)
        return self.last_index()

    def maybe_append(
        self, prev_index: int, prev_term: int, commit: int, entries: Sequence[Entry]
    ) -> int | None:
        """The follower side of AppendEntries. None if (prev_index, prev_term) does not match;
        else the last index the message covers (prev_index + len(entries)).

        Never truncates when the entries already match (a stale or duplicated APPEND).
        """
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        ci = self.find_conflict(entries)
        if ci:
            if ci <= self.committed:
                raise LogSafetyError(
                    f"entry {ci} conflicts with a committed entry (commit={self.committed})"
                )
            self.append(entries[ci - prev_index - 1 :])
        self.commit_to(min(commit, last_new))
        return last_new

    def commit_to(self, index: int) -> None:
        if index <= self.committed:
            return
        if index > self.last_index():
            raise LogSafetyError(f"commit {index} is past the last index {self.last_index()}")
        self.committed = index

    def applied_to(self, index: int) -> None:
        if index <= self.applied:
            return
        if index > self.committed:
            raise LogSafetyError(f"applied {index} is past the commit index {self.committed}")
        self.applied = index

    def stable_to(self, index: int, term: int) -> None:
        self.unstable.stable_to(index, term)

    def stable_snap_to(self, index: int) -> None:
        self.unstable.stable_snap_to(index)

    def restore(self, snap: Snapshot) -> None:
        """Replace the log by a snapshot (follower catching up from the leader's snapshot)."""
        if snap.meta.index <= self.committed:
            raise LogSafetyError(
                f"restore to {snap.meta.index} is at or below commit {self.committed}"
            )
        self.committed = snap.meta.index
        if self.on_rewind is not None:
            self.on_rewind(snap.meta.index + 1)
        self.unstable.restore(snap)
