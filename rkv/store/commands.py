"""The state machine's semantics: what each committed entry does, independent of storage.

Owns: ApplyResult/Record/Manifest/Session, the `StateTxn` protocol a backend offers for one
write transaction, and `apply_entries`, the single implementation of put/delete/cas, file
staging and commit, and client sessions (exactly-once); transactions (rkv.txn.Txn) are run
by txn_apply.py, lease commands by lease_apply.py; every write of a key goes through
`set_key`, which keeps the lease attachments. The LMDB store (kv.py) and the memory
twin (memory.py) both run this code, so they cannot disagree on semantics.
Must not: do I/O, know about LMDB, look at clocks or randomness (every replica must compute
the same result from the same entries).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from rkv.codec import (
    Cas,
    CodecError,
    Command,
    Delete,
    FileAbort,
    FileChunk,
    FileCommit,
    FileDelete,
    LeaseCheckpoint,
    LeaseExpire,
    LeaseGrant,
    LeaseRenew,
    LeaseRevoke,
    Put,
    PutLease,
    Request,
    Txn,
    UnknownCommand,
    decode_request,
)
from rkv.raft import confchange
from rkv.raft.types import ConfState, Entry, EntryType
from rkv.store.errors import NewerCommandError, StoreError
from rkv.store.leases import Lease, LeaseTxn

if TYPE_CHECKING:
    from rkv.store.changes import ChangeRecorder

DEFAULT_MAX_SESSIONS = 10_000

ResultValue = bool | bytes | int | None


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """The outcome of one entry. `value`: Delete/FileDelete -> existed (bool), Cas -> swapped
    (bool), Txn -> its rkv.txn.TxnResult's wire form, packed (bytes), LeaseGrant -> the lease
    id, LeaseRenew -> its TTL in ms, LeaseRevoke -> existed (bool), LeaseExpire -> how many
    leases it deleted, everything else -> None. `ok` is False only with an `error` (a one-line reason:
    malformed command, stale request, file commit mismatch)."""

    ok: bool = True
    value: ResultValue = None
    error: str | None = None


NOOP = ApplyResult()
STALE = ApplyResult(ok=False, error="stale request")


@dataclass(frozen=True, slots=True)
class Change:
    """One change a committed entry made to the key space, as recorded for watchers
    (rkv.node.watch): `kind` is "put" or "delete" for a key, "file_commit" or "file_delete" for
    a file; `value` is the new value (a put), `prev` the value before this entry (a key that
    existed; None for files and new keys). "reset" (revision: the new applied index) means the
    whole state was replaced by a snapshot: the changes up to it are not known."""

    revision: int
    kind: str
    key: bytes
    value: bytes | None = None
    prev: bytes | None = None


@dataclass(frozen=True, slots=True)
class Record:
    """A user key's value plus the Raft indexes of its creation and last modification, a
    per-key version (1 on creation, +1 per write; a delete removes the record) and the lease
    it is attached to (0: none)."""

    value: bytes
    create_index: int
    mod_index: int
    version: int
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Manifest:
    """A committed file: `chunks` chunks numbered 0..chunks-1, `size` bytes in all."""

    size: int
    chunks: int
    sha256: bytes
    mod_index: int
    create_index: int = 0
    version: int = 1
    upload_id: bytes = b""
    """The upload whose staged chunks became the file's chunks (a commit moves no data);
    empty for files whose chunks are stored under the file's key."""


@dataclass(frozen=True, slots=True)
class Session:
    """A client's last applied request: its seq, result and the index that applied it."""

    seq: int
    result: ApplyResult
    index: int


