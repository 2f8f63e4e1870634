"""LmdbStore: one LMDB environment per node holding the Raft log, hard state and state machine.

Owns: opening the environment (identity and schema checks, an exclusive lock on the data dir),
the two write paths, each exactly one durable transaction (`save` for the Raft side, `apply`
for committed commands + applied index + sessions), reads, map growth, and turning LMDB
failures into rkv.store.errors.
Must not: use trio or hold a transaction across calls. Every method is blocking and
self-contained, so the runtime may call it from any worker thread.

Concurrency: a readers/writer lock lets reads and writes run together while the map is
resized alone (LMDB forbids resizing with transactions active in the process). LMDB itself
serializes writers.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import lmdb

from rkv.codec import (
    MAX_KEY_LEN,
    CodecError,
    decode_hard_state,
    encode_hard_state,
    pack,
    snapshot_meta_from_list,
    snapshot_meta_to_list,
    unpack,
)
from rkv.raft.storage import Compacted, Unavailable
from rkv.raft.types import Entry, HardState, NodeId, Snapshot, SnapshotMeta
from rkv.store import kv as kvdb
from rkv.store import raft_store as logdb
from rkv.store.commands import (
    DEFAULT_MAX_SESSIONS,
    ApplyResult,
    Manifest,
    Record,
    Session,
    apply_entries,
)
from rkv.store.errors import (
    CorruptionError,
    NotFoundError,
    StoreError,
    StoreFullError,
    StoreIdentityError,
)

SCHEMA_VERSION = 1
DEFAULT_MAP_SIZE = 64 << 20
DEFAULT_MAX_MAP_SIZE = 1 << 40
LOCK_FILE = "rkv.lock"
_TERM_CACHE = 4096
_MAX_GROWS = 64
_LOW_SPACE = 64 << 20

_K_SCHEMA = b"schema"
_K_CLUSTER = b"cluster_id"
_K_NODE = b"node_id"
_K_VOTERS = b"voters"
_K_HARD_STATE = b"hard_state"
_K_SNAPSHOT = b"snapshot"
_K_SNAPSHOT_DATA = b"snapshot_data"
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")

T = TypeVar("T")


class _RWLock:
    """Many shared holders or one exclusive holder; waiting exclusive holders block new shared
    ones so a map resize is not starved. Not reentrant: never nest acquisitions."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._waiting = 0

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


def open_store(
    path: str | os.PathLike[str],
    *,
    cluster_id: str,
    node_id: NodeId,
    voters: Sequence[NodeId],
    map_size: int = DEFAULT_MAP_SIZE,
    max_map_size: int = DEFAULT_MAX_MAP_SIZE,
    max_sessions: int = DEFAULT_MAX_SESSIONS,
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
        )
    except BaseException:
        os.close(lock_fd)  # releases the flock
        raise


def _open_env(path: str, map_size: int) -> lmdb.Environment:
    try:
        return lmdb.open(
            path,
            map_size=map_size,
            subdir=True,
            max_dbs=8,
            sync=True,
            metasync=True,
            writemap=False,
            map_async=False,
            readahead=False,
            meminit=False,
            lock=True,
        )
    except (lmdb.InvalidError, lmdb.CorruptedError, lmdb.VersionMismatchError) as e:
        raise CorruptionError(f"{path} is not a usable LMDB environment: {e}") from e
    except lmdb.Error as e:
        raise StoreError(f"cannot open {path}: {e}") from e


