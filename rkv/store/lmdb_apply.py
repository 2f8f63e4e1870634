"""The state machine side of the LMDB store: the apply transaction and what it feeds.

Owns: applying committed entries in one transaction (commands, applied index, sessions,
the durable watch history record), and, once it committed, its hooks: the state hash
history, an open scrub pass's change tracking, the changes for watchers, the lease events;
what an install resets of them; the reads of the watch history and of leases.
Must not: touch the Raft log (lmdb_log.py) or make an apply durable by itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import lmdb

from rkv.raft.types import Entry
from rkv.store import history as watchdb
from rkv.store import kv as kvdb
from rkv.store import state_hash as sh
from rkv.store.commands import ApplyResult, Change
from rkv.store.leases import (
    LeaseEvent,
    LeaseEvents,
    LeaseState,
    read_lease,
    read_lease_keys,
    read_leases,
)
from rkv.store.lmdb_base import StoreBase


class ApplyMixin(StoreBase):
    """The apply transaction and its hooks of LmdbStore."""

    def apply(self, entries: Sequence[Entry]) -> list[ApplyResult]:
        """Apply committed entries (which must continue applied_index() exactly) in one
        transaction together with the new applied index and session updates.

        Atomic but not durable by itself (one flush, not two): the entries are durable in
        the log already, so a power loss that undoes this transaction only makes a restart
        apply them again, exactly once, from the durable applied index. The next durable
        transaction (any save) makes it durable too."""
        if not entries:
            return []
        fn, committed = self._apply_fn(entries)
        results: list[ApplyResult] = self._write(fn, durable=False)
        self._applied = entries[-1].index
        committed()
        return results

    def _apply_fn(
        self, entries: Sequence[Entry]
    ) -> tuple[Callable[[lmdb.Transaction[bytes]], list[ApplyResult]], Callable[[], None]]:
        """The apply transaction's function, and what to do once it committed (the hash
        history, a scrub pass's change tracking)."""
        last: list[tuple[sh.Running, list[tuple[int, int]]]] = []
        recorded: list[list[Change]] = []
        watch_meta: list[watchdb.Meta] = []
        lease_events: list[LeaseEvent] = []
        lease_total: list[int | None] = [None]

        def apply(txn: lmdb.Transaction[bytes]) -> list[ApplyResult]:
            changes: list[Change] = []  # for the durable history, and take_changes
            state = kvdb.LmdbStateTxn(
                txn,
                self._live(txn),
                self._upload_hashes,
                entries={e.index: e.data for e in entries if len(e.data) >= kvdb.PIN_MIN},
                log_start=lambda: self._log_start(txn),
                # decided in the write transaction: a pass opens in one (scrub_pass)
                track=self._tracker is not None,
                changes=changes,
                max_leases=self._max_leases,
                lease_total=self._lease_total,
            )
            results, marks = sh.apply_with_checkpoints(state, entries, self._max_sessions)
            state.flush()
            watch_meta.clear()
            if changes:  # the durable watch history: one record, in this transaction
                meta, m, bounds = self._dbs.meta, self._watch_meta, self.history_bounds
                watch_meta.append(watchdb.append(txn, self._watch_db, meta, m, changes, bounds))
            last[:] = [(state.running, marks)]  # of the attempt that commits
            recorded[:] = [changes] if self.record_changes else []
            lease_events[:] = state.lease_events
            lease_total[0] = state.lease_total
            return results

        def committed() -> None:
            running, marks = last[0]
            index = entries[-1].index
            self._history.applied(marks, index, running.value)
            tracker = self._tracker
            if tracker is not None:
                tracker.deliver(index, running.deltas or [])
            if recorded:
                with self._changes_lock:
                    self._changes.extend(recorded[0])
            if watch_meta:
                self._watch_meta = watch_meta[0]
            self._lease_events.extend(lease_events)
            self._lease_total = lease_total[0]

        return apply, committed

    def applied_index(self) -> int:
        return self._applied

    # --- changes for watchers (rkv.node.watch) -------------------------------------------

    def take_changes(self) -> list[Change]:
        """The changes committed applies made since the last call, in order (recorded only
        while `record_changes` is on; a snapshot install adds a "reset" change). Thread-safe:
        applies may run in a worker thread."""
        with self._changes_lock:
            out, self._changes = self._changes, []
        return out

    def history_first(self) -> int:
        """The first revision the durable watch history holds whole (history.py)."""
        return self._watch_meta.first

    def read_history(self, after: int, top: int, max_bytes: int) -> watchdb.HistoryRead:
        """The durable watch history's changes after revision `after` up to `top`, whole
        records, about `max_bytes` at most (history.read). Thread-safe: one read transaction."""
        return self._read(
            lambda txn: watchdb.read(
                txn, self._watch_db, self._dbs.meta, self._applied, after, top, max_bytes
            )
        )

    # --- leases (leases.py) -------------------------------------------------------------

    def take_lease_events(self) -> LeaseEvents:
        """What committed applies did to leases since the last call (for the Lessor,
        rkv.lease), with reset=True after a snapshot install or an overflow: the Lessor then
        starts over from `leases()`. Thread-safe."""
        return self._lease_events.take()

    def leases(self) -> list[LeaseState]:
        """Every lease as of the applied index, by id."""
        return self._read(lambda txn: read_leases(txn, self._live(txn).files))

    def lease(self, lease_id: int) -> LeaseState | None:
        return self._read(lambda txn: read_lease(txn, self._live(txn).files, lease_id))

    def lease_keys(self, lease_id: int) -> list[bytes]:
        """The keys attached to a lease, in key order."""
        return self._read(lambda txn: read_lease_keys(txn, self._live(txn).files, lease_id))

    def _state_replaced(self) -> None:
        """After an install committed: a new history, and an open pass is told."""
        index, value = kvdb.decode_state_hash(
            self._read(lambda txn: txn.get(kvdb.STATE_HASH_KEY, db=self._dbs.meta))
        )
        self._history.reset(index, value)
        self._lease_events.reset()
        self._lease_total = None
        self._watch_meta = watchdb.Meta(index + 1)  # the install reset the durable history
        if self.record_changes:
            with self._changes_lock:
                self._changes.append(Change(index, "reset", b""))
        tracker = self._tracker
        if tracker is not None:
            tracker.deliver(index, None)