class StateTxn(LeaseTxn, Protocol):
    """One write transaction over the state machine's data, as apply_entries needs it."""

    recorder: ChangeRecorder | None
    """While recording (for watchers): where apply_entries, set_key and the file commands
    record the changes they make (changes.py); None: not recording."""

    def set_conf(self, conf: ConfState) -> None:
        """Record the configuration in force from this transaction's applied index on."""
        ...

    def get(self, key: bytes) -> Record | None: ...
    def put(self, key: bytes, rec: Record) -> None: ...
    def delete(self, key: bytes) -> None: ...
    def keys(self, prefix: bytes) -> list[bytes]:
        """The keys starting with `prefix`, as of this transaction's writes, in key order."""
        ...

    def manifest(self, key: bytes) -> Manifest | None: ...
    def put_manifest(self, key: bytes, m: Manifest) -> None: ...
    def delete_manifest(self, key: bytes) -> None: ...
    def put_chunk(self, key: bytes, n: int, data: bytes) -> None: ...
    def delete_chunk(self, key: bytes, n: int) -> None: ...

    def stage_chunk(self, upload_id: bytes, seq: int, key: bytes, data: bytes, index: int) -> None:
        """Stage (or re-stage) chunk `seq`, carried by the log entry at `index`."""
        ...

    def staged_chunk(self, upload_id: bytes, seq: int) -> tuple[bytes, bytes] | None:
        """(key, data) of a staged chunk."""
        ...

    def staged_count(self, upload_id: bytes) -> int: ...
    def drop_staged(self, upload_id: bytes) -> None: ...
    def upload_committed(self, upload_id: bytes) -> bool:
        """The upload's chunks belong to a committed file (the id cannot be reused)."""
        ...

    def set_upload_committed(self, upload_id: bytes, key: bytes | None) -> None:
        """Mark (key) or unmark (None) an upload as the chunks of committed file `key`."""
        ...

    def upload_digest(self, upload_id: bytes, chunks: int, key: bytes) -> tuple[bytes, int] | None:
        """(sha256, size) of staged chunks 0..chunks-1 if known without reading them, all
        staged for `key` (see UploadHashes); None means: read them."""
        ...

    def upload_activity(self, upload_id: bytes) -> int | None:
        """The log index of the last chunk staged for an upload in progress (None: none)."""
        ...

    def set_upload_activity(self, upload_id: bytes, index: int | None) -> None: ...

    def session(self, client_id: bytes) -> Session | None: ...
    def put_session(self, client_id: bytes, s: Session, old: Session | None) -> None: ...
    def session_count(self) -> int: ...
    def evict_oldest_session(self) -> None:
        """Drop the session with the lowest `index` (least recently applied)."""
        ...

    def applied_index(self) -> int: ...
    def set_applied_index(self, index: int) -> None: ...


def check_order(applied: int, entries: Sequence[Entry]) -> None:
    """Entries must continue the applied prefix exactly: anything else is a caller bug that
    would break exactly-once, so it is refused before anything is written."""
    expect = applied + 1
    for e in entries:
        if e.index != expect:
            raise StoreError(f"apply out of order: got entry {e.index}, expected {expect}")
        expect += 1


def apply_entries(
    txn: StateTxn, entries: Sequence[Entry], max_sessions: int = DEFAULT_MAX_SESSIONS
) -> list[ApplyResult]:
    """Apply committed entries in order; returns one result per entry. Leader no-ops (empty
    NORMAL entries) only advance the applied index; CONF_CHANGE entries record the
    configuration they result in (snapshots taken here carry it). An undecodable command is
    deterministically an error result (every replica sees the same bytes); a command of a
    newer rkv raises NewerCommandError (the transaction is not committed): skipping it would
    make this replica differ from the upgraded ones."""
    check_order(txn.applied_index(), entries)
    # Decoded before anything is applied, so a command of a newer rkv changes nothing (the
    # in-memory twin has no transaction to roll back).
    decoded: list[Request | ApplyResult | None] = []
    for e in entries:
        if e.type != EntryType.NORMAL or not e.data:
            decoded.append(None)
            continue
        try:
            decoded.append(decode_request(e.data))
        except UnknownCommand as err:
            raise NewerCommandError(
                f"log entry {e.index} holds a command of a newer rkv ({err}): upgrade this node"
            ) from None
        except CodecError as err:
            decoded.append(ApplyResult(ok=False, error=f"malformed command: {err}"))
    results: list[ApplyResult] = []
    for e, req in zip(entries, decoded, strict=True):
        if e.type == EntryType.CONF_CHANGE:
            try:
                txn.set_conf(confchange.decode(e.data).conf)
            except confchange.ConfChangeError as err:
                results.append(ApplyResult(ok=False, error=f"malformed conf change: {err}"))
                continue
            results.append(NOOP)
        elif req is None:
            results.append(NOOP)
        elif isinstance(req, ApplyResult):
            results.append(req)
        else:
            if txn.recorder is not None:
                txn.recorder.begin(e.index)
            results.append(_apply_request(txn, req, e.index, e.term, max_sessions))
    if entries:
        txn.set_applied_index(entries[-1].index)
    return results


def _apply_request(
    txn: StateTxn, req: Request, index: int, term: int, max_sessions: int
) -> ApplyResult:
    if req.seq == 0:
        return execute(txn, req.command, index, term)
    old = txn.session(req.client_id)
    if old is not None:
        if req.seq == old.seq:
            return old.result
        if req.seq < old.seq:
            return STALE
    result = execute(txn, req.command, index, term)
    if old is None:
        while txn.session_count() >= max_sessions:
            txn.evict_oldest_session()
    txn.put_session(req.client_id, Session(req.seq, result, index), old)
    return result


