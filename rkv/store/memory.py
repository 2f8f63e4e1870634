"""MemoryStore: the dict twin of the LMDB store, with the same API and semantics.

Owns: an in-memory Raft log + hard state + snapshot meta and an in-memory state machine, for
tests and the simulator. Every write is "durable" the moment the call returns; `reopen()`
models a restart (a new object over the same data, no caches carried over).
Must not: do I/O or diverge from rkv.store.env.LmdbStore: both pass tests/store's
conformance suite, and the command semantics are shared (rkv.store.commands).

The state hash (state_hash.py) is kept the same way, updated by each write from the records'
payloads in the LMDB layouts, so that both stores give the same value for the same applied
entries: `state_hash()` -> (applied index, hash), `state_hashes()` the comparable pairs (the
simulator may compare nodes with them).
"""

from __future__ import annotations

import copy
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import IO, Any

from rkv.codec import (
    SNAP_FILES,
    SNAP_KV,
    SNAP_SESSIONS,
    CodecError,
    SnapshotRecord,
    decode_snapshot_chunk,
    pack,
)
from rkv.raft.storage import Compacted, Unavailable
from rkv.raft.types import ConfState, Entry, HardState, NodeId, Snapshot, SnapshotMeta
from rkv.store import kv as layout
from rkv.store import state_hash as sh
from rkv.store.changes import ChangeRecorder
from rkv.store.commands import (
    DEFAULT_MAX_SESSIONS,
    ApplyResult,
    Change,
    Manifest,
    Record,
    Session,
    UploadHashes,
    check_order,
)
from rkv.store.errors import CorruptionError, NotFoundError, SnapshotError, StoreError
from rkv.store.leases import (
    DEFAULT_MAX_LEASES,
    Lease,
    LeaseEvent,
    LeaseEventLog,
    LeaseEvents,
    LeaseState,
    attach_key,
    decode_lease,
    encode_lease,
    lease_key,
    parse_attach_key,
    parse_lease_key,
)
from rkv.store.raft_store import check_entries, check_limit, check_snapshot
from rkv.store.snapshot import DEFAULT_CHUNK_BYTES, BackupCopy, ChunkCounter, Staging, batch

ApplyHook = Callable[[Sequence[Entry], Sequence["ApplyResult"], Sequence[int]], None]

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


class _State:
    """Everything a restart keeps."""

    def __init__(self, cluster_id: str, node_id: NodeId, voters: tuple[NodeId, ...]) -> None:
        self.cluster_id = cluster_id
        self.node_id = node_id
        self.voters = voters
        self.conf: ConfState | None = None  # in force at `applied` (None: the base one)
        # A bootstrap member's new storage may be a replaced disk (rkv.raft.recovery).
        self.hard_state = HardState(recovering=bool(voters))
        self.snapshot = Snapshot()
        self.log: list[Entry] = []  # log[i] has index snapshot.meta.index + 1 + i
        self.applied = 0
        self.state_hash = 0  # at `applied`
        self.contributions: dict[tuple[int, bytes], int] = {}
        """(db, key) -> what the kv or session record adds to the state hash, as last
        written (a cache: the sim writes a lot; absent entries are computed)."""
        self.kv: dict[bytes, Record] = {}
        self.manifests: dict[bytes, Manifest] = {}
        self.chunks: dict[tuple[bytes, int], bytes] = {}
        self.staged: dict[bytes, dict[int, tuple[bytes, bytes]]] = {}
        self.sessions: dict[bytes, Session] = {}
        self.uploads: dict[bytes, bytes] = {}  # committed upload id -> file key
        self.activity: dict[bytes, int] = {}  # upload in progress -> index of its last chunk
        self.leases: dict[int, Lease] = {}
        self.attached: dict[int, set[bytes]] = {}  # lease id -> its keys
        self.staging: Staging | None = None
        self.staged_state: _State | None = None


