"""The read side of durable Raft state, as the core sees it, and an in-memory implementation.

Owns: the `Storage` protocol the core reads its stable log through, and `MemoryStorage`, the
twin used by the simulator and unit tests. The runtime's LMDB store (rkv.store) implements the
same protocol. Must not: be written by the core. Only the runtime writes storage, when it
handles a Ready (`append`/`set_hard_state`/`apply_snapshot` here mirror what it does).

Log indices are 1-based. A log that was compacted starts after a snapshot: entries
(snapshot.index, last_index] are available, and `term(snapshot.index)` is still answered.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from rkv.raft.types import ConfState, Entry, HardState, NodeId, Snapshot, SnapshotMeta


class StorageError(Exception):
    """Base of the errors a Storage raises for index requests it cannot serve."""


class Compacted(StorageError):
    """The requested index is at or below the first available index minus one (compacted)."""


class Unavailable(StorageError):
    """The requested index is past the last index."""


class SnapshotOutOfDate(StorageError):
    """A snapshot older than (or as old as) the one already stored was offered."""


class Storage(Protocol):
    def initial_state(self) -> tuple[HardState, ConfState]:
        """The persisted hard state and the configuration as of the log's start: the last
        snapshot's, or the bootstrap one (empty for a node joining an existing cluster). The
        core replays the CONF_CHANGE entries after it up to the applied index."""
        ...

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries in [lo, hi). At least one entry is returned if any is in range, even when it
        alone exceeds max_bytes. Raises Compacted if lo <= snapshot index, Unavailable if
        hi > last_index() + 1."""
        ...

    def term(self, index: int) -> int:
        """Term of the entry at index; the snapshot's term for index == first_index() - 1.
        Raises Compacted below that, Unavailable past last_index()."""
        ...

    def first_index(self) -> int:
        """Index of the first available entry: snapshot index + 1."""
        ...

    def last_index(self) -> int:
        """Index of the last entry, or the snapshot index if the log is empty."""
        ...

    def snapshot(self) -> Snapshot:
        """The most recent snapshot (empty Snapshot() if none)."""
        ...


def limit_size(entries: list[Entry], max_bytes: int | None) -> list[Entry]:
    """The longest prefix of entries within max_bytes, but never fewer than one entry."""
    if max_bytes is None or not entries:
        return entries
    total = 0
    for k, e in enumerate(entries):
        total += e.size()
        if total > max_bytes and k > 0:
            return entries[:k]
    return entries


class MemoryStorage:
    """In-memory Storage: the twin of the LMDB store for unit tests and the simulator.

    `_ents[0]` is a dummy entry holding the snapshot's index and term, so that
    `term(first_index() - 1)` is answered without special cases (as in etcd's MemoryStorage).
    """

    def __init__(self, voters: Sequence[NodeId] = (), hard_state: HardState | None = None) -> None:
        self._hard_state = hard_state if hard_state is not None else HardState()
        self._conf = ConfState(tuple(sorted(voters)))
        self._snapshot = Snapshot()
        self._ents: list[Entry] = [Entry(term=0, index=0)]

    # -- Storage protocol -------------------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._hard_state, self._conf

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        off = self._ents[0].index
        if lo <= off:
            raise Compacted(f"entries from {lo}: compacted up to {off}")
        if hi > self.last_index() + 1:
            raise Unavailable(f"entries up to {hi - 1}: last index is {self.last_index()}")
        if lo >= hi:
            return []
        return limit_size(self._ents[lo - off : hi - off], max_bytes)

    def term(self, index: int) -> int:
        off = self._ents[0].index
        if index < off:
            raise Compacted(f"term of {index}: compacted up to {off}")
        if index - off >= len(self._ents):
            raise Unavailable(f"term of {index}: last index is {self.last_index()}")
        return self._ents[index - off].term

    def first_index(self) -> int:
        return self._ents[0].index + 1

    def last_index(self) -> int:
        return self._ents[0].index + len(self._ents) - 1

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # -- writes (what the runtime does when it handles a Ready) -----------------------------

    def set_hard_state(self, hs: HardState) -> None:
        self._hard_state = hs

    def append(self, entries: Sequence[Entry]) -> None:
        """Store entries, replacing any stored entries with index >= entries[0].index.

        Entries at or below the snapshot index are skipped (already covered by it).
        Raises ValueError if the entries would leave a gap after the last index.
        """
        if not entries:
            return
        off = self._ents[0].index
        first = entries[0].index
        if first + len(entries) - 1 <= off:
            return
        if first <= off:
            entries = entries[off + 1 - first :]
            first = off + 1
        if first > self.last_index() + 1:
            raise ValueError(f"append at {first} leaves a gap after {self.last_index()}")
        del self._ents[first - off :]
        self._ents.extend(entries)

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Replace the whole log by `snap` (the log then starts after snap.meta.index)."""
        if snap.meta.index <= self._snapshot.meta.index:
            raise SnapshotOutOfDate(
                f"snapshot at {snap.meta.index}: already have {self._snapshot.meta.index}"
            )
        self._snapshot = snap
        self._ents = [Entry(term=snap.meta.term, index=snap.meta.index)]
        if snap.meta.voters:
            self._conf = snap.meta.conf

    def create_snapshot(self, index: int, data: bytes, conf: ConfState | None = None) -> Snapshot:
        """Record a state-machine snapshot taken at `index` (which must be stored), with the
        configuration in force at `index` (by default the current base configuration)."""
        if index <= self._snapshot.meta.index:
            raise SnapshotOutOfDate(
                f"snapshot at {index}: already have {self._snapshot.meta.index}"
            )
        if index > self.last_index():
            raise Unavailable(f"snapshot at {index}: last index is {self.last_index()}")
        c = self._conf if conf is None else conf
        meta = SnapshotMeta(
            index=index, term=self.term(index), voters=c.voters, learners=c.learners
        )
        self._snapshot = Snapshot(meta=meta, data=data)
        self._conf = c
        return self._snapshot

    def compact(self, index: int) -> None:
        """Drop entries up to and including `index`; the log then starts at index + 1."""
        off = self._ents[0].index
        if index <= off:
            raise Compacted(f"compact to {index}: already compacted up to {off}")
        if index > self.last_index():
            raise Unavailable(f"compact to {index}: last index is {self.last_index()}")
        dummy = Entry(term=self._ents[index - off].term, index=index)
        self._ents = [dummy, *self._ents[index - off + 1 :]]
