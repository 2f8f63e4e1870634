"""The Raft side of the LMDB store: the log, the hard state and the snapshot marker.

Owns: the Storage protocol's reads (initial state, first/last index, terms, entries, the
snapshot), the save transaction (log entries, hard state, a snapshot that drops the log,
and an install's swap of the staged state, all in one durable transaction), compaction,
the log's size, and the caches of the log kept in memory (terms, the tail of saved
entries) in line with what committed.
Must not: apply entries to the state machine (lmdb_apply.py) or stage a snapshot's state
(lmdb_install.py); it only calls the swap inside its transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import lmdb

from rkv.codec import encode_hard_state, pack, snapshot_meta_to_list
from rkv.raft.storage import Compacted, Unavailable, limit_size
from rkv.raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMeta
from rkv.store import kv as kvdb
from rkv.store import raft_store as logdb
from rkv.store.commands import UploadHashes
from rkv.store.errors import SnapshotError, StoreError
from rkv.store.lmdb_base import StoreBase
from rkv.store.meta import K_HARD_STATE, K_SNAPSHOT, K_SNAPSHOT_DATA

_TERM_CACHE = 4096


class RaftLogMixin(StoreBase):
    """The Raft log side of LmdbStore."""

    def initial_state(self) -> tuple[HardState, ConfState]:
        self._check_open()
        if self._snap.index and self._snap.voters:
            return self._hs, self._snap.conf
        return self._hs, ConfState(tuple(sorted(self._voters)))

    def first_index(self) -> int:
        return self._snap.index + 1

    def last_index(self) -> int:
        return self._last

    def term(self, index: int) -> int:
        with self._log_lock:
            snap = self._snap
            if index == snap.index:
                return snap.term
            if index < snap.index:
                raise Compacted(f"index {index} compacted (snapshot at {snap.index})")
            if index > self._last:
                raise Unavailable(f"index {index} > last index {self._last}")
            t = self._terms.get(index)
            if t is not None:
                return t
            return self._read(lambda txn: logdb.read_entry(txn, self._dbs.log, index)).term

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        with self._log_lock:
            if lo < self._snap.index + 1:
                raise Compacted(f"entries from {lo}: first index is {self._snap.index + 1}")
            if hi > self._last + 1:
                raise Unavailable(f"entries up to {hi}: last index is {self._last}")
            cached = self._tail.get(lo, hi, max_bytes)
            if cached is not None:
                return cached
            return self._read(lambda txn: logdb.read_entries(txn, self._dbs.log, lo, hi, max_bytes))

    def snapshot(self) -> Snapshot:
        meta = self._snap
        if not meta.index:
            return Snapshot()
        data = self._read(lambda txn: txn.get(K_SNAPSHOT_DATA, db=self._dbs.meta))
        return Snapshot(meta=meta, data=data or b"")

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None = None,
    ) -> None:
        """Persist, in one fsynced transaction: `snapshot` (dropping the log up to it, or all
        of it if the log does not contain the snapshot's last entry), then `entries`
        (replacing every stored entry with index >= entries[0].index), then `hard_state`.

        Only the Raft log side: the state machine is not touched (see install_snapshot)."""
        self._save(hard_state, entries, snapshot, install=False)

    def install_snapshot(
        self, hard_state: HardState | None, entries: Sequence[Entry], snapshot: Snapshot
    ) -> None:
        """What `save` does, plus swapping in the state staged for `snapshot` (see
        begin_snapshot_install) with applied_index = snapshot.meta.index, all in one fsynced
        transaction: a crash leaves either the old state or the new one. Raises SnapshotError
        when no complete staged state matches `snapshot.meta`."""
        if snapshot.is_empty():
            raise SnapshotError("cannot install an empty snapshot")
        if snapshot.meta.index <= self._applied:
            raise SnapshotError(
                f"snapshot at {snapshot.meta.index} is not past applied index {self._applied}"
            )
        self._save(hard_state, entries, snapshot, install=True)

    def _save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None,
        *,
        install: bool,
        then: Callable[[lmdb.Transaction[bytes]], Any] | None = None,
    ) -> Any:
        """The save transaction; `then` runs last inside it (its result is returned)."""
        with self._log_lock:
            snap = self._snap
            last = self._last
            keep_log = True
            if snapshot is not None and not snapshot.is_empty():
                logdb.check_snapshot(Snapshot(meta=snap), snapshot)
                s = snapshot.meta
                keep_log = s.index <= last and self.term(s.index) == s.term
                snap = s
                last = max(last, s.index) if keep_log else s.index
            else:
                snapshot = None
            if entries:
                logdb.check_entries(entries, snap.index + 1, last)
            dbs = self._dbs

            def write(txn: lmdb.Transaction[bytes]) -> Any:
                if install:
                    assert snapshot is not None
                    self._swap_in_staged(txn, snapshot.meta)
                if snapshot is not None:
                    txn.put(K_SNAPSHOT, pack(snapshot_meta_to_list(snapshot.meta)), db=dbs.meta)
                    txn.put(K_SNAPSHOT_DATA, snapshot.data, db=dbs.meta)
                    # after an install's swap the live state pins nothing: the old one's
                    # pinned chunks go with the rest of the log
                    pins = self._pins(txn, snapshot.meta.index)
                    if keep_log:
                        logdb.delete_through(txn, dbs.log, snapshot.meta.index, pins)
                    else:
                        logdb.delete_from(txn, dbs.log, 0, pins)
                if entries:
                    if kvdb.pinned_keys(txn, self._live(txn).files, entries[0].index, last):
                        # committed entries are never replaced (Raft); a pinned one is applied
                        raise StoreError(
                            f"save would replace pinned (applied) log entries from "
                            f"{entries[0].index}"
                        )
                    logdb.delete_from(txn, dbs.log, entries[0].index)
                    logdb.append(txn, dbs.log, entries)
                if hard_state is not None:
                    txn.put(K_HARD_STATE, encode_hard_state(hard_state), db=dbs.meta)
                return then(txn) if then is not None else None

            result = self._write(write)

            # the transaction is durable: bring the caches in line with it
            if install and snapshot is not None:
                self._applied = snapshot.meta.index
                self._upload_hashes = UploadHashes()
                self._follow_live_gen()
                self._state_replaced()
            if snapshot is not None:
                self._snap = snap
                self._terms = {i: t for i, t in self._terms.items() if i > snap.index}
                if not keep_log:
                    self._tail.clear()
            self._tail.saved(entries)
            if entries:
                start = entries[0].index
                if self._terms and start <= max(self._terms):
                    self._terms = {i: t for i, t in self._terms.items() if i < start}
                for e in entries[-_TERM_CACHE:]:
                    self._terms[e.index] = e.term
                while len(self._terms) > _TERM_CACHE:
                    del self._terms[next(iter(self._terms))]
                last = entries[-1].index
            self._last = last
            if hard_state is not None:
                self._hs = hard_state
            return result

    def compact(self, index: int, conf: ConfState | None = None) -> None:
        """Record a snapshot marker at applied `index` and delete the log up to it, in one
        fsynced transaction. The state machine itself is the snapshot's data: it is streamed
        from a read transaction (open_snapshot) when a follower needs it. `conf` is the
        configuration in force at `index` (the Raft core knows it: RawNode.conf_at); by
        default the one at the applied index, right when no change lies in between."""
        with self._log_lock:
            if index <= self._snap.index:
                raise Compacted(f"compact to {index}: already compacted to {self._snap.index}")
            if index > self._applied:
                raise StoreError(f"compact to {index}: only {self._applied} is applied")
            if index > self._last:  # pragma: no cover - applied <= last
                raise Unavailable(f"compact to {index}: last index is {self._last}")
            c = conf if conf is not None else self._read(self._applied_conf)
            meta = SnapshotMeta(
                index=index, term=self.term(index), voters=c.voters, learners=c.learners
            )
            dbs = self._dbs

            def write(txn: lmdb.Transaction[bytes]) -> None:
                txn.put(K_SNAPSHOT, pack(snapshot_meta_to_list(meta)), db=dbs.meta)
                txn.put(K_SNAPSHOT_DATA, b"", db=dbs.meta)
                logdb.delete_through(txn, dbs.log, index, self._pins(txn, index))

            self._write(write)
            self._snap = meta
            self._terms = {i: t for i, t in self._terms.items() if i > index}

    def log_bytes(self) -> int:
        """Bytes the log's pages take on disk (what compaction gives back)."""

        def size(txn: lmdb.Transaction[bytes]) -> int:
            st = txn.stat(self._dbs.log)
            pages = st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]
            pinned = kvdb.decode_u64("pinned", txn.get(kvdb.PINNED_KEY, db=self._dbs.meta))
            return max(int(pages * st["psize"]) - pinned, 0)

        return self._read(size)