class _MemTxn:
    """StateTxn over _State. apply_entries validates before writing, so no rollback is needed."""

    def __init__(
        self,
        st: _State,
        hashes: UploadHashes,
        max_leases: int,
        recorder: ChangeRecorder | None = None,
    ) -> None:
        self.st = st
        self.recorder = recorder
        """Where the shared apply logic records the changes (changes.py), while recording."""
        self.hashes = hashes
        self.max_leases = max_leases
        self.lease_events: list[LeaseEvent] = []
        self.executed: list[int] = []
        """Indexes at which a client request executed (its session was written)."""
        self.running = sh.Running(st.state_hash)

    def _change(self, db: int, key: bytes, old: bytes | None, new: bytes | None) -> None:
        self.running.change(db, key, old, new)

    def _cached(
        self, db: int, key: bytes, old: Callable[[], bytes | None], new: bytes | None
    ) -> None:
        """_change for the records whose contributions are cached (kv, sessions)."""
        cache = self.st.contributions
        c_old = cache.pop((db, key), None)
        if c_old is None:
            payload = old()
            c_old = 0 if payload is None else sh.contribution(db, key, payload)
        c_new = 0
        if new is not None:
            c_new = cache[(db, key)] = sh.contribution(db, key, new)
        self.running.add(db, key, c_new - c_old)

    def _record(self, key: bytes) -> bytes | None:
        old = self.st.kv.get(key)
        return None if old is None else layout.encode_record(old)

    def get(self, key: bytes) -> Record | None:
        return self.st.kv.get(key)

    def put(self, key: bytes, rec: Record) -> None:
        self._cached(SNAP_KV, key, lambda: self._record(key), layout.encode_record(rec))
        self.st.kv[key] = rec

    def delete(self, key: bytes) -> None:
        self._cached(SNAP_KV, key, lambda: self._record(key), None)
        del self.st.kv[key]

    def keys(self, prefix: bytes) -> list[bytes]:
        return sorted(k for k in self.st.kv if k.startswith(prefix))

    def manifest(self, key: bytes) -> Manifest | None:
        return self.st.manifests.get(key)

    def _manifest(self, key: bytes, m: Manifest | None) -> None:
        old = self.st.manifests.get(key)
        was = None if old is None else layout.encode_manifest(old)
        now = None if m is None else layout.encode_manifest(m)
        self._change(SNAP_FILES, layout.manifest_key(key), was, now)

    def put_manifest(self, key: bytes, m: Manifest) -> None:
        self._manifest(key, m)
        self.st.manifests[key] = m

    def delete_manifest(self, key: bytes) -> None:
        self._manifest(key, None)
        del self.st.manifests[key]

    def put_chunk(self, key: bytes, n: int, data: bytes) -> None:
        self._change(SNAP_FILES, layout.chunk_key(key, n), self.st.chunks.get((key, n)), data)
        self.st.chunks[(key, n)] = data

    def delete_chunk(self, key: bytes, n: int) -> None:
        self._change(SNAP_FILES, layout.chunk_key(key, n), self.st.chunks.get((key, n)), None)
        self.st.chunks.pop((key, n), None)

    def _staged(self, upload_id: bytes, seq: int, old: tuple[bytes, bytes] | None) -> None:
        """Take staged chunk `seq`'s contribution (`old`: (key, data)) out of the hash."""
        if old is not None:
            skey = layout.staged_key(upload_id, seq)
            self._change(SNAP_FILES, skey, sh.staged_form(*old), None)

    def stage_chunk(self, upload_id: bytes, seq: int, key: bytes, data: bytes, index: int) -> None:
        chunks = self.st.staged.setdefault(upload_id, {})
        self._staged(upload_id, seq, chunks.get(seq))
        skey = layout.staged_key(upload_id, seq)
        self._change(SNAP_FILES, skey, None, sh.staged_form(key, data))
        chunks[seq] = (key, data)
        self.hashes.on_stage(upload_id, seq, key, data)

    def upload_committed(self, upload_id: bytes) -> bool:
        return upload_id in self.st.uploads

    def set_upload_committed(self, upload_id: bytes, key: bytes | None) -> None:
        self.hashes.forget(upload_id)
        ukey = layout.upload_key(upload_id)
        self._change(SNAP_FILES, ukey, self.st.uploads.get(upload_id), key)
        if key is None:
            self.st.uploads.pop(upload_id, None)
        else:
            self.st.uploads[upload_id] = key

    def upload_digest(self, upload_id: bytes, chunks: int, key: bytes) -> tuple[bytes, int] | None:
        return self.hashes.digest(upload_id, chunks, key)

    def staged_chunk(self, upload_id: bytes, seq: int) -> tuple[bytes, bytes] | None:
        return self.st.staged.get(upload_id, {}).get(seq)

    def staged_count(self, upload_id: bytes) -> int:
        return len(self.st.staged.get(upload_id, {}))

    def drop_staged(self, upload_id: bytes) -> None:
        self.hashes.forget(upload_id)
        for seq, chunk in self.st.staged.pop(upload_id, {}).items():
            self._staged(upload_id, seq, chunk)

    def upload_activity(self, upload_id: bytes) -> int | None:
        return self.st.activity.get(upload_id)

    def set_upload_activity(self, upload_id: bytes, index: int | None) -> None:
        old = self.st.activity.get(upload_id)
        self._change(
            SNAP_FILES,
            layout.activity_key(upload_id),
            None if old is None else _U64.pack(old),
            None if index is None else _U64.pack(index),
        )
        if index is None:
            self.st.activity.pop(upload_id, None)
        else:
            self.st.activity[upload_id] = index

    def session(self, client_id: bytes) -> Session | None:
        return self.st.sessions.get(client_id)

    def _session(self, client_id: bytes, s: Session | None) -> None:
        def was() -> bytes | None:
            old = self.st.sessions.get(client_id)
            return None if old is None else layout.encode_session(old)

        now = None if s is None else layout.encode_session(s)
        self._cached(SNAP_SESSIONS, layout.session_key(client_id), was, now)

    def put_session(self, client_id: bytes, s: Session, old: Session | None) -> None:
        self._session(client_id, s)
        self.st.sessions[client_id] = s
        self.executed.append(s.index)

    def session_count(self) -> int:
        return len(self.st.sessions)

    def evict_oldest_session(self) -> None:
        # same order as the LMDB index: (applied index, client id)
        oldest = min(self.st.sessions.items(), key=lambda kv: (kv[1].index, kv[0]))
        self._session(oldest[0], None)
        del self.st.sessions[oldest[0]]

    def applied_index(self) -> int:
        return self.st.applied

    def set_applied_index(self, index: int) -> None:
        self.st.applied = index
        self.st.state_hash = self.running.value

    def set_conf(self, conf: ConfState) -> None:
        self.st.conf = conf

    def lease(self, lease_id: int) -> Lease | None:
        return self.st.leases.get(lease_id)

    def put_lease(self, lease_id: int, lease: Lease) -> None:
        old = self.st.leases.get(lease_id)
        was = None if old is None else encode_lease(old)
        self._change(SNAP_FILES, lease_key(lease_id), was, encode_lease(lease))
        self.st.leases[lease_id] = lease

    def delete_lease(self, lease_id: int) -> None:
        old = self.st.leases.pop(lease_id)
        self._change(SNAP_FILES, lease_key(lease_id), encode_lease(old), None)

    def lease_count(self) -> int:
        return len(self.st.leases)

    def lease_limit(self) -> int:
        return self.max_leases

    def attach(self, lease_id: int, key: bytes) -> None:
        self._change(SNAP_FILES, attach_key(lease_id, key), None, b"")
        self.st.attached.setdefault(lease_id, set()).add(key)

    def detach(self, lease_id: int, key: bytes) -> None:
        self._change(SNAP_FILES, attach_key(lease_id, key), b"", None)
        keys = self.st.attached[lease_id]
        keys.discard(key)
        if not keys:
            del self.st.attached[lease_id]

    def lease_keys(self, lease_id: int) -> list[bytes]:
        return sorted(self.st.attached.get(lease_id, ()))

    def lease_event(self, event: LeaseEvent) -> None:
        self.lease_events.append(event)


