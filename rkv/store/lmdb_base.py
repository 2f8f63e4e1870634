"""The LMDB store's environment and its transactions (the base of rkv.store.env.LmdbStore).

Owns: opening an LMDB environment with the store's options, the readers/writer lock, the
state-machine generations' databases, running one read or one write transaction (map growth
on MapFullError, LMDB failures turned into rkv.store.errors, recovery after a failed
commit), the meta reads several concerns share (applied configuration, snapshot meta as of
a transaction, the log's start, pinned log keys), and the declarations of the state the
store's parts (lmdb_*.py) share.
Must not: use trio, hold a transaction across calls, or know what the transactions it runs
write (that is the parts' business).
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

import lmdb

from rkv.codec import CodecError, snapshot_meta_from_list, unpack
from rkv.raft.types import ConfState, HardState, NodeId, SnapshotMeta
from rkv.store import history as watchdb
from rkv.store import kv as kvdb
from rkv.store import raft_store as logdb
from rkv.store import scrub as scrubdb
from rkv.store import state_hash as sh
from rkv.store.commands import Change, UploadHashes
from rkv.store.errors import CorruptionError, StoreError, StoreFullError
from rkv.store.leases import LeaseEventLog
from rkv.store.meta import GEN_SUFFIXES, K_SNAPSHOT, K_VOTERS, need

if TYPE_CHECKING:
    from rkv.store.lmdb_log import LogTail
    from rkv.store.lmdb_source import LmdbSnapshotSource

DEFAULT_MAP_SIZE = 64 << 20
DEFAULT_MAX_MAP_SIZE = 1 << 40
MAX_GROWS = 64
_LOW_SPACE = 64 << 20

T = TypeVar("T")


class RWLock:
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


def open_env(path: str, map_size: int) -> lmdb.Environment:
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


class StoreBase:
    """The environment, its transactions and the state the store's parts share; the store
    (rkv.store.env.LmdbStore) sets every attribute in its constructor."""

    _path: str
    _env: lmdb.Environment
    _rw: RWLock
    _closed: bool
    _max_map_size: int
    _max_sessions: int
    _max_leases: int
    _gens: tuple[kvdb.Dbs, kvdb.Dbs]
    _dbs: kvdb.Dbs
    _watch_db: lmdb._Database
    _sources: set[LmdbSnapshotSource]
    # the Raft log side (lmdb_log.py)
    _log_lock: threading.RLock
    _hs: HardState
    _voters: tuple[NodeId, ...]
    _snap: SnapshotMeta
    _last: int
    _terms: dict[int, int]
    _tail: LogTail
    # the state machine side (lmdb_apply.py, lmdb_integrity.py)
    _applied: int
    _upload_hashes: UploadHashes
    _history: sh.History
    _tracker: scrubdb.Tracker | None
    record_changes: bool
    _changes: list[Change]
    _changes_lock: threading.Lock
    history_bounds: watchdb.Bounds
    _watch_meta: watchdb.Meta
    _lease_events: LeaseEventLog
    _lease_total: int | None

    if TYPE_CHECKING:  # defined by the parts (lmdb_apply.py, lmdb_install.py, lmdb_log.py)

        def _state_replaced(self) -> None: ...

        def first_index(self) -> int: ...

        def _swap_in_staged(self, txn: lmdb.Transaction[bytes], meta: SnapshotMeta) -> None: ...

    @property
    def path(self) -> str:
        return self._path

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
                for suffix in GEN_SUFFIXES
            )

        for _ in range(MAX_GROWS):
            try:
                return opened()
            except lmdb.MapFullError:
                self._grow()
            except lmdb.Error as e:
                raise StoreError(f"cannot open databases in {self._path}: {e}") from e
        raise StoreFullError(f"cannot open databases in {self._path}: map full")

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
        for _ in range(MAX_GROWS):
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
        raise StoreFullError(f"{self._path}: map still full after {MAX_GROWS} resizes")

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
                self._env = open_env(self._path, size)
                self._gens = self._open_dbs()
                with self._env.begin() as txn:  # not _read: we hold the lock exclusively
                    self._dbs = self._gens[self._gen(txn)]
        except lmdb.Error:
            pass  # the next operation reports it

    def _pins(self, txn: lmdb.Transaction[bytes], through: int) -> set[bytes]:
        """Log keys up to `through` that the live state's staged chunks pin."""
        return kvdb.pinned_keys(txn, self._live(txn).files, 0, through)

    def _log_start(self, txn: lmdb.Transaction[bytes]) -> int:
        """The log's first index as of `txn` (the store's cache may be ahead of or behind a
        transaction run in a worker thread)."""
        try:
            raw = need(txn.get(K_SNAPSHOT, db=self._dbs.meta), "snapshot meta")
            return snapshot_meta_from_list(unpack(raw)).index + 1
        except CodecError as e:
            raise CorruptionError(f"meta of {self._path}: {e}") from e

    def applied_conf(self) -> ConfState:
        """The configuration in force at the applied index."""
        return self._read(self._applied_conf)

    def _applied_conf(self, txn: lmdb.Transaction[bytes]) -> ConfState:
        meta = self._dbs.meta
        raw = txn.get(kvdb.CONF_KEY, db=meta)
        if raw is not None:
            return kvdb.decode_conf(raw)
        try:
            snap = snapshot_meta_from_list(unpack(need(txn.get(K_SNAPSHOT, db=meta), "snap")))
            voters = unpack(need(txn.get(K_VOTERS, db=meta), "voters"))
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
            snap = snapshot_meta_from_list(unpack(need(txn.get(K_SNAPSHOT, db=meta), "snap")))
        except CodecError as e:
            raise CorruptionError(f"meta of {self._path}: {e}") from e
        if applied == snap.index:
            term = snap.term
        elif applied == 0:
            term = 0
        else:
            term = logdb.read_entry(txn, self._dbs.log, applied).term
        return SnapshotMeta(index=applied, term=term, voters=conf.voters, learners=conf.learners)
