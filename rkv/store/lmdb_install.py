"""Receiving a snapshot into the LMDB store: staging the leader's state, then swapping it in.

Owns: staging into the non-live state-machine generation (begin, one chunk per
transaction, finish: the staged record counts checked), the staged snapshot's meta, and
the swap that makes the staged generation live (run inside the install's save
transaction, lmdb_log.py).
Must not: touch the Raft log or hard state (the install's save does), or stream a snapshot
out (lmdb_source.py).
"""

from __future__ import annotations

from dataclasses import replace

import lmdb

from rkv.codec import SNAP_FILES, CodecError, decode_snapshot_chunk
from rkv.raft.types import SnapshotMeta
from rkv.store import history as watchdb
from rkv.store import kv as kvdb
from rkv.store import scrub as scrubdb
from rkv.store import state_hash as sh
from rkv.store.errors import CorruptionError, SnapshotError
from rkv.store.lmdb_base import StoreBase
from rkv.store.meta import U64
from rkv.store.seal import seal
from rkv.store.snapshot import Staging


class InstallMixin(StoreBase):
    """Snapshot staging and the swap of LmdbStore."""

    def begin_snapshot_install(self, meta: SnapshotMeta) -> None:
        """Start receiving the state for snapshot `meta` into the non-live generation,
        discarding whatever was staged before (an interrupted transfer)."""
        if meta.index < 1:
            raise SnapshotError("cannot stage an empty snapshot")

        def write(txn: lmdb.Transaction[bytes]) -> None:
            gen = 1 - self._gen(txn)
            d = self._gens[gen]
            for db in (d.kv, d.files, d.sessions):
                txn.drop(db, delete=False)
            txn.put(kvdb.STAGING_KEY, Staging(gen, meta).encode(), db=self._dbs.meta)

        self._write(write)

    def _staging(self, txn: lmdb.Transaction[bytes]) -> Staging:
        raw = txn.get(kvdb.STAGING_KEY, db=self._dbs.meta)
        if raw is None:
            raise SnapshotError("no snapshot is being staged")
        st = Staging.decode(raw)
        if st.gen == self._gen(txn):
            raise SnapshotError("the staged snapshot is the live state")  # pragma: no cover
        return st

    def stage_snapshot_chunk(self, seq: int, chunk: bytes) -> int:
        """Write chunk `seq` (0, 1, ... in order) of the snapshot being staged, in one
        transaction. Returns its record count. Raises SnapshotError out of order,
        CorruptionError for a chunk that does not decode."""
        try:
            records = decode_snapshot_chunk(chunk)
        except CodecError as e:
            raise CorruptionError(f"snapshot chunk {seq}: {e}") from e

        def write(txn: lmdb.Transaction[bytes]) -> None:
            st = self._staging(txn)
            if st.done or st.next_seq != seq:
                raise SnapshotError(
                    f"snapshot chunk {seq} out of order (expected {st.next_seq}, done={st.done})"
                )
            d = self._gens[st.gen]
            dbs = (d.kv, d.files, d.sessions)
            total = None if st.state_hash is None else sh.from_bytes(st.state_hash)
            for code, k, v in records:
                if code == SNAP_FILES:
                    kvdb.check_received_files_record(k, v)
                txn.put(k, seal(k, v), db=dbs[code])
                if total is not None:
                    total += scrubdb.stage_record(txn, d, code, k, v)
            state_hash = None if total is None else sh.to_bytes(total & sh.MASK)
            st = replace(
                st, next_seq=seq + 1, records=st.records + len(records), state_hash=state_hash
            )
            txn.put(kvdb.STAGING_KEY, st.encode(), db=self._dbs.meta)

        self._write(write)
        return len(records)

    def finish_snapshot_staging(self, chunks: int, records: int) -> SnapshotMeta:
        """The sender says it sent `chunks` chunks holding `records` records: check that and
        mark the staged state complete (ready for install_snapshot). Returns its meta."""

        def write(txn: lmdb.Transaction[bytes]) -> SnapshotMeta:
            st = self._staging(txn)
            if (st.next_seq, st.records) != (chunks, records):
                raise SnapshotError(
                    f"snapshot incomplete: {st.next_seq} chunks / {st.records} records staged, "
                    f"{chunks} / {records} sent"
                )
            txn.put(kvdb.STAGING_KEY, replace(st, done=True).encode(), db=self._dbs.meta)
            return st.meta

        return self._write(write)

    def staged_snapshot(self) -> SnapshotMeta | None:
        """The meta of a complete staged snapshot awaiting install, if any."""

        def read(txn: lmdb.Transaction[bytes]) -> SnapshotMeta | None:
            raw = txn.get(kvdb.STAGING_KEY, db=self._dbs.meta)
            st = None if raw is None else Staging.decode(raw)
            return st.meta if st is not None and st.done else None

        return self._read(read)

    def _swap_in_staged(self, txn: lmdb.Transaction[bytes], meta: SnapshotMeta) -> None:
        st = self._staging(txn)
        if not st.done or (st.meta.index, st.meta.term) != (meta.index, meta.term):
            raise SnapshotError(
                f"no complete staged state for snapshot {meta.index}@{meta.term} "
                f"(staged: {st.meta.index}@{st.meta.term}, done={st.done})"
            )
        old = self._gens[1 - st.gen]
        txn.put(kvdb.GEN_KEY, bytes([st.gen]), db=self._dbs.meta)
        for db in (old.kv, old.files, old.sessions):
            txn.drop(db, delete=False)
        txn.delete(kvdb.STAGING_KEY, db=self._dbs.meta)
        txn.delete(kvdb.PINNED_KEY, db=self._dbs.meta)
        txn.put(kvdb.APPLIED_KEY, U64.pack(meta.index), db=self._dbs.meta)
        # the staged records' hash, or (staged before schema 3) computed from them now
        if st.state_hash is not None:
            value = sh.from_bytes(st.state_hash)
        else:
            value = scrubdb.rebuild_state_hash(txn, self._gens[st.gen])
        txn.put(kvdb.STATE_HASH_KEY, kvdb.encode_state_hash(meta.index, value), db=self._dbs.meta)
        if meta.voters:
            txn.put(kvdb.CONF_KEY, kvdb.encode_conf(meta.conf), db=self._dbs.meta)
        watchdb.reset(txn, self._watch_db, self._dbs.meta, meta.index)