class MemoryStore:
    """Same API as rkv.store.env.LmdbStore (see there for the method contracts)."""

    def __init__(
        self,
        cluster_id: str,
        node_id: NodeId,
        voters: Sequence[NodeId],
        *,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        max_leases: int = DEFAULT_MAX_LEASES,
        _state: _State | None = None,
    ) -> None:
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {max_sessions}")
        self._max_leases = max_leases
        self._lease_events = LeaseEventLog()
        self._st = _state if _state is not None else _State(cluster_id, node_id, tuple(voters))
        self._max_sessions = max_sessions
        self._closed = False
        self._hashes = UploadHashes()
        self._history = sh.History(self._st.applied, self._st.state_hash)
        self.record_changes = False
        """Record each apply's changes for `take_changes`, as LmdbStore does (not carried
        over by reopen(), like LmdbStore's flag across a restart)."""
        self._changes: list[Change] = []
        self.on_apply: ApplyHook | None = None
        """Called after each apply transaction with its entries, their results and the
        indexes at which a client request executed rather than being answered from its
        session (the simulator checks exactly-once with it). Not carried over by reopen()."""

    @property
    def cluster_id(self) -> str:
        return self._st.cluster_id

    @property
    def node_id(self) -> NodeId:
        return self._st.node_id

    def reopen(self) -> MemoryStore:
        """A restart: closes this object, returns a new one over a copy of the same data."""
        self.close()
        return MemoryStore(
            self._st.cluster_id,
            self._st.node_id,
            self._st.voters,
            max_sessions=self._max_sessions,
            max_leases=self._max_leases,
            _state=copy.copy(self._st),
        )

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("store is closed")

    # --- raft side ------------------------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        self._check_open()
        snap = self._st.snapshot
        if not snap.is_empty() and snap.meta.voters:
            return self._st.hard_state, snap.meta.conf
        return self._st.hard_state, ConfState(tuple(sorted(self._st.voters)))

    def applied_conf(self) -> ConfState:
        """The configuration in force at the applied index."""
        st = self._st
        return st.conf if st.conf is not None else self.initial_state()[1]

    def first_index(self) -> int:
        return self._st.snapshot.meta.index + 1

    def last_index(self) -> int:
        return self._st.snapshot.meta.index + len(self._st.log)

    def term(self, index: int) -> int:
        if self._closed:
            raise StoreError("store is closed")
        st = self._st
        meta = st.snapshot.meta
        k = index - meta.index - 1
        if 0 <= k < len(st.log):
            return st.log[k].term
        if k == -1:
            return meta.term
        if k < -1:
            raise Compacted(f"index {index} compacted (snapshot at {meta.index})")
        raise Unavailable(f"index {index} > last index {self.last_index()}")

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        if self._closed:
            raise StoreError("store is closed")
        st = self._st
        off = st.snapshot.meta.index + 1
        if lo < off:
            raise Compacted(f"entries from {lo}: first index is {self.first_index()}")
        if hi > off + len(st.log):
            raise Unavailable(f"entries up to {hi}: last index is {self.last_index()}")
        log = st.log
        if max_bytes is None:
            return log[lo - off : hi - off]
        out: list[Entry] = []
        size = 0
        for i in range(lo - off, hi - off):  # not a slice: a small budget stops after one
            e = log[i]
            size += e.size()
            if out and size > max_bytes:
                break
            out.append(e)
        return out

    def snapshot(self) -> Snapshot:
        return self._st.snapshot

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None = None,
    ) -> None:
        self._save(hard_state, entries, snapshot, install=False)

    def install_snapshot(
        self, hard_state: HardState | None, entries: Sequence[Entry], snapshot: Snapshot
    ) -> None:
        if snapshot.is_empty():
            raise SnapshotError("cannot install an empty snapshot")
        if snapshot.meta.index <= self._st.applied:
            raise SnapshotError(
                f"snapshot at {snapshot.meta.index} is not past applied index {self._st.applied}"
            )
        self._save(hard_state, entries, snapshot, install=True)

    def _save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None,
        *,
        install: bool,
    ) -> None:
        self._check_open()
        st = self._st
        if install:
            assert snapshot is not None
            staged = st.staged_state
            g = st.staging
            if (
                g is None
                or staged is None
                or not g.done
                or (g.meta.index, g.meta.term) != (snapshot.meta.index, snapshot.meta.term)
            ):
                raise SnapshotError(
                    f"no complete staged state for snapshot {snapshot.meta.index}@"
                    f"{snapshot.meta.term}"
                )
        snap = st.snapshot
        log = st.log
        if snapshot is not None and not snapshot.is_empty():
            check_snapshot(snap, snapshot)
            keep_from = snapshot.meta.index - snap.meta.index  # position of the first kept
            s_index = snapshot.meta.index
            if s_index <= self.last_index() and self.term(s_index) == snapshot.meta.term:
                log = log[keep_from:]
            else:
                log = []
            snap = snapshot
        if entries:
            first_kept = snap.meta.index + 1
            check_entries(entries, first_kept, snap.meta.index + len(log))
            log = log[: entries[0].index - first_kept] + list(entries)
        if install:
            assert staged is not None and snapshot is not None
            st.kv, st.manifests, st.chunks = staged.kv, staged.manifests, staged.chunks
            st.staged, st.sessions = staged.staged, staged.sessions
            st.uploads = staged.uploads
            st.activity = staged.activity
            st.leases, st.attached = staged.leases, staged.attached
            self._lease_events.reset()
            self._hashes = UploadHashes()
            st.applied = snapshot.meta.index
            if self.record_changes:
                self._changes.append(Change(st.applied, "reset", b""))
            st.contributions = {}
            st.state_hash = sh.hash_records(_records(st))
            self._history.reset(st.applied, st.state_hash)
            st.conf = snapshot.meta.conf if snapshot.meta.voters else st.conf
            st.staging = st.staged_state = None
        st.snapshot = snap
        st.log = log
        if hard_state is not None:
            st.hard_state = hard_state

    # --- log compaction and snapshots ---------------------------------------------------

    def compact(self, index: int, conf: ConfState | None = None) -> None:
        """See LmdbStore.compact."""
        self._check_open()
        st = self._st
        meta = st.snapshot.meta
        if index <= meta.index:
            raise Compacted(f"compact to {index}: already compacted to {meta.index}")
        if index > st.applied:
            raise StoreError(f"compact to {index}: only {st.applied} is applied")
        c = conf if conf is not None else self.applied_conf()
        new = SnapshotMeta(index=index, term=self.term(index), voters=c.voters, learners=c.learners)
        st.log = st.log[index - meta.index :]
        st.snapshot = Snapshot(meta=new)

    def log_bytes(self) -> int:
        return sum(e.size() for e in self._st.log)

    def open_snapshot(self, max_chunk: int = DEFAULT_CHUNK_BYTES) -> _MemorySnapshotSource:
        self._check_open()
        st = self._st
        applied = st.applied
        term = 0 if applied == 0 else self.term(applied)
        c = self.applied_conf()
        meta = SnapshotMeta(index=applied, term=term, voters=c.voters, learners=c.learners)
        return _MemorySnapshotSource(meta, _records(st), max_chunk)

    def write_backup(self, f: IO[bytes]) -> BackupCopy:
        """Read-only: write the applied state to `f` (msgpack: the snapshot stream's records,
        in the LMDB layouts; not an LMDB copy, so `adopt_backup_copy` cannot use it) and
        return what it holds, as LmdbStore.write_backup does."""
        meta = self.open_snapshot().meta
        f.write(pack([list(r) for r in _records(self._st)]))
        f.flush()
        return BackupCopy(
            index=meta.index, term=meta.term, keys=len(self._st.kv), files=len(self._st.manifests)
        )

    def begin_snapshot_install(self, meta: SnapshotMeta) -> None:
        self._check_open()
        if meta.index < 1:
            raise SnapshotError("cannot stage an empty snapshot")
        st = self._st
        st.staging = Staging(1, meta)
        st.staged_state = _State(st.cluster_id, st.node_id, st.voters)

    def _staging(self) -> tuple[Staging, _State]:
        g, staged = self._st.staging, self._st.staged_state
        if g is None or staged is None:
            raise SnapshotError("no snapshot is being staged")
        return g, staged

    def stage_snapshot_chunk(self, seq: int, chunk: bytes) -> int:
        self._check_open()
        try:
            records = decode_snapshot_chunk(chunk)
        except CodecError as e:
            raise CorruptionError(f"snapshot chunk {seq}: {e}") from e
        g, staged = self._staging()
        if g.done or g.next_seq != seq:
            raise SnapshotError(
                f"snapshot chunk {seq} out of order (expected {g.next_seq}, done={g.done})"
            )
        # decode everything first, so a bad record leaves the staged state as it was
        decoded = [_decode_record(r) for r in records]
        for put in decoded:
            put(staged)
        self._st.staging = replace(g, next_seq=seq + 1, records=g.records + len(records))
        return len(records)

    def finish_snapshot_staging(self, chunks: int, records: int) -> SnapshotMeta:
        g, _ = self._staging()
        if (g.next_seq, g.records) != (chunks, records):
            raise SnapshotError(
                f"snapshot incomplete: {g.next_seq} chunks / {g.records} records staged, "
                f"{chunks} / {records} sent"
            )
        self._st.staging = replace(g, done=True)
        return g.meta

    def staged_snapshot(self) -> SnapshotMeta | None:
        g = self._st.staging
        return g.meta if g is not None and g.done else None

    # --- state machine side --------------------------------------------------------------

    def apply(self, entries: Sequence[Entry]) -> list[ApplyResult]:
        self._check_open()
        recorder = ChangeRecorder(self._changes) if self.record_changes else None
        txn = _MemTxn(self._st, self._hashes, self._max_leases, recorder)
        results, marks = sh.apply_with_checkpoints(txn, entries, self._max_sessions)
        self._lease_events.extend(txn.lease_events)
        if entries:
            self._history.applied(marks, entries[-1].index, txn.running.value)
        if self.on_apply is not None:
            self.on_apply(entries, results, txn.executed)
        return results

    def save_and_apply(
        self, hard_state: HardState | None, entries: Sequence[Entry], committed: Sequence[Entry]
    ) -> list[ApplyResult]:
        check_order(self._st.applied, committed)  # refused before anything is saved
        self.save(hard_state, entries)
        return self.apply(committed)

    def applied_index(self) -> int:
        return self._st.applied

    def take_changes(self) -> list[Change]:
        """The changes applies made since the last call, in order (recorded only while
        `record_changes` is on; a snapshot install adds a "reset" change): as LmdbStore's."""
        out, self._changes = self._changes, []
        return out

    def state_hash(self) -> tuple[int, int]:
        """(applied index, state hash at it): see LmdbStore.state_hash."""
        return self._history.current()

    def state_hashes(self) -> list[tuple[int, int]]:
        """The comparable (applied index, state hash) pairs: see LmdbStore.state_hashes."""
        return self._history.pairs()

    def get(self, key: bytes) -> bytes | None:
        rec = self._st.kv.get(key)
        return None if rec is None else rec.value

    def get_record(self, key: bytes) -> Record | None:
        return self._st.kv.get(key)

    def get_revision(self, key: bytes) -> tuple[bytes | None, int]:
        return self.get(key), self._st.applied

    def get_record_revision(self, key: bytes) -> tuple[Record | None, int]:
        return self._st.kv.get(key), self._st.applied

    def scan_revision(
        self, prefix: bytes, limit: int, after: bytes | None = None
    ) -> tuple[list[tuple[bytes, bytes]], int]:
        return self.scan(prefix, limit, after), self._st.applied

    def scan(
        self, prefix: bytes, limit: int, after: bytes | None = None
    ) -> list[tuple[bytes, bytes]]:
        return [(k, r.value) for k, r in self.scan_records(prefix, limit, after)[0]]

    def scan_records(
        self, prefix: bytes, limit: int, after: bytes | None = None
    ) -> tuple[list[tuple[bytes, Record]], int]:
        check_limit(limit)
        keys = sorted(
            k for k in self._st.kv if k.startswith(prefix) and (after is None or k > after)
        )[:limit]
        return [(k, self._st.kv[k]) for k in keys], self._st.applied

    def uploads_in_progress(self) -> list[tuple[bytes, int]]:
        return sorted(self._st.activity.items())

    def file_manifest(self, key: bytes) -> Manifest | None:
        return self._st.manifests.get(key)

    def read_chunk(self, key: bytes, n: int) -> bytes:
        m = self._st.manifests.get(key)
        data = None
        if m is not None and 0 <= n < m.chunks:
            if m.upload_id:
                staged = self._st.staged.get(m.upload_id, {}).get(n)
                data = None if staged is None else staged[1]
            else:
                data = self._st.chunks.get((key, n))
        if data is None:
            raise NotFoundError(f"file {key!r} has no chunk {n}")
        return data

    def session(self, client_id: bytes) -> Session | None:
        return self._st.sessions.get(client_id)

    def take_lease_events(self) -> LeaseEvents:
        return self._lease_events.take()

    def lease(self, lease_id: int) -> LeaseState | None:
        st = self._st
        x = st.leases.get(lease_id)
        if x is None:
            return None
        return LeaseState(
            lease_id, x.ttl_ms, x.gen, x.remaining_ms, len(st.attached.get(lease_id, ()))
        )

    def leases(self) -> list[LeaseState]:
        out = (self.lease(i) for i in sorted(self._st.leases))
        return [x for x in out if x is not None]

    def lease_keys(self, lease_id: int) -> list[bytes]:
        return sorted(self._st.attached.get(lease_id, ()))

    def stats(self) -> dict[str, Any]:
        st = self._st
        return {
            "first_index": self.first_index(),
            "last_index": self.last_index(),
            "log_entries": len(st.log),
            "log_bytes": sum(e.size() for e in st.log),
            "snapshot_index": st.snapshot.meta.index,
            "term": st.hard_state.term,
            "commit": st.hard_state.commit,
            "applied_index": st.applied,
            "kv_keys": len(st.kv),
            "files": len(st.manifests),
            "sessions": len(st.sessions),
            "pinned_bytes": 0,  # staged chunks are copies here
            "map_size": 0,
            "used_bytes": 0,
        }

    def close(self) -> None:
        self._closed = True


