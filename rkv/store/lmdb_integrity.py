"""The LMDB store's integrity side: the state hash and scrub passes.

Owns: the state hash as of the applied index and its comparable checkpoints
(state_hash.History, kept by the apply's hooks), correcting the stored hash after a scrub,
and opening, reading and closing a scrub pass over the live state (scrub.py).
Must not: repair records, or decide what a mismatch means (the node does).
"""

from __future__ import annotations

import lmdb

from rkv.store import kv as kvdb
from rkv.store import scrub as scrubdb
from rkv.store import state_hash as sh
from rkv.store.errors import StoreError
from rkv.store.lmdb_base import StoreBase


class IntegrityMixin(StoreBase):
    """The state hash and scrub passes of LmdbStore."""

    def state_hash(self) -> tuple[int, int]:
        """(applied index, state hash at it)."""
        return self._history.current()

    def state_hashes(self) -> list[tuple[int, int]]:
        """The (applied index, state hash) pairs this store can be compared at, oldest first
        (recent checkpoints and the current one; state_hash.History)."""
        return self._history.pairs()

    def correct_state_hash(self, delta: int) -> tuple[int, int]:
        """Add `delta` to the stored state hash (a scrub found the stored records hash to
        their running hash + delta: from now on the hash stands for what is stored, so
        replica comparison shows whether this node's records differ). Returns the new
        (applied index, hash). No scrub pass may be open."""

        def write(txn: lmdb.Transaction[bytes]) -> tuple[int, int]:
            meta = self._dbs.meta
            index, value = kvdb.decode_state_hash(txn.get(kvdb.STATE_HASH_KEY, db=meta))
            value = (value + delta) & sh.MASK
            txn.put(kvdb.STATE_HASH_KEY, kvdb.encode_state_hash(index, value), db=meta)
            return index, value

        out = self._write(write)
        self._history.shift(delta)
        return out

    def scrub_pass(self) -> scrubdb.ScrubPass:
        """Open a scrub pass over the live state (one at a time; close it when done): its
        pieces are read in short read transactions (`ScrubPass.step`), and every apply
        transaction hands its changes to the pass meanwhile (scrub.py)."""

        def register(txn: lmdb.Transaction[bytes]) -> scrubdb.Tracker:
            if self._tracker is not None:
                raise StoreError("a scrub pass is open already")
            applied = kvdb.decode_u64("applied", txn.get(kvdb.APPLIED_KEY, db=self._dbs.meta))
            self._tracker = scrubdb.Tracker(applied)
            return self._tracker

        # in a write transaction: every apply transaction after it tracks its changes
        return scrubdb.ScrubPass(self, self._write(register, durable=False))

    def scrub_close(self, tracker: scrubdb.Tracker) -> None:
        if self._tracker is tracker:
            self._tracker = None

    def scrub_read(
        self, after: scrubdb.Position, max_records: int, max_bytes: int
    ) -> tuple[int, int, int, scrubdb.Chunk]:
        """One piece of a scrub pass, in one read transaction (see scrub.read_chunk)."""

        def read(txn: lmdb.Transaction[bytes]) -> tuple[int, int, int, scrubdb.Chunk]:
            meta = self._dbs.meta
            gen = self._gen(txn)
            applied = kvdb.decode_u64("applied", txn.get(kvdb.APPLIED_KEY, db=meta))
            _, stored = kvdb.decode_state_hash(txn.get(kvdb.STATE_HASH_KEY, db=meta))
            chunk = scrubdb.read_chunk(txn, self._gens[gen], after, max_records, max_bytes)
            return gen, applied, stored, chunk

        return self._read(read)
