"""The read side of durable Raft state, as the core sees it, and an in-memory implementation.

Owns: the `Storage` protocol the core reads its stable log through, and `MemoryStorage`, the
twin used by the simulator and unit tests. The runtime's LMDB store (rkv.store) implements the
same protocol. Must not: be written by the core. Only the runtime writes storage, when it
handles a Ready (`append`/`set_hard_state`/`apply_snapshot` here mirror what it does).

Log indices are 1-based. A log that was compacted starts after a snapshot: entries
(snapshot.index, last_index] are available, and `term(snapshot.index)` is still answered.
"""

from __future__ import annotations

from typing import Protocol

from rkv.raft.types import Entry, HardState, NodeId, Snapshot


class StorageError(Exception):
    """Base of the errors a Storage raises for index requests it cannot serve."""


class Compacted(StorageError):
    """The requested index is at or below the first available index minus one (compacted)."""


class Unavailable(StorageError):
    """The requested index is past the last index."""


class Storage(Protocol):
    def initial_state(self) -> tuple[HardState, tuple[NodeId, ...]]:
        """The persisted hard state and the voter set (from the last snapshot or bootstrap)."""
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