class KeyTxn(Protocol):
    """The part of StateTxn that writes keys (a txn's overlay needs no more: rkv.testing's
    DictTxn runs txns over a dict with it)."""

    recorder: ChangeRecorder | None
    """As StateTxn.recorder."""

    def get(self, key: bytes) -> Record | None: ...
    def put(self, key: bytes, rec: Record) -> None: ...
    def delete(self, key: bytes) -> None: ...
    def keys(self, prefix: bytes) -> list[bytes]: ...
    def lease(self, lease_id: int) -> Lease | None: ...
    def attach(self, lease_id: int, key: bytes) -> None: ...
    def detach(self, lease_id: int, key: bytes) -> None: ...


def set_key(txn: KeyTxn, key: bytes, rec: Record | None, old: Record | None) -> None:
    """Write (`rec`) or delete (None) a key whose record was `old` (read in this txn), moving
    its lease attachment along: a write without a lease detaches it (etcd's semantics)."""
    was = 0 if old is None else old.lease
    now = 0 if rec is None else rec.lease
    if was != now:
        if was:
            txn.detach(was, key)
        if now:
            txn.attach(now, key)
    if txn.recorder is not None:
        txn.recorder.key(key, rec, old)
    if rec is not None:
        txn.put(key, rec)
    elif old is not None:
        txn.delete(key)


def _write(txn: StateTxn, key: bytes, value: bytes, index: int, lease: int = 0) -> None:
    old = txn.get(key)
    if old is None:
        set_key(txn, key, Record(value, index, index, 1, lease), old)
    else:
        set_key(txn, key, Record(value, old.create_index, index, old.version + 1, lease), old)


LEASE_NOT_FOUND = "lease not found"
"""The error of a command naming a lease that does not exist (clients map it to their
LeaseNotFound)."""

_LEASE_COMMANDS = (LeaseGrant, LeaseRenew, LeaseRevoke, LeaseCheckpoint, LeaseExpire)


def execute(txn: StateTxn, cmd: Command, index: int, term: int = 0) -> ApplyResult:
    """One command's effect at log index `index` of term `term` (no session handling)."""
    if isinstance(cmd, Put):
        _write(txn, cmd.key, cmd.value, index)
        return NOOP
    if isinstance(cmd, PutLease):
        if txn.lease(cmd.lease_id) is None:
            return ApplyResult(ok=False, error=LEASE_NOT_FOUND)
        _write(txn, cmd.key, cmd.value, index, cmd.lease_id)
        return NOOP
    if isinstance(cmd, Delete):
        old = txn.get(cmd.key)
        set_key(txn, cmd.key, None, old)
        return ApplyResult(value=old is not None)
    if isinstance(cmd, _LEASE_COMMANDS):
        from rkv.store import lease_apply  # here: lease_apply imports this module

        return lease_apply.execute_lease(txn, cmd, index, term)
    if isinstance(cmd, Cas):
        cur = txn.get(cmd.key)
        current = None if cur is None else cur.value
        if current != cmd.expected:
            return ApplyResult(value=False)
        _write(txn, cmd.key, cmd.new, index)
        return ApplyResult(value=True)
    if isinstance(cmd, FileChunk):
        if txn.upload_committed(cmd.upload_id):
            return ApplyResult(ok=False, error=f"upload {cmd.upload_id!r} is already committed")
        txn.stage_chunk(cmd.upload_id, cmd.seq, cmd.key, cmd.data, index)
        txn.set_upload_activity(cmd.upload_id, index)
        return NOOP
    if isinstance(cmd, FileAbort):
        return _file_abort(txn, cmd)
    if isinstance(cmd, FileCommit):
        return _file_commit(txn, cmd, index)
    if isinstance(cmd, Txn):
        from rkv.store import txn_apply  # here: txn_apply imports this module

        return txn_apply.execute_txn(txn, cmd, index)
    if isinstance(cmd, FileDelete):
        m = txn.manifest(cmd.key)
        if m is not None:
            _drop_chunks(txn, cmd.key, m)
            if txn.recorder is not None:
                txn.recorder.file_delete(cmd.key)
            txn.delete_manifest(cmd.key)
        return ApplyResult(value=m is not None)
    raise StoreError(f"unknown command {type(cmd).__name__}")  # pragma: no cover


def _commit_error(cmd: FileCommit, why: str) -> ApplyResult:
    return ApplyResult(ok=False, error=f"file commit {cmd.key!r}: {why}")


