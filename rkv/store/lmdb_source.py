"""A snapshot stream out of the LMDB store: the applied state from one read transaction.

Owns: LmdbSnapshotSource, the records of the live generation in chunks (upload data
exported, every payload checked), and its revocation when the store resizes or closes.
Must not: hold the store's readers/writer lock between chunks or wait for its consumer.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

import lmdb

from rkv.codec import SNAP_FILES, SNAP_KV, SNAP_SESSIONS, SnapshotRecord
from rkv.store import kv as kvdb
from rkv.store.errors import CorruptionError, SnapshotError, StoreError
from rkv.store.seal import KV, SESSIONS, unseal
from rkv.store.snapshot import ChunkCounter, batch

if TYPE_CHECKING:
    from rkv.store.lmdb_base import StoreBase


class LmdbSnapshotSource:
    """SnapshotSource over one LMDB read transaction (MVCC: a fixed view while writes go on).

    It does not hold the store's readers/writer lock between chunks: a map resize or close
    (which need every transaction gone) revokes it instead, under `_use` so never in the
    middle of a chunk, and the next chunk raises SnapshotError. Nothing ever waits for a
    stream's consumer, which may sit on the same event loop as a writer."""

    def __init__(self, store: StoreBase, max_chunk: int) -> None:
        self._store = store
        self._max_chunk = max_chunk
        self._counter = ChunkCounter()
        self._use = threading.Lock()
        self._txn: lmdb.Transaction[bytes] | None = None
        with store._rw.shared():
            store._check_open()
            txn = store._env.begin()
            try:
                self.meta = store._snapshot_meta(txn)
                self._dbs = store._live(txn)
            except BaseException:
                txn.abort()
                raise
            self._txn = txn
            store._sources.add(self)

    @property
    def records(self) -> int:
        return self._counter.records

    @property
    def chunk_count(self) -> int:
        return self._counter.chunk_count

    def revoke(self) -> None:
        """End the transaction now (the caller excludes every other use of the store)."""
        with self._use:
            if self._txn is not None:
                self._txn.abort()
                self._txn = None
            self._store._sources.discard(self)

    def _records(self) -> Iterator[SnapshotRecord]:
        d = self._dbs
        for code, db in ((SNAP_KV, d.kv), (SNAP_FILES, d.files), (SNAP_SESSIONS, d.sessions)):
            key: bytes | None = None
            while True:
                # a batch of records per hold of `_use`, resuming after the last key
                with self._use:
                    txn = self._txn
                    if txn is None:
                        raise SnapshotError("snapshot stream stopped: the store resized or closed")
                    cur = txn.cursor(db=db)
                    found = cur.first() if key is None else cur.set_range(key)
                    if found and key is not None and cur.key() == key:
                        found = cur.next()
                    batch: list[SnapshotRecord] = []
                    size = 0
                    while found and size < self._max_chunk:
                        k, v = cur.item()
                        if code == SNAP_FILES:
                            out = kvdb.export_files_record(txn, d, k, v)
                        else:  # the payload, checked: a damaged record is never shipped
                            out = unseal(KV if code == SNAP_KV else SESSIONS, k, v)
                        if out is not None:
                            batch.append((code, k, out))
                            size += len(k) + len(out)
                        found = cur.next()
                    cur.close()
                if not batch:
                    break
                yield from batch
                key = batch[-1][1]
                if not found:
                    break

    def chunks(self) -> Iterator[bytes]:
        try:
            yield from batch(self._records(), self._max_chunk, self._counter)
        except (lmdb.CorruptedError, lmdb.PageNotFoundError) as e:
            raise CorruptionError(f"{self._store.path}: {e}") from e
        except lmdb.Error as e:
            raise StoreError(f"snapshot read from {self._store.path} failed: {e}") from e

    def close(self) -> None:
        self.revoke()

    def __enter__(self) -> LmdbSnapshotSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
