"""LmdbStore: one LMDB environment per node holding the Raft log, hard state and state machine.

Owns: opening the environment (identity and schema checks, the schema upgrade of an older
data dir in the opening transaction (migrate.py), an exclusive lock on the data dir),
the two write paths, each exactly one transaction (`save` for the Raft side, durable;
`apply` for committed commands + applied index + sessions, atomic; `save_and_apply` for both
at once, durable), reads, map growth, turning LMDB failures into rkv.store.errors, and
the store's side of backups: `write_backup` (a read-only copy of the environment from one
read transaction) and `adopt_backup_copy` (seed a new single-node store from such a copy;
the meta records it rewrites are this module's own), and the state hash's runtime side: its
history (state_hash.History, updated after each committed apply), the change tracking of
an open scrub pass (scrub.py) and `correct_state_hash`; the calls that keep the durable watch
history (history.py) in the apply and install transactions, and its reads.
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
from dataclasses import replace
from pathlib import Path
from typing import IO, Any, TypeVar

import lmdb

from rkv.codec import (
    MAX_KEY_LEN,
    SNAP_FILES,
    SNAP_KV,
    SNAP_SESSIONS,
    CodecError,
    SnapshotRecord,
    decode_hard_state,
    decode_snapshot_chunk,
    encode_hard_state,
    pack,
    snapshot_meta_from_list,
    snapshot_meta_to_list,
    unpack,
)
from rkv.raft.storage import Compacted, Unavailable, limit_size
from rkv.raft.types import NONE, ConfState, Entry, HardState, NodeId, Snapshot, SnapshotMeta
from rkv.store import history as watchdb
from rkv.store import kv as kvdb
from rkv.store import migrate
from rkv.store import raft_store as logdb
from rkv.store import scrub as scrubdb
from rkv.store import state_hash as sh
from rkv.store.commands import (
    DEFAULT_MAX_SESSIONS,
    ApplyResult,
    Change,
    Manifest,
    Record,
    Session,
    UploadHashes,
)
from rkv.store.errors import (
    CorruptionError,
    NotFoundError,
    SnapshotError,
    StoreError,
    StoreFullError,
    StoreIdentityError,
)
from rkv.store.leases import (
    DEFAULT_MAX_LEASES,
    LeaseEvent,
    LeaseEventLog,
    LeaseEvents,
    LeaseState,
    read_lease,
    read_lease_keys,
    read_leases,
)
from rkv.store.seal import FILES, KV, SESSIONS, seal, unseal
from rkv.store.snapshot import (
    DEFAULT_CHUNK_BYTES,
    BackupCopy,
    ChunkCounter,
    SnapshotSource,
    Staging,
    batch,
)

SCHEMA_VERSION = 3
"""1: records without checksums; 2: every state-machine record sealed (seal.py); 3: the
state hash (state_hash.py) kept with the applied index, and upload sums (kv.py)."""
DEFAULT_MAP_SIZE = 64 << 20
DEFAULT_MAX_MAP_SIZE = 1 << 40
LOCK_FILE = "rkv.lock"
_TERM_CACHE = 4096
_MAX_GROWS = 64
_LOW_SPACE = 64 << 20
_SNAPSHOT_HEADROOM = 256 << 20
"""Free map space ensured before a snapshot stream opens (the map cannot grow while it runs)."""

_K_SCHEMA = b"schema"
_K_CLUSTER = b"cluster_id"
_K_NODE = b"node_id"
_K_VOTERS = b"voters"
_K_HARD_STATE = b"hard_state"
_K_SNAPSHOT = b"snapshot"
_K_SNAPSHOT_DATA = b"snapshot_data"
_GEN_SUFFIXES = (b"", b".1")
"""Name suffixes of the two state-machine generations' databases (kv, files, sessions)."""
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