class _MemorySnapshotSource:
    """SnapshotSource over records copied when it was opened (the twin has no MVCC)."""

    def __init__(self, meta: SnapshotMeta, records: list[SnapshotRecord], max_chunk: int) -> None:
        self.meta = meta
        self._recs = records
        self._max_chunk = max_chunk
        self._counter = ChunkCounter()

    @property
    def records(self) -> int:
        return self._counter.records

    @property
    def chunk_count(self) -> int:
        return self._counter.chunk_count

    def chunks(self) -> Iterator[bytes]:
        return batch(self._recs, self._max_chunk, self._counter)

    def close(self) -> None:
        self._recs = []

    def __enter__(self) -> _MemorySnapshotSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _records(st: _State) -> list[SnapshotRecord]:
    """The state machine in the LMDB store's layouts and order (so streams interoperate)."""
    kv = [(SNAP_KV, k, layout.encode_record(r)) for k, r in st.kv.items()]
    files = [
        (SNAP_FILES, layout.manifest_key(k), layout.encode_manifest(m))
        for k, m in st.manifests.items()
    ]
    files += [(SNAP_FILES, layout.chunk_key(k, n), d) for (k, n), d in st.chunks.items()]
    files += [(SNAP_FILES, layout.upload_key(u), k) for u, k in st.uploads.items()]
    files += [(SNAP_FILES, layout.activity_key(u), _U64.pack(i)) for u, i in st.activity.items()]
    files += [(SNAP_FILES, lease_key(i), encode_lease(x)) for i, x in st.leases.items()]
    files += [(SNAP_FILES, attach_key(i, k), b"") for i, ks in st.attached.items() for k in ks]
    files += [
        (SNAP_FILES, layout.staged_key(u, seq), pack([key, data]))
        for u, chunks in st.staged.items()
        for seq, (key, data) in chunks.items()
    ]
    sessions = [
        (SNAP_SESSIONS, layout.session_key(c), layout.encode_session(s))
        for c, s in st.sessions.items()
    ]
    sessions += [
        (SNAP_SESSIONS, layout.session_lru_key(s.index, c), b"") for c, s in st.sessions.items()
    ]
    return sorted(kv) + sorted(files) + sorted(sessions)