def _file_commit(txn: StateTxn, cmd: FileCommit, index: int) -> ApplyResult:
    # Validate everything first, so a refused commit changes nothing (the staged chunks stay,
    # and the client may send the missing ones and commit again).
    if txn.upload_committed(cmd.upload_id):
        return _commit_error(cmd, "upload already committed")
    staged = txn.staged_count(cmd.upload_id)
    if staged != cmd.chunks:
        return _commit_error(cmd, f"{staged} chunks staged, commit names {cmd.chunks}")
    known = txn.upload_digest(cmd.upload_id, cmd.chunks, cmd.key)
    if known is not None:
        digest, size = known
    else:
        # The slow path (after a restart, or chunks staged out of order): read them all.
        h = hashlib.sha256()
        size = 0
        for n in range(cmd.chunks):
            chunk = txn.staged_chunk(cmd.upload_id, n)
            if chunk is None:
                return _commit_error(cmd, f"chunk {n} missing")
            if chunk[0] != cmd.key:
                return _commit_error(cmd, f"chunk {n} was uploaded for another key")
            h.update(chunk[1])
            size += len(chunk[1])
        digest = h.digest()
    if size != cmd.size:
        return _commit_error(cmd, f"size {size} != {cmd.size}")
    if digest != cmd.sha256:
        return _commit_error(cmd, "sha256 mismatch")
    old = txn.manifest(cmd.key)
    if old is not None:
        _drop_chunks(txn, cmd.key, old)
    # The staged chunks become the file's chunks where they are: a commit costs O(chunks)
    # bookkeeping, not a copy of the file (which would stall the raft loop for seconds).
    txn.set_upload_committed(cmd.upload_id, cmd.key)
    txn.set_upload_activity(cmd.upload_id, None)
    if txn.recorder is not None:
        txn.recorder.file_commit(cmd.key)
    txn.put_manifest(
        cmd.key,
        Manifest(
            size=cmd.size,
            chunks=cmd.chunks,
            sha256=cmd.sha256,
            mod_index=index,
            create_index=index if old is None else old.create_index,
            version=1 if old is None else old.version + 1,
            upload_id=cmd.upload_id,
        ),
    )
    return NOOP


def _file_abort(txn: StateTxn, cmd: FileAbort) -> ApplyResult:
    """value: whether staged chunks were dropped. An upload that staged a chunk since the
    abort was proposed (its last index moved on) is kept: it is not idle."""
    if txn.upload_committed(cmd.upload_id):
        return ApplyResult(value=False)  # its chunks are a file's now
    if cmd.last_index and txn.upload_activity(cmd.upload_id) != cmd.last_index:
        return ApplyResult(value=False)
    staged = txn.staged_count(cmd.upload_id) > 0
    txn.drop_staged(cmd.upload_id)
    txn.set_upload_activity(cmd.upload_id, None)
    return ApplyResult(value=staged)


def _drop_chunks(txn: StateTxn, key: bytes, m: Manifest) -> None:
    if m.upload_id:
        txn.drop_staged(m.upload_id)
        txn.set_upload_committed(m.upload_id, None)
    else:
        for n in range(m.chunks):
            txn.delete_chunk(key, n)


class UploadHashes:
    """Running sha256 of uploads whose chunks were staged in order (0, 1, 2, ...), so that a
    commit need not read a large file back. A cache: bounded, lost on restart, dropped for
    an upload whose chunks arrive out of order or are re-staged (the commit then reads the
    chunks). Every path gives the same digest, so replicas agree whichever one they take."""

    def __init__(self, max_uploads: int = 16) -> None:
        self._max = max_uploads
        self._h: dict[bytes, tuple[int, bytes, int, Any]] = {}
        """upload id -> (next seq, key, size so far, sha256 object)"""

    def on_stage(self, upload_id: bytes, seq: int, key: bytes, data: bytes) -> None:
        cur = self._h.pop(upload_id, None)
        if seq == 0:
            cur = (0, key, 0, hashlib.sha256())
        if cur is None or cur[0] != seq or cur[1] != key:
            return  # out of order (or another key): forget it, the commit reads the chunks
        h = cur[3]
        h.update(data)
        self._h[upload_id] = (seq + 1, key, cur[2] + len(data), h)
        while len(self._h) > self._max:
            del self._h[next(iter(self._h))]

    def digest(self, upload_id: bytes, chunks: int, key: bytes) -> tuple[bytes, int] | None:
        cur = self._h.get(upload_id)
        if cur is None or cur[0] != chunks or cur[1] != key:
            return None
        return cur[3].digest(), cur[2]

    def forget(self, upload_id: bytes) -> None:
        self._h.pop(upload_id, None)