def _open_env(path: str, map_size: int) -> lmdb.Environment:
    try:
        return lmdb.open(
            path,
            map_size=map_size,
            subdir=True,
            max_dbs=12,
            sync=True,
            # MDB_NOMETASYNC: a commit fsyncs its data pages, then writes the meta page without
            # a flush of its own. Integrity is kept (the meta page can only reach the disk
            # after the pages it points to), only the last commit may be undone by a power
            # loss, until the next sync. `_write` adds that sync to every durable transaction
            # (data flush + meta flush: what metasync=True costs too); apply, which needs no
            # durability of its own, skips it (one flush instead of two).
            metasync=False,
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


def adopt_backup_copy(
    path: str | os.PathLike[str], *, index: int, term: int, cluster_id: str, node_id: NodeId
) -> None:
    """Turn `path`/data.mdb, a copy made by `LmdbStore.write_backup` at applied index
    `index` (of term `term`), into the store of a new single-node cluster: `node_id` of
    `cluster_id` its only voter, the applied state standing in for the log as a snapshot at
    `index`. The log is dropped (entries after `index` were never applied there), except
    records that staged upload chunks pin (file data, see rkv.store.kv); so is a snapshot
    staged from a leader and the non-live generation. Client sessions are kept. Must run
    on a data dir no process holds. Raises CorruptionError when the copy is not a usable
    store of this schema (or one open_store upgrades) at `index`."""
    d = os.fspath(path)
    size = os.stat(os.path.join(d, "data.mdb")).st_size
    env = _open_env(d, max(DEFAULT_MAP_SIZE, 2 * size))
    try:
        with env.begin(write=True) as txn:
            _adopt(txn, env, d, index=index, term=term, cluster_id=cluster_id, node_id=node_id)
        env.sync(True)
    except (lmdb.Error, CodecError) as e:
        raise CorruptionError(f"{d} is not a usable rkv store: {e}") from e
    finally:
        env.close()
    with contextlib.suppress(OSError):
        Path(d, "lock.mdb").unlink()


def _adopt(
    txn: lmdb.Transaction[bytes],
    env: lmdb.Environment,
    d: str,
    *,
    index: int,
    term: int,
    cluster_id: str,
    node_id: NodeId,
) -> None:
    meta = env.open_db(b"meta", txn=txn, create=False)
    log = env.open_db(b"log", txn=txn, create=False)
    schema = txn.get(_K_SCHEMA, db=meta)
    known = (SCHEMA_VERSION, *migrate.UPGRADABLE)  # an older copy is upgraded when opened
    if schema is None or len(schema) != 4 or _U32.unpack(schema)[0] not in known:
        raise CorruptionError(f"{d} has store schema {schema!r}, not {SCHEMA_VERSION}")
    applied = kvdb.decode_u64("applied index", txn.get(kvdb.APPLIED_KEY, db=meta))
    if applied != index:
        raise CorruptionError(f"{d} has applied index {applied}, expected {index}")
    old = decode_hard_state(_need(txn.get(_K_HARD_STATE, db=meta), "hard state"))
    voters = (node_id,)
    txn.put(_K_CLUSTER, cluster_id.encode(), db=meta)
    txn.put(_K_NODE, node_id.encode(), db=meta)
    txn.put(_K_VOTERS, pack(list(voters)), db=meta)
    hs = HardState(term=max(old.term, term), vote=NONE, commit=index)
    txn.put(_K_HARD_STATE, encode_hard_state(hs), db=meta)
    snap = SnapshotMeta(index=index, term=term, voters=voters)
    txn.put(_K_SNAPSHOT, pack(snapshot_meta_to_list(snap)), db=meta)
    txn.put(_K_SNAPSHOT_DATA, b"", db=meta)
    gen = txn.get(kvdb.GEN_KEY, db=meta) or b"\x00"
    if gen not in (b"\x00", b"\x01"):
        raise CorruptionError(f"{d} has a bad state machine generation")
    live_files = env.open_db(b"files" + _GEN_SUFFIXES[gen[0]], txn=txn)
    logdb.delete_from(txn, log, 0, kvdb.pinned_keys(txn, live_files, 0, index))
    txn.delete(kvdb.STAGING_KEY, db=meta)
    other = _GEN_SUFFIXES[1 - gen[0]]
    for name in (b"kv", b"files", b"sessions"):
        txn.drop(env.open_db(name + other, txn=txn), delete=False)


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
        self._rw = _RWLock()
        self._log_lock = threading.RLock()
        self._closed = False
        self._upload_hashes = UploadHashes()
        self._sources: set[_LmdbSnapshotSource] = set()
        self._tail = _LogTail()
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
        self._env = _open_env(path, map_size)
        try:
            self._gens = self._open_dbs()
            self._dbs = self._gens[0]
            self._write(lambda txn: self._init_meta(txn, cluster_id, node_id, voters))
            self._load_caches()
        except BaseException:
            self._env.close()
            raise

    # --- opening ----------------------------------------------------------------------------

    def _open_dbs(self) -> tuple[kvdb.Dbs, kvdb.Dbs]:
        def opened() -> tuple[kvdb.Dbs, kvdb.Dbs]:
            env = self._env
            log, meta = env.open_db(b"log"), env.open_db(b"meta")
            self._watch_db = env.open_db(watchdb.DB_NAME)
            # Two generations of the state machine: the live one (meta "sm_gen") and the
            # other, where a snapshot from the leader is staged before it is swapped in.
            return tuple(  # type: ignore[return-value]
                kvdb.Dbs(
                    log=log,
                    meta=meta,
                    kv=env.open_db(b"kv" + suffix),
                    files=env.open_db(b"files" + suffix),
                    sessions=env.open_db(b"sessions" + suffix),
                )
                for suffix in _GEN_SUFFIXES
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
            # A bootstrap member's new data dir may be a replaced disk (rkv.raft.recovery).
            hs = HardState(recovering=bool(voters))
            txn.put(_K_HARD_STATE, encode_hard_state(hs), db=meta)
            txn.put(_K_SNAPSHOT, pack(snapshot_meta_to_list(SnapshotMeta())), db=meta)
            txn.put(kvdb.APPLIED_KEY, _U64.pack(0), db=meta)
            txn.put(kvdb.STATE_HASH_KEY, kvdb.encode_state_hash(0, 0), db=meta)
            return
        version = _U32.unpack(schema)[0] if len(schema) == 4 else None
        if version != SCHEMA_VERSION and version not in migrate.UPGRADABLE:
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
        if version != SCHEMA_VERSION:
            # in this (durable) transaction: a crash leaves the old schema or the new one
            self.upgraded_records = migrate.upgrade(txn, self._gens, version)
            txn.put(_K_SCHEMA, _U32.pack(SCHEMA_VERSION), db=meta)

    def _all_dbs(self) -> tuple[lmdb._Database, ...]:
        d, e = self._gens
        return (d.log, d.meta, d.kv, d.files, d.sessions, e.kv, e.files, e.sessions, self._watch_db)

    def _gen(self, txn: lmdb.Transaction[bytes]) -> int:
        raw = txn.get(kvdb.GEN_KEY, db=self._dbs.meta)
        if raw is None:
            return 0
        if raw not in (b"\x00", b"\x01"):
            raise CorruptionError(f"meta of {self._path}: bad state machine generation")
        return raw[0]

    def _follow_live_gen(self) -> None:
        # Our own code picks the generation inside each transaction (_live); `_dbs` follows
        # it only for outside readers (tests) that use `store._dbs` directly.
        self._dbs = self._gens[self._read(self._gen)]

    def _live(self, txn: lmdb.Transaction[bytes]) -> kvdb.Dbs:
        """The live state machine's databases, as of this transaction (an install swaps them)."""
        return self._gens[self._gen(txn)]

    def _load_caches(self) -> None:
        meta = self._dbs.meta

        def load(
            txn: lmdb.Transaction[bytes],
        ) -> tuple[str, str, bytes, bytes, bytes, bytes | None, bytes | None]:
            return (
                (txn.get(_K_CLUSTER, db=meta) or b"").decode(errors="replace"),
                (txn.get(_K_NODE, db=meta) or b"").decode(errors="replace"),
                _need(txn.get(_K_HARD_STATE, db=meta), "hard state"),
                _need(txn.get(_K_VOTERS, db=meta), "voters"),
                _need(txn.get(_K_SNAPSHOT, db=meta), "snapshot meta"),
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

    def _write(self, fn: Callable[[lmdb.Transaction[bytes]], T], *, durable: bool = True) -> T:
        """Run fn in one write transaction and commit it, durably unless told otherwise
        (then a power loss may undo it, and nothing else: see metasync in _open_env). On
        MapFullError the transaction is aborted, the map doubled and fn run again from
        scratch (fn must be a pure function of the transaction's contents). Any other
        failure aborts it."""
        for _ in range(_MAX_GROWS):
            failure: lmdb.Error | None = None
            with self._rw.shared():
                self._check_open()
                try:
                    with self._env.begin(write=True) as txn:
                        result = fn(txn)
                    if durable:
                        self._env.sync(True)  # the meta page of the commit above
                    return result
                except lmdb.MapFullError:
                    pass
                except lmdb.Error as e:
                    failure = e
            if failure is not None:
                raise self._write_failed(failure) from failure
            self._grow()
        raise StoreFullError(f"{self._path}: map still full after {_MAX_GROWS} resizes")

    def _revoke_sources(self) -> None:
        """Under the exclusive lock: end open snapshot streams (their read transactions
        would forbid a resize or close)."""
        for source in list(self._sources):
            source.revoke()

    def _grow(self) -> None:
        with self._rw.exclusive():
            self._revoke_sources()
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
                self._revoke_sources()
                size = self._env.info()["map_size"]
                self._env.close()
                self._env = _open_env(self._path, size)
                self._gens = self._open_dbs()
                with self._env.begin() as txn:  # not _read: we hold the lock exclusively
                    self._dbs = self._gens[self._gen(txn)]
        except lmdb.Error:
            pass  # the next operation reports it

    # --- raft side: the Storage protocol -------------------------------------------------

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
                    txn.put(_K_SNAPSHOT, pack(snapshot_meta_to_list(snapshot.meta)), db=dbs.meta)
                    txn.put(_K_SNAPSHOT_DATA, snapshot.data, db=dbs.meta)
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
                    txn.put(_K_HARD_STATE, encode_hard_state(hard_state), db=dbs.meta)
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

    def _pins(self, txn: lmdb.Transaction[bytes], through: int) -> set[bytes]:
        """Log keys up to `through` that the live state's staged chunks pin."""
        return kvdb.pinned_keys(txn, self._live(txn).files, 0, through)

    def _log_start(self, txn: lmdb.Transaction[bytes]) -> int:
        """The log's first index as of `txn` (the store's cache may be ahead of or behind a
        transaction run in a worker thread)."""
        try:
            raw = _need(txn.get(_K_SNAPSHOT, db=self._dbs.meta), "snapshot meta")
            return snapshot_meta_from_list(unpack(raw)).index + 1
        except CodecError as e:
            raise CorruptionError(f"meta of {self._path}: {e}") from e

    # --- log compaction and snapshots ---------------------------------------------------

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
                txn.put(_K_SNAPSHOT, pack(snapshot_meta_to_list(meta)), db=dbs.meta)
                txn.put(_K_SNAPSHOT_DATA, b"", db=dbs.meta)
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

    def open_snapshot(self, max_chunk: int = DEFAULT_CHUNK_BYTES) -> SnapshotSource:
        """A consistent stream of the applied state (an LMDB read transaction: writes go on
        meanwhile). Use it from one thread at a time and close it promptly: while it is
        open, LMDB cannot reuse pages freed after it began, and the map cannot be resized.
        The map is grown first so that a resize during the stream is unlikely; if one is
        needed anyway, it ends the stream, whose next chunk raises SnapshotError."""
        self._ensure_headroom()
        return _LmdbSnapshotSource(self, max_chunk)

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

    def applied_conf(self) -> ConfState:
        """The configuration in force at the applied index."""
        return self._read(self._applied_conf)

    def _applied_conf(self, txn: lmdb.Transaction[bytes]) -> ConfState:
        meta = self._dbs.meta
        raw = txn.get(kvdb.CONF_KEY, db=meta)
        if raw is not None:
            return kvdb.decode_conf(raw)
        try:
            snap = snapshot_meta_from_list(unpack(_need(txn.get(_K_SNAPSHOT, db=meta), "snap")))
            voters = unpack(_need(txn.get(_K_VOTERS, db=meta), "voters"))
        except CodecError as e:
            raise CorruptionError(f"meta of {self._path}: {e}") from e
        if type(voters) is not list or not all(type(v) is str for v in voters):
            raise CorruptionError(f"meta of {self._path}: bad voters")
        if snap.index and snap.voters:
            return snap.conf
        return ConfState(tuple(sorted(voters)))

    def _snapshot_meta(self, txn: lmdb.Transaction[bytes]) -> SnapshotMeta:
        """(applied index, its term, configuration) as of `txn`."""
        meta = self._dbs.meta
        applied = kvdb.decode_u64("applied index", txn.get(kvdb.APPLIED_KEY, db=meta))
        conf = self._applied_conf(txn)
        try:
            snap = snapshot_meta_from_list(unpack(_need(txn.get(_K_SNAPSHOT, db=meta), "snap")))
        except CodecError as e:
            raise CorruptionError(f"meta of {self._path}: {e}") from e
        if applied == snap.index:
            term = snap.term
        elif applied == 0:
            term = 0
        else:
            term = logdb.read_entry(txn, self._dbs.log, applied).term
        return SnapshotMeta(index=applied, term=term, voters=conf.voters, learners=conf.learners)

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
        txn.put(kvdb.APPLIED_KEY, _U64.pack(meta.index), db=self._dbs.meta)
        # the staged records' hash, or (staged before schema 3) computed from them now
        if st.state_hash is not None:
            value = sh.from_bytes(st.state_hash)
        else:
            value = scrubdb.rebuild_state_hash(txn, self._gens[st.gen])
        txn.put(kvdb.STATE_HASH_KEY, kvdb.encode_state_hash(meta.index, value), db=self._dbs.meta)
        if meta.voters:
            txn.put(kvdb.CONF_KEY, kvdb.encode_conf(meta.conf), db=self._dbs.meta)
        watchdb.reset(txn, self._watch_db, self._dbs.meta, meta.index)

    # --- state machine side --------------------------------------------------------------

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

    # --- the state hash (state_hash.py) and scrub passes (scrub.py) ----------------------

    def state_hash(self) -> tuple[int, int]:
        """(applied index, state hash at it)."""
        return self._history.current()

    def state_hashes(self) -> list[tuple[int, int]]:
        """The (applied index, state hash) pairs this store can be compared at, oldest first
        (recent checkpoints and the current one; state_hash.History)."""
        return self._history.pairs()

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

    @property
    def path(self) -> str:
        return self._path

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


class _LogTail:
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


class _LmdbSnapshotSource:
    """SnapshotSource over one LMDB read transaction (MVCC: a fixed view while writes go on).

    It does not hold the store's readers/writer lock between chunks: a map resize or close
    (which need every transaction gone) revokes it instead, under `_use` so never in the
    middle of a chunk, and the next chunk raises SnapshotError. Nothing ever waits for a
    stream's consumer, which may sit on the same event loop as a writer."""

    def __init__(self, store: LmdbStore, max_chunk: int) -> None:
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

    def __enter__(self) -> _LmdbSnapshotSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _need(raw: bytes | None, what: str) -> bytes:
    if raw is None:
        raise CorruptionError(f"meta record {what} is missing")
    return raw