class LmdbStore:
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
    ) -> None:
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {max_sessions}")
        self._path = path
        self._lock_fd = lock_fd
        self._max_map_size = max(max_map_size, map_size)
        self._max_sessions = max_sessions
        self._rw = _RWLock()
        self._log_lock = threading.RLock()
        self._closed = False
        self._env = _open_env(path, map_size)
        try:
            self._dbs = self._open_dbs()
            self._write(lambda txn: self._init_meta(txn, cluster_id, node_id, voters))
            self._load_caches()
        except BaseException:
            self._env.close()
            raise

    # --- opening ----------------------------------------------------------------------------

    def _open_dbs(self) -> kvdb.Dbs:
        def opened() -> kvdb.Dbs:
            env = self._env
            return kvdb.Dbs(
                log=env.open_db(b"log"),
                meta=env.open_db(b"meta"),
                kv=env.open_db(b"kv"),
                files=env.open_db(b"files"),
                sessions=env.open_db(b"sessions"),
            )

        for _ in range(_MAX_GROWS):
            try:
                return opened()
            except lmdb.MapFullError:
                self._grow()
            except lmdb.Error as e:
                raise StoreError(f"cannot open databases in {self._path}: {e}") from e
        raise StoreFullError(f"cannot open databases in {self._path}: map full")

    def _init_meta(
        self,
        txn: lmdb.Transaction[bytes],
        cluster_id: str,
        node_id: NodeId,
        voters: tuple[NodeId, ...],
    ) -> None:
        meta = self._dbs.meta
        schema = txn.get(_K_SCHEMA, db=meta)
        if schema is None:
            if any(txn.stat(db)["entries"] for db in self._all_dbs()):
                raise CorruptionError(f"data dir {self._path} has data but no schema version")
            txn.put(_K_SCHEMA, _U32.pack(SCHEMA_VERSION), db=meta)
            txn.put(_K_CLUSTER, cluster_id.encode(), db=meta)
            txn.put(_K_NODE, node_id.encode(), db=meta)
            txn.put(_K_VOTERS, pack(list(voters)), db=meta)
            txn.put(_K_HARD_STATE, encode_hard_state(HardState()), db=meta)
            txn.put(_K_SNAPSHOT, pack(snapshot_meta_to_list(SnapshotMeta())), db=meta)
            txn.put(kvdb.APPLIED_KEY, _U64.pack(0), db=meta)
            return
        version = _U32.unpack(schema)[0] if len(schema) == 4 else None
        if version != SCHEMA_VERSION:
            raise StoreIdentityError(
                f"data dir {self._path} has schema version {version}, "
                f"this rkv reads version {SCHEMA_VERSION}"
            )
        stored_cluster = (txn.get(_K_CLUSTER, db=meta) or b"").decode(errors="replace")
        stored_node = (txn.get(_K_NODE, db=meta) or b"").decode(errors="replace")
        if (stored_cluster, stored_node) != (cluster_id, node_id):
            raise StoreIdentityError(
                f"data dir {self._path} belongs to cluster {stored_cluster!r} node "
                f"{stored_node!r}, not cluster {cluster_id!r} node {node_id!r}"
            )

    def _all_dbs(self) -> tuple[lmdb._Database, ...]:
        d = self._dbs
        return (d.log, d.meta, d.kv, d.files, d.sessions)

    def _load_caches(self) -> None:
        meta = self._dbs.meta

        def load(
            txn: lmdb.Transaction[bytes],
        ) -> tuple[str, str, bytes, bytes, bytes, bytes | None]:
            return (
                (txn.get(_K_CLUSTER, db=meta) or b"").decode(errors="replace"),
                (txn.get(_K_NODE, db=meta) or b"").decode(errors="replace"),
                _need(txn.get(_K_HARD_STATE, db=meta), "hard state"),
                _need(txn.get(_K_VOTERS, db=meta), "voters"),
                _need(txn.get(_K_SNAPSHOT, db=meta), "snapshot meta"),
                txn.get(kvdb.APPLIED_KEY, db=meta),
            )

        self.cluster_id, self.node_id, hs, voters_raw, snap_raw, applied = self._read(load)
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
        self._terms: dict[int, int] = {}
        self._last = self._read(self._check_log_bounds)

    def _check_log_bounds(self, txn: lmdb.Transaction[bytes]) -> int:
        """The last index; the log must be exactly [snapshot + 1, last] with no hole."""
        cur = txn.cursor(db=self._dbs.log)
        if not cur.last():
            return self._snap.index
        last = logdb.key_index(cur.key())
        cur.first()
        first = logdb.key_index(cur.key())
        if first != self._snap.index + 1:
            raise CorruptionError(
                f"log starts at {first} but the snapshot is at {self._snap.index}"
            )
        n = txn.stat(self._dbs.log)["entries"]
        if n != last - first + 1:
            raise CorruptionError(f"log [{first}, {last}] has {n} entries")
        return last

    # --- transactions ---------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("store is closed")

    def _read(self, fn: Callable[[lmdb.Transaction[bytes]], T]) -> T:
        with self._rw.shared():
            self._check_open()
            try:
                with self._env.begin() as txn:
                    return fn(txn)
            except (lmdb.CorruptedError, lmdb.PageNotFoundError) as e:
                raise CorruptionError(f"{self._path}: {e}") from e
            except lmdb.Error as e:
                raise StoreError(f"read from {self._path} failed: {e}") from e

    def _write(self, fn: Callable[[lmdb.Transaction[bytes]], T]) -> T:
        """Run fn in one write transaction and commit it durably. On MapFullError the
        transaction is aborted, the map doubled and fn run again from scratch (fn must be a
        pure function of the transaction's contents). Any other failure aborts it."""
        for _ in range(_MAX_GROWS):
            failure: lmdb.Error | None = None
            with self._rw.shared():
                self._check_open()
                try:
                    with self._env.begin(write=True) as txn:
                        return fn(txn)
                except lmdb.MapFullError:
                    pass
                except lmdb.Error as e:
                    failure = e
            if failure is not None:
                raise self._write_failed(failure) from failure
            self._grow()
        raise StoreFullError(f"{self._path}: map still full after {_MAX_GROWS} resizes")

    def _grow(self) -> None:
        with self._rw.exclusive():
            current = self._env.info()["map_size"]
            if current >= self._max_map_size:
                raise StoreFullError(
                    f"{self._path}: map size limit of {self._max_map_size} bytes reached"
                )
            self._env.set_mapsize(min(current * 2, self._max_map_size))

    def _write_failed(self, e: lmdb.Error) -> StoreError:
        if isinstance(e, (lmdb.CorruptedError, lmdb.PageNotFoundError)):
            return CorruptionError(f"{self._path}: {e}")
        full = self._looks_full(e)
        self._recover()
        if full:
            return StoreFullError(f"disk full: write to {self._path} refused ({e})")
        return StoreError(f"write to {self._path} failed: {e}")

    def _looks_full(self, e: lmdb.Error) -> bool:
        # LMDB reports a short page write (which is how a full disk shows) as EIO.
        msg = str(e)
        if any(os.strerror(n) in msg for n in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)):
            return True
        if os.strerror(errno.EIO) in msg:
            st = os.statvfs(self._path)
            return st.f_bavail * st.f_frsize < _LOW_SPACE
        return False

    def _recover(self) -> None:
        """After a failed commit LMDB may flag the environment as unusable (a failed meta-page
        write); the data on disk is still the last committed state, so reopen it."""
        try:
            with self._rw.shared(), self._env.begin(write=True) as txn:
                txn.abort()
        except lmdb.PanicError:
            with self._rw.exclusive():
                size = self._env.info()["map_size"]
                self._env.close()
                self._env = _open_env(self._path, size)
                self._dbs = self._open_dbs()
        except lmdb.Error:
            pass  # the next operation reports it

    # --- raft side: the Storage protocol -------------------------------------------------

    def initial_state(self) -> tuple[HardState, tuple[NodeId, ...]]:
        self._check_open()
        voters = self._snap.voters if self._snap.index else self._voters
        return self._hs, voters

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
            return self._read(lambda txn: logdb.read_entries(txn, self._dbs.log, lo, hi, max_bytes))

    def snapshot(self) -> Snapshot:
        meta = self._snap
        if not meta.index:
            return Snapshot()
        data = self._read(lambda txn: txn.get(_K_SNAPSHOT_DATA, db=self._dbs.meta))
        return Snapshot(meta=meta, data=data or b"")

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None = None,
    ) -> None:
        """Persist, in one fsynced transaction: `snapshot` (dropping the log up to it, or all
        of it if the log does not contain the snapshot's last entry), then `entries`
        (replacing every stored entry with index >= entries[0].index), then `hard_state`."""
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

            def write(txn: lmdb.Transaction[bytes]) -> None:
                if snapshot is not None:
                    txn.put(_K_SNAPSHOT, pack(snapshot_meta_to_list(snapshot.meta)), db=dbs.meta)
                    txn.put(_K_SNAPSHOT_DATA, snapshot.data, db=dbs.meta)
                    if keep_log:
                        logdb.delete_through(txn, dbs.log, snapshot.meta.index)
                    else:
                        logdb.delete_from(txn, dbs.log, 0)
                if entries:
                    logdb.delete_from(txn, dbs.log, entries[0].index)
                    logdb.append(txn, dbs.log, entries)
                if hard_state is not None:
                    txn.put(_K_HARD_STATE, encode_hard_state(hard_state), db=dbs.meta)

            self._write(write)

            # the transaction is durable: bring the caches in line with it
            if snapshot is not None:
                self._snap = snap
                self._terms = {i: t for i, t in self._terms.items() if i > snap.index}
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

    # --- state machine side --------------------------------------------------------------

    def apply(self, entries: Sequence[Entry]) -> list[ApplyResult]:
        """Apply committed entries (which must continue applied_index() exactly) in one
        durable transaction together with the new applied index and session updates."""
        if not entries:
            return []
        results = self._write(
            lambda txn: apply_entries(
                kvdb.LmdbStateTxn(txn, self._dbs), entries, self._max_sessions
            )
        )
        self._applied = entries[-1].index
        return results

    def applied_index(self) -> int:
        return self._applied

    def get(self, key: bytes) -> bytes | None:
        rec = self.get_record(key)
        return None if rec is None else rec.value

    def get_record(self, key: bytes) -> Record | None:
        if not 0 < len(key) <= MAX_KEY_LEN:
            return None  # no such key can exist (and LMDB would refuse the lookup)
        raw = self._read(lambda txn: txn.get(key, db=self._dbs.kv))
        return None if raw is None else kvdb.decode_record(raw)

    def scan(self, prefix: bytes, limit: int) -> list[tuple[bytes, bytes]]:
        """Up to `limit` (key, value) pairs whose key starts with `prefix`, in key order."""
        logdb.check_limit(limit)
        if len(prefix) > MAX_KEY_LEN:
            return []
        return self._read(lambda txn: kvdb.scan(txn, self._dbs.kv, prefix, limit))

    def file_manifest(self, key: bytes) -> Manifest | None:
        if not 0 < len(key) <= MAX_KEY_LEN:
            return None
        raw = self._read(lambda txn: txn.get(kvdb.manifest_key(key), db=self._dbs.files))
        return None if raw is None else kvdb.decode_manifest(raw)

    def read_chunk(self, key: bytes, n: int) -> bytes:
        """Chunk n (0-based) of committed file `key`; NotFoundError if there is none."""
        raw = None
        if 0 < len(key) <= MAX_KEY_LEN and 0 <= n < 1 << 32:
            raw = self._read(lambda txn: txn.get(kvdb.chunk_key(key, n), db=self._dbs.files))
        if raw is None:
            raise NotFoundError(f"file {key!r} has no chunk {n}")
        return raw

    def session(self, client_id: bytes) -> Session | None:
        """The saved session of a client (for diagnostics and tests)."""
        raw = self._read(lambda txn: txn.get(kvdb.session_key(client_id), db=self._dbs.sessions))
        return None if raw is None else kvdb.decode_session(raw)

    def stats(self) -> dict[str, Any]:
        def counts(txn: lmdb.Transaction[bytes]) -> dict[str, int]:
            d = self._dbs
            return {
                "log_entries": txn.stat(d.log)["entries"],
                "kv_keys": txn.stat(d.kv)["entries"],
                "files": kvdb.count_prefix(txn, d.files, b"m"),
                "sessions": txn.stat(d.sessions)["entries"] // 2,
            }

        c = self._read(counts)
        with self._rw.shared():
            info = self._env.info()
            psize = self._env.stat()["psize"]
        return {
            "first_index": self.first_index(),
            "last_index": self._last,
            "log_entries": c["log_entries"],
            "snapshot_index": self._snap.index,
            "term": self._hs.term,
            "commit": self._hs.commit,
            "applied_index": self._applied,
            "kv_keys": c["kv_keys"],
            "files": c["files"],
            "sessions": c["sessions"],
            "map_size": info["map_size"],
            "used_bytes": (info["last_pgno"] + 1) * psize,
        }

    @property
    def path(self) -> str:
        return self._path

    def close(self) -> None:
        with self._rw.exclusive():
            if self._closed:
                return
            self._closed = True
            self._env.close()
            os.close(self._lock_fd)

    def __enter__(self) -> LmdbStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _need(raw: bytes | None, what: str) -> bytes:
    if raw is None:
        raise CorruptionError(f"meta record {what} is missing")
    return raw