def _decode_record(rec: SnapshotRecord) -> Any:
    """A function that puts one streamed record into a state (raises CorruptionError first)."""
    db, k, v = rec
    if db == SNAP_KV:
        r = layout.decode_record(v)
        return lambda st: st.kv.__setitem__(k, r)
    if db == SNAP_SESSIONS:
        if k[:1] == b"i":
            return lambda st: None  # the LRU index is derived from the sessions themselves
        if k[:1] != b"c":
            raise CorruptionError(f"snapshot session key {k!r}")
        s = layout.decode_session(v)
        return lambda st: st.sessions.__setitem__(k[1:], s)
    tag = k[:1]
    if tag == b"m":
        m = layout.decode_manifest(v)
        return lambda st: st.manifests.__setitem__(k[1:], m)
    if tag == b"c" and len(k) >= 7:
        (n,) = _U16.unpack_from(k, 1)
        if len(k) == 3 + n + 4:
            key, (i,) = k[3 : 3 + n], _U32.unpack_from(k, 3 + n)
            return lambda st: st.chunks.__setitem__((key, i), v)
    if tag == b"s" and len(k) >= 6 and len(k) == 2 + k[1] + 4:
        uid, (seq,) = k[2 : 2 + k[1]], _U32.unpack_from(k, 2 + k[1])
        pair = layout.decode_staged(v)
        return lambda st: st.staged.setdefault(uid, {}).__setitem__(seq, pair)
    if tag == b"u" and len(k) >= 2 and len(k) == 2 + k[1]:
        return lambda st: st.uploads.__setitem__(k[2:], v)
    if tag == b"a" and len(k) >= 2 and len(k) == 2 + k[1]:
        i = layout.decode_u64("upload activity", v)
        return lambda st: st.activity.__setitem__(k[2:], i)
    lid = parse_lease_key(k)
    if lid is not None:
        lease = decode_lease(v)
        return lambda st: st.leases.__setitem__(lid, lease)
    att = parse_attach_key(k)
    if att is not None:
        return lambda st: st.attached.setdefault(att[0], set()).add(att[1])
    raise CorruptionError(f"snapshot files key {k!r}")
