"""Reads of the LMDB store's applied state: keys, scans, files, sessions, statistics.

Owns: each read in one read transaction of the live generation (with the revision, the
applied index, it was taken at where asked), every record unsealed (checked) before use.
Must not: write, or hold a transaction across calls.
"""

from __future__ import annotations

from typing import Any

import lmdb

from rkv.codec import MAX_KEY_LEN
from rkv.store import kv as kvdb
from rkv.store import raft_store as logdb
from rkv.store.commands import Manifest, Record, Session
from rkv.store.errors import NotFoundError
from rkv.store.lmdb_base import StoreBase
from rkv.store.seal import FILES, KV, SESSIONS, unseal


class ReadsMixin(StoreBase):
    """The reads of LmdbStore."""

    def get(self, key: bytes) -> bytes | None:
        rec = self.get_record(key)
        return None if rec is None else rec.value

    def get_record(self, key: bytes) -> Record | None:
        if not 0 < len(key) <= MAX_KEY_LEN:
            return None  # no such key can exist (and LMDB would refuse the lookup)
        raw = self._read(lambda txn: txn.get(key, db=self._live(txn).kv))
        return None if raw is None else kvdb.decode_record(unseal(KV, key, raw))

    def scan(
        self, prefix: bytes, limit: int, after: bytes | None = None
    ) -> list[tuple[bytes, bytes]]:
        """Up to `limit` (key, value) pairs whose key starts with `prefix` (and is greater
        than `after`, if given), in key order."""
        return self.scan_revision(prefix, limit, after)[0]

    def _revision(self, txn: lmdb.Transaction[bytes]) -> int:
        return kvdb.decode_u64("applied index", txn.get(kvdb.APPLIED_KEY, db=self._dbs.meta))

    def get_revision(self, key: bytes) -> tuple[bytes | None, int]:
        """(`get(key)`, the revision it was read at: the applied index), from one read
        transaction (an apply in a worker thread may move the applied index meanwhile)."""
        rec, rev = self.get_record_revision(key)
        return (None if rec is None else rec.value), rev

    def get_record_revision(self, key: bytes) -> tuple[Record | None, int]:
        """(`get_record(key)`, the revision it was read at), from one read transaction."""

        def read(txn: lmdb.Transaction[bytes]) -> tuple[Record | None, int]:
            rev = self._revision(txn)
            if not 0 < len(key) <= MAX_KEY_LEN:
                return None, rev
            raw = txn.get(key, db=self._live(txn).kv)
            return (None if raw is None else kvdb.decode_record(unseal(KV, key, raw))), rev

        return self._read(read)

    def scan_revision(
        self, prefix: bytes, limit: int, after: bytes | None = None
    ) -> tuple[list[tuple[bytes, bytes]], int]:
        """(`scan(prefix, limit, after)`, the revision it was taken at), from one read
        transaction."""
        records, rev = self.scan_records(prefix, limit, after)
        return [(k, r.value) for k, r in records], rev

    def scan_records(
        self, prefix: bytes, limit: int, after: bytes | None = None
    ) -> tuple[list[tuple[bytes, Record]], int]:
        """`scan_revision` with each key's whole record (value, revisions, version, lease)."""
        logdb.check_limit(limit)

        def read(txn: lmdb.Transaction[bytes]) -> tuple[list[tuple[bytes, Record]], int]:
            rev = self._revision(txn)
            if len(prefix) > MAX_KEY_LEN:
                return [], rev
            # LMDB refuses keys past 511 bytes; no stored key is longer than MAX_KEY_LEN, so
            # the keys after `after` are exactly those after its first MAX_KEY_LEN bytes
            start = None if after is None else after[:MAX_KEY_LEN]
            return kvdb.scan_records(txn, self._live(txn).kv, prefix, limit, start), rev

        return self._read(read)

    def uploads_in_progress(self) -> list[tuple[bytes, int]]:
        """(upload id, log index of its last staged chunk) of each upload in progress."""
        return self._read(lambda txn: kvdb.uploads_in_progress(txn, self._live(txn).files))

    def file_manifest(self, key: bytes) -> Manifest | None:
        if not 0 < len(key) <= MAX_KEY_LEN:
            return None
        mkey = kvdb.manifest_key(key)
        raw = self._read(lambda txn: txn.get(mkey, db=self._live(txn).files))
        return None if raw is None else kvdb.decode_manifest(unseal(FILES, mkey, raw))

    def read_chunk(self, key: bytes, n: int) -> bytes:
        """Chunk n (0-based) of committed file `key`; NotFoundError if there is none."""
        raw = None
        if 0 < len(key) <= MAX_KEY_LEN and 0 <= n < 1 << 32:
            raw = self._read(lambda txn: kvdb.file_chunk(txn, self._live(txn), key, n))
        if raw is None:
            raise NotFoundError(f"file {key!r} has no chunk {n}")
        return raw

    def session(self, client_id: bytes) -> Session | None:
        """The saved session of a client (for diagnostics and tests)."""
        skey = kvdb.session_key(client_id)
        raw = self._read(lambda txn: txn.get(skey, db=self._live(txn).sessions))
        return None if raw is None else kvdb.decode_session(unseal(SESSIONS, skey, raw))

    def stats(self) -> dict[str, Any]:
        def counts(txn: lmdb.Transaction[bytes]) -> dict[str, int]:
            d = self._live(txn)
            return {
                "kv_keys": txn.stat(d.kv)["entries"],
                "files": kvdb.count_prefix(txn, d.files, b"m"),
                "sessions": txn.stat(d.sessions)["entries"] // 2,
                "pinned_bytes": kvdb.decode_u64("pinned", txn.get(kvdb.PINNED_KEY, db=d.meta)),
            }

        c = self._read(counts)
        with self._rw.shared():
            info = self._env.info()
            psize = self._env.stat()["psize"]
        return {
            "first_index": self.first_index(),
            "last_index": self._last,
            "log_entries": self._last - self._snap.index,
            "snapshot_index": self._snap.index,
            "term": self._hs.term,
            "commit": self._hs.commit,
            "applied_index": self._applied,
            "kv_keys": c["kv_keys"],
            "files": c["files"],
            "sessions": c["sessions"],
            "pinned_bytes": c["pinned_bytes"],
            "map_size": info["map_size"],
            "used_bytes": (info["last_pgno"] + 1) * psize,
        }
