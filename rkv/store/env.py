"""LmdbStore: one LMDB environment per node holding the Raft log, hard state and state machine.

Owns: the facade. Opening the store (an exclusive lock on the data dir, identity and schema
checks, the schema upgrade of an older data dir in the opening transaction (migrate.py),
the caches loaded from the meta records), the group commit `save_and_apply` (a save and an
apply in ONE durable transaction), the store's side of backups (`write_backup`, a
read-only copy of the environment from one read transaction; `adopt_backup_copy` in
adopt.py seeds a new store from one), opening snapshot streams, and closing. The rest is
done by its parts, each owning one concern:
  lmdb_base.py      the environment, its read/write transactions, map growth, recovery;
  lmdb_log.py       the Raft log side: Storage reads, `save`, `install_snapshot`, compaction;
  lmdb_install.py   staging a leader's snapshot and swapping it in;
  lmdb_source.py    streaming the applied state out (`open_snapshot`);
  lmdb_apply.py     `apply` and its hooks: changes for watchers, the durable watch history,
                    leases, the state hash history, a scrub pass's tracking;
  lmdb_integrity.py the state hash and scrub passes;
  lmdb_reads.py     reads of the applied state;
  meta.py           the meta records' keys and the schema version.
Must not: use trio or hold a transaction across calls. Every method is blocking and
self-contained, so the runtime may call it from any worker thread.

Concurrency: a readers/writer lock lets reads and writes run together while the map is
resized alone (LMDB forbids resizing with transactions active in the process). LMDB itself
serializes writers.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Sequence
from typing import IO

import lmdb

from rkv.codec import (
    CodecError,
    decode_hard_state,
    encode_hard_state,
    pack,
    snapshot_meta_from_list,
    snapshot_meta_to_list,
    unpack,
)
from rkv.raft.types import Entry, HardState, NodeId, SnapshotMeta
from rkv.store import history as watchdb
from rkv.store import kv as kvdb
from rkv.store import migrate
from rkv.store import raft_store as logdb
from rkv.store import scrub as scrubdb
from rkv.store import state_hash as sh
from rkv.store.adopt import adopt_backup_copy
from rkv.store.commands import DEFAULT_MAX_SESSIONS, ApplyResult, Change, UploadHashes
from rkv.store.errors import CorruptionError, StoreError, StoreIdentityError
from rkv.store.leases import DEFAULT_MAX_LEASES, LeaseEventLog
from rkv.store.lmdb_apply import ApplyMixin
from rkv.store.lmdb_base import DEFAULT_MAP_SIZE, DEFAULT_MAX_MAP_SIZE, RWLock, open_env
from rkv.store.lmdb_install import InstallMixin
from rkv.store.lmdb_integrity import IntegrityMixin
from rkv.store.lmdb_log import LogTail, RaftLogMixin
from rkv.store.lmdb_reads import ReadsMixin
from rkv.store.lmdb_source import LmdbSnapshotSource
from rkv.store.meta import (
    K_CLUSTER,
    K_HARD_STATE,
    K_NODE,
    K_SCHEMA,
    K_SNAPSHOT,
    K_VOTERS,
    SCHEMA_VERSION,
    U32,
    U64,
    need,
)
from rkv.store.snapshot import DEFAULT_CHUNK_BYTES, BackupCopy, SnapshotSource

__all__ = [
    "DEFAULT_MAP_SIZE",
    "DEFAULT_MAX_MAP_SIZE",
    "LOCK_FILE",
    "SCHEMA_VERSION",
    "LmdbStore",
    "adopt_backup_copy",
    "open_store",
]

LOCK_FILE = "rkv.lock"
_SNAPSHOT_HEADROOM = 256 << 20
"""Free map space ensured before a snapshot stream opens (the map cannot grow while it runs)."""


def open_store(
    path: str | os.PathLike[str],
    *,
    cluster_id: str,
    node_id: NodeId,
    voters: Sequence[NodeId],
    map_size: int = DEFAULT_MAP_SIZE,
    max_map_size: int = DEFAULT_MAX_MAP_SIZE,
    max_sessions: int = DEFAULT_MAX_SESSIONS,
    max_leases: int = DEFAULT_MAX_LEASES,
) -> LmdbStore:
    """Open the store in directory `path`, creating it (with `voters` as the initial
    configuration) if it does not exist. An existing store keeps its stored voters.
    Raises StoreIdentityError for a store of another cluster/node or schema version,
    StoreError if another process (or another open in this one) holds the data dir."""
    path = os.fspath(path)
    os.makedirs(path, exist_ok=True)
    lock_fd = os.open(os.path.join(path, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(lock_fd)
        raise StoreError(f"data dir {path} is in use (already open): {e}") from e
    try:
        return LmdbStore(
            path,
            lock_fd,
            cluster_id=cluster_id,
            node_id=node_id,
            voters=tuple(voters),
            map_size=map_size,
            max_map_size=max_map_size,
            max_sessions=max_sessions,
            max_leases=max_leases,
        )
    except BaseException:
        os.close(lock_fd)  # releases the flock
        raise


class LmdbStore(RaftLogMixin, InstallMixin, ApplyMixin, IntegrityMixin, ReadsMixin):
    """The durable store of one node. Build it with open_store()."""

    def __init__(
        self,
        path: str,
        lock_fd: int,
        *,
        cluster_id: str,
        node_id: NodeId,
        voters: tuple[NodeId, ...],
        map_size: int,
        max_map_size: int,
        max_sessions: int,
        max_leases: int = DEFAULT_MAX_LEASES,
    ) -> None:
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {max_sessions}")
        self._max_leases = max_leases
        self._lease_events = LeaseEventLog()
        self._lease_total: int | None = None
        """How many leases the applied state holds, once an apply counted them (None after
        an open or an install: the next grant counts)."""
        self._path = path
        self._lock_fd = lock_fd
        self._max_map_size = max(max_map_size, map_size)
        self._max_sessions = max_sessions
        self._rw = RWLock()
        self._log_lock = threading.RLock()
        self._closed = False
        self._upload_hashes = UploadHashes()
        self._sources: set[LmdbSnapshotSource] = set()
        self._tail = LogTail()
        self._tracker: scrubdb.Tracker | None = None
        """The change tracking of the open scrub pass, if any (set in a write transaction)."""
        self.record_changes = False
        """Record each committed apply's changes for `take_changes` (a node with watchers)."""
        self._changes: list[Change] = []
        self._changes_lock = threading.Lock()
        self.history_bounds = watchdb.Bounds()
        """How much durable watch history the apply keeps (history.py; the node sets its
        watch_history bounds)."""
        self.upgraded_records: int | None = None
        """Records rewritten by a schema upgrade when this open found an older data dir."""
        self._env = open_env(path, map_size)
        try:
            self._gens = self._open_dbs()
            self._dbs = self._gens[0]
            self._write(lambda txn: self._init_meta(txn, cluster_id, node_id, voters))
            self._load_caches()
        except BaseException:
            self._env.close()
            raise

    # --- opening ----------------------------------------------------------------------------

    def _init_meta(
        self,
        txn: lmdb.Transaction[bytes],
        cluster_id: str,
        node_id: NodeId,
        voters: tuple[NodeId, ...],
    ) -> None:
        meta = self._dbs.meta
        schema = txn.get(K_SCHEMA, db=meta)
        if schema is None:
            if any(txn.stat(db)["entries"] for db in self._all_dbs()):
                raise CorruptionError(f"data dir {self._path} has data but no schema version")
            txn.put(K_SCHEMA, U32.pack(SCHEMA_VERSION), db=meta)
            txn.put(K_CLUSTER, cluster_id.encode(), db=meta)
            txn.put(K_NODE, node_id.encode(), db=meta)
            txn.put(K_VOTERS, pack(list(voters)), db=meta)
            # A bootstrap member's new data dir may be a replaced disk (rkv.raft.recovery).
            hs = HardState(recovering=bool(voters))
            txn.put(K_HARD_STATE, encode_hard_state(hs), db=meta)
            txn.put(K_SNAPSHOT, pack(snapshot_meta_to_list(SnapshotMeta())), db=meta)
            txn.put(kvdb.APPLIED_KEY, U64.pack(0), db=meta)
            txn.put(kvdb.STATE_HASH_KEY, kvdb.encode_state_hash(0, 0), db=meta)
            return
        version = U32.unpack(schema)[0] if len(schema) == 4 else None
        if version != SCHEMA_VERSION and version not in migrate.UPGRADABLE:
            raise StoreIdentityError(
                f"data dir {self._path} has schema version {version}, "
                f"this rkv reads version {SCHEMA_VERSION}"
            )
        stored_cluster = (txn.get(K_CLUSTER, db=meta) or b"").decode(errors="replace")
        stored_node = (txn.get(K_NODE, db=meta) or b"").decode(errors="replace")
        if (stored_cluster, stored_node) != (cluster_id, node_id):
            raise StoreIdentityError(
                f"data dir {self._path} belongs to cluster {stored_cluster!r} node "
                f"{stored_node!r}, not cluster {cluster_id!r} node {node_id!r}"
            )
        if version != SCHEMA_VERSION:
            # in this (durable) transaction: a crash leaves the old schema or the new one
            self.upgraded_records = migrate.upgrade(txn, self._gens, version)
            txn.put(K_SCHEMA, U32.pack(SCHEMA_VERSION), db=meta)

    def _load_caches(self) -> None:
        meta = self._dbs.meta

        def load(
            txn: lmdb.Transaction[bytes],
        ) -> tuple[str, str, bytes, bytes, bytes, bytes | None, bytes | None]:
            return (
                (txn.get(K_CLUSTER, db=meta) or b"").decode(errors="replace"),
                (txn.get(K_NODE, db=meta) or b"").decode(errors="replace"),
                need(txn.get(K_HARD_STATE, db=meta), "hard state"),
                need(txn.get(K_VOTERS, db=meta), "voters"),
                need(txn.get(K_SNAPSHOT, db=meta), "snapshot meta"),
                txn.get(kvdb.APPLIED_KEY, db=meta),
                txn.get(kvdb.STATE_HASH_KEY, db=meta),
            )

        loaded = self._read(load)
        self.cluster_id, self.node_id, hs, voters_raw, snap_raw, applied, state = loaded
        try:
            self._hs = decode_hard_state(hs)
            voters = unpack(voters_raw)
            self._snap = snapshot_meta_from_list(unpack(snap_raw))
        except CodecError as e:
            raise CorruptionError(f"meta of {self._path}: {e}") from e
        if type(voters) is not list or not all(type(v) is str for v in voters):
            raise CorruptionError(f"meta of {self._path}: bad voters")
        self._voters: tuple[NodeId, ...] = tuple(voters)
        self._applied = kvdb.decode_u64("applied index", applied)
        index, value = kvdb.decode_state_hash(state)
        if index != self._applied:
            raise CorruptionError(
                f"meta of {self._path}: state hash of index {index}, applied index {self._applied}"
            )
        self._history = sh.History(index, value)
        self._watch_meta = self._read(lambda txn: watchdb.read_meta(txn, meta, self._applied))
        """The durable watch history's meta record as last committed (the apply passes it on)."""
        self._terms: dict[int, int] = {}
        self._last = self._read(self._check_log_bounds)
        self._follow_live_gen()

    def _check_log_bounds(self, txn: lmdb.Transaction[bytes]) -> int:
        """The last index; the log must be exactly [snapshot + 1, last] with no hole, plus
        records below it that staged chunks pin (kv.py)."""
        snap = self._snap.index
        pinned = kvdb.pinned_keys(txn, self._live(txn).files, 0, snap)
        cur = txn.cursor(db=self._dbs.log)
        below = 0
        found = cur.first()
        while found and logdb.key_index(cur.key()) <= snap:
            if cur.key() not in pinned:
                raise CorruptionError(
                    f"log record {logdb.key_index(cur.key())} at or below the snapshot "
                    f"({snap}) is not pinned by a staged chunk"
                )
            below += 1
            found = cur.next()
        if not found:
            return snap
        first = logdb.key_index(cur.key())
        cur.last()
        last = logdb.key_index(cur.key())
        if first != snap + 1:
            raise CorruptionError(f"log starts at {first} but the snapshot is at {snap}")
        n = txn.stat(self._dbs.log)["entries"] - below
        if n != last - first + 1:
            raise CorruptionError(f"log [{first}, {last}] has {n} entries")
        return last

    # --- snapshots out and backups -------------------------------------------------------

    def open_snapshot(self, max_chunk: int = DEFAULT_CHUNK_BYTES) -> SnapshotSource:
        """A consistent stream of the applied state (an LMDB read transaction: writes go on
        meanwhile). Use it from one thread at a time and close it promptly: while it is
        open, LMDB cannot reuse pages freed after it began, and the map cannot be resized.
        The map is grown first so that a resize during the stream is unlikely; if one is
        needed anyway, it ends the stream, whose next chunk raises SnapshotError."""
        self._ensure_headroom()
        return LmdbSnapshotSource(self, max_chunk)

    def _ensure_headroom(self) -> None:
        with self._rw.exclusive():
            self._check_open()
            info = self._env.info()
            used = (info["last_pgno"] + 1) * self._env.stat()["psize"]
            want = min(self._max_map_size, 2 * used + _SNAPSHOT_HEADROOM)
            if info["map_size"] < want:
                self._revoke_sources()
                self._env.set_mapsize(want)

    def write_backup(self, f: IO[bytes]) -> BackupCopy:
        """Read-only: write a compacted copy of the whole environment (an LMDB data.mdb) to
        `f` from ONE read transaction, and return what that copy holds (applied index, its
        term, keys, files) as of the same transaction. Writes go on meanwhile (MVCC); a map
        resize waits for the copy. Every record of the state machine is checked first
        (IntegrityError: no copy of damaged data). `adopt_backup_copy` turns such a copy
        into a store."""

        def copy(txn: lmdb.Transaction[bytes]) -> BackupCopy:
            live = self._live(txn)
            kvdb.verify_state(txn, live)  # IntegrityError: no backup of damaged records
            self._env.copyfd(f.fileno(), compact=True, txn=txn)
            sm = self._snapshot_meta(txn)
            return BackupCopy(
                index=sm.index,
                term=sm.term,
                keys=txn.stat(live.kv)["entries"],
                files=kvdb.count_prefix(txn, live.files, b"m"),
            )

        out = self._read(copy)
        f.flush()
        return out

    # --- group commit ---------------------------------------------------------------------

    def save_and_apply(
        self, hard_state: HardState | None, entries: Sequence[Entry], committed: Sequence[Entry]
    ) -> list[ApplyResult]:
        """Group commit: what `save(hard_state, entries)` then `apply(committed)` do, in ONE
        durable transaction (one fsync for the Raft log and the state machine). The log
        entries are written first, so `committed` may include some of `entries`."""
        if not committed:
            self.save(hard_state, entries)
            return []
        fn, done = self._apply_fn(committed)
        results: list[ApplyResult] = self._save(hard_state, entries, None, install=False, then=fn)
        self._applied = committed[-1].index
        done()
        return results

    def close(self) -> None:
        with self._rw.exclusive():
            if self._closed:
                return
            self._revoke_sources()
            self._closed = True
            with contextlib.suppress(lmdb.Error):
                self._env.sync(True)  # a clean stop leaves even the last apply durable
            self._env.close()
            os.close(self._lock_fd)

    def __enter__(self) -> LmdbStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