class LogTail:
    """The entries saved last, in memory: the leader applies (and replicates) what it has
    just saved, and reading it back would cost a read transaction and a decode per entry.

    Holds a contiguous run ending at the store's last index (or nothing), bounded in count
    and bytes; the store updates it after each committed save, under its log lock."""

    def __init__(self, max_entries: int = 4096, max_bytes: int = 8 << 20) -> None:
        self._entries: list[Entry] = []
        self._bytes = 0
        self._max_entries = max_entries
        self._max_bytes = max_bytes

    def clear(self) -> None:
        self._entries = []
        self._bytes = 0

    def saved(self, entries: Sequence[Entry]) -> None:
        """`entries` replaced the log from entries[0].index on."""
        if not entries:
            return
        cache = self._entries
        start = entries[0].index
        if cache and cache[0].index <= start <= cache[-1].index + 1:
            if start <= cache[-1].index:
                del cache[start - cache[0].index :]
                self._bytes = sum(e.size() for e in cache)
        else:
            self.clear()
            cache = self._entries
        cache.extend(entries)
        self._bytes += sum(e.size() for e in entries)
        drop = 0
        while len(cache) - drop > self._max_entries or (
            self._bytes > self._max_bytes and len(cache) - drop > 1
        ):
            self._bytes -= cache[drop].size()
            drop += 1
        if drop:
            del cache[:drop]

    def get(self, lo: int, hi: int, max_bytes: int | None) -> list[Entry] | None:
        """Entries [lo, hi) as `entries()` returns them, or None when not all are held."""
        cache = self._entries
        if lo >= hi or not cache or lo < cache[0].index or hi - 1 > cache[-1].index:
            return None
        first = cache[0].index
        return limit_size(cache[lo - first : hi - first], max_bytes)
