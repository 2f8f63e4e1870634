"""The state machine's data in LMDB: record layouts and the apply transaction.

Owns: the key/value layouts of the `kv`, `files` and `sessions` databases and the
`applied` and `state_hash` meta keys, `LmdbStateTxn` (commands.StateTxn over one LMDB write
transaction, keeping the running state hash: state_hash.py) and the read helpers the store's
getters use.
Must not: open environments or transactions, or decide semantics (commands.py does).

Every value of the kv, files and sessions databases is stored sealed (seal.py: a crc32 of
key and payload, then the payload); the layouts below are the payloads. Reads check the
seal and raise IntegrityError; a pinned chunk's log record is checked against its entry
crc. Snapshot streams carry payloads (export_files_record, LmdbStore.stage_snapshot_chunk).

Layouts:
- kv:       user key -> [value, create_index, mod_index, version] (+ lease id, only when the
            key is attached to a lease: lease-free records are as before)
- files:    b"m" + key -> manifest [size, chunks, sha256, mod_index, create_index, version]
            b"c" + u16 len(key) + key + u32 n -> chunk n (a prefix scan reads them in order)
            b"s" + u8 len(upload_id) + upload_id + u32 seq -> staged chunk: [key, data], or
            [key, index, length]: the last `length` bytes of the log record at `index` (the
            chunk's own FileChunk entry, which the staged record pins)
            b"p" + u64 index -> u64 length: log record `index` is pinned by a staged chunk.
            Compaction keeps pinned records (below the log's first index they are file data,
            not log); dropping the staged chunk unpins its record (and deletes it if it was
            compacted). Each chunk byte is thus written once per node, not twice.
            b"u" + u8 len(upload_id) + upload_id -> key: the upload is committed file key's
            chunks (its manifest names the upload; a commit moves no data)
            b"a" + u8 len(upload_id) + upload_id -> u64: the log index of the last chunk
            staged for an upload in progress (gone once it is committed or aborted)
            b"h" + u8 len(upload_id) + upload_id -> 16 bytes: the sum of the state-hash
            contributions of the upload's staged chunks (so dropping them costs no re-read;
            derived: neither hashed nor streamed, rebuilt by `rebuild_state_hash`)
            b"L" + u64 lease id -> lease; b"K" + u64 lease id + key -> b"" (leases.py)
- sessions: b"c" + client_id -> [seq, index, ok, value, error]
            b"i" + u64 index + client_id -> b"" (LRU order by applied index, for eviction)
- meta:     b"applied" -> u64; b"state_hash" -> u64 index + 16 bytes: the state hash at
            that index, always the applied index (written together);
            b"pinned" -> u64: the total length of pinned chunks;
            b"conf" -> [voters, learners] in force at the applied index
            (absent until the first membership change); b"sm_gen" -> 0 or 1 (the live generation: kv/files/sessions or
            kv.1/files.1/sessions.1); b"staging" -> [gen, snapshot meta, next seq, records, done]
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rkv.codec import (
    SNAP_FILES,
    SNAP_KV,
    SNAP_SESSIONS,
    CodecError,
    entry_checksum_ok,
    pack,
    unpack,
)
from rkv.raft.types import ConfState
from rkv.store import state_hash as sh
from rkv.store.changes import ChangeRecorder
from rkv.store.commands import ApplyResult, Change, Manifest, Record, Session, UploadHashes
from rkv.store.errors import CorruptionError, IntegrityError, StoreError
from rkv.store.leases import (
    Lease,
    LeaseEvent,
    attach_key,
    count_leases,
    decode_lease,
    encode_lease,
    lease_key,
    read_lease_keys,
)
from rkv.store.seal import FILES, KV, LOG, SESSIONS, seal, unseal

if TYPE_CHECKING:
    import lmdb

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")

APPLIED_KEY = b"applied"
STATE_HASH_KEY = b"state_hash"
"""meta: the state hash (state_hash.py) at the applied index: u64 index + 16 bytes."""
GEN_KEY = b"sm_gen"
"""meta: which of the two state-machine generations is live (absent = 0, the unsuffixed dbs)."""
CONF_KEY = b"conf"
"""meta: the configuration in force at the applied index (written by apply and install)."""
STAGING_KEY = b"staging"
"""meta: the snapshot being staged in the other generation, see env.LmdbStore."""
PINNED_KEY = b"pinned"
"""meta: the total length of the chunks pinned in the log (log size minus this is what
compaction can give back)."""
TAIL_MAX = 64
"""Most stored keys after an apply batch that LmdbStateTxn lifts to append the batch."""
PIN_MIN = 4096
"""Chunks shorter than this are staged by copy (a pin per tiny chunk would cost more than
the copy)."""


@dataclass(frozen=True, slots=True)
class Dbs:
    log: lmdb._Database
    meta: lmdb._Database
    kv: lmdb._Database
    files: lmdb._Database
    sessions: lmdb._Database


def _fields(what: str, raw: bytes, n: int, most: int = 0) -> list[Any]:
    """The fields of a stored record: a list of n (up to `most`, when given) items."""
    try:
        v = unpack(raw)
    except CodecError as e:
        raise CorruptionError(f"{what}: {e}") from e
    if type(v) is not list or not n <= len(v) <= max(n, most):
        raise CorruptionError(f"{what}: unexpected shape")
    return v


def encode_conf(c: ConfState) -> bytes:
    return pack([list(c.voters), list(c.learners)])


def decode_conf(raw: bytes) -> ConfState:
    voters, learners = _fields("configuration", raw, 2)
    for ids in (voters, learners):
        _checked("configuration", type(ids) is list and all(type(x) is str for x in ids))
    return ConfState(tuple(voters), tuple(learners))


def _checked(what: str, ok: bool) -> None:
    if not ok:
        raise CorruptionError(f"{what}: bad field types")


def encode_record(r: Record) -> bytes:
    if r.lease:
        return pack([r.value, r.create_index, r.mod_index, r.version, r.lease])
    return pack([r.value, r.create_index, r.mod_index, r.version])


def decode_record(raw: bytes) -> Record:
    f = _fields("kv record", raw, 4, 5)  # 5: with the lease it is attached to
    _checked("kv record", type(f[0]) is bytes and all(type(x) is int for x in f[1:]))
    return Record(f[0], f[1], f[2], f[3], f[4] if len(f) == 5 else 0)


def encode_manifest(m: Manifest) -> bytes:
    return pack([m.size, m.chunks, m.sha256, m.mod_index, m.create_index, m.version, m.upload_id])


def decode_manifest(raw: bytes) -> Manifest:
    try:
        f = unpack(raw)
    except CodecError as e:
        raise CorruptionError(f"file manifest: {e}") from e
    # 6 fields: written before manifests named their upload (chunks under the file's key)
    if type(f) is not list or len(f) not in (6, 7):
        raise CorruptionError("file manifest: unexpected shape")
    upload_id = f[6] if len(f) == 7 else b""
    _checked(
        "file manifest",
        type(f[2]) is bytes
        and all(type(f[i]) is int for i in (0, 1, 3, 4, 5))
        and type(upload_id) is bytes,
    )
    return Manifest(f[0], f[1], f[2], f[3], f[4], f[5], upload_id)


def encode_session(s: Session) -> bytes:
    r = s.result
    return pack([s.seq, s.index, r.ok, r.value, r.error])


def decode_session(raw: bytes) -> Session:
    f = _fields("session", raw, 5)
    _checked(
        "session",
        type(f[0]) is int
        and type(f[1]) is int
        and type(f[2]) is bool
        and (f[3] is None or type(f[3]) in (bool, bytes, int))
        and (f[4] is None or type(f[4]) is str),
    )
    return Session(seq=f[0], index=f[1], result=ApplyResult(ok=f[2], value=f[3], error=f[4]))


def decode_staged(raw: bytes) -> tuple[bytes, bytes]:
    """A staged chunk stored by copy: (key, data). The only form a snapshot stream carries."""
    f = _fields("staged chunk", raw, 2)
    _checked("staged chunk", type(f[0]) is bytes and type(f[1]) is bytes)
    return f[0], f[1]


def decode_staged_any(raw: bytes) -> tuple[bytes, bytes | tuple[int, int]]:
    """A staged chunk in either form: (key, data) or (key, (log index, length))."""
    try:
        f = unpack(raw)
    except CodecError as e:
        raise CorruptionError(f"staged chunk: {e}") from e
    if type(f) is list and len(f) == 3:
        _checked(
            "staged chunk",
            type(f[0]) is bytes and type(f[1]) is int and type(f[2]) is int and f[1] > 0,
        )
        return f[0], (f[1], f[2])
    return decode_staged(raw)


def pinned_tail(txn: lmdb.Transaction[bytes], log: lmdb._Database, index: int, n: int) -> bytes:
    """The last n bytes of log record `index` (a pinned chunk's data), checked against the
    record's entry crc."""
    key = _U64.pack(index)
    raw = txn.get(key, db=log)
    if raw is None or len(raw) < n:
        raise CorruptionError(f"staged chunk: pinned log record {index} is missing or short")
    if not entry_checksum_ok(raw):
        raise IntegrityError(LOG, key, f"log record {index} (a file chunk kept in the log)")
    return raw[len(raw) - n :]


def staged_data(
    txn: lmdb.Transaction[bytes], log: lmdb._Database, raw: bytes
) -> tuple[bytes, bytes]:
    """(key, data) of a staged chunk in either form."""
    key, data = decode_staged_any(raw)
    if isinstance(data, tuple):
        return key, pinned_tail(txn, log, *data)
    return key, data


def pin_key(index: int) -> bytes:
    return b"p" + _U64.pack(index)


def manifest_key(key: bytes) -> bytes:
    return b"m" + key


def chunk_prefix(key: bytes) -> bytes:
    return b"c" + _U16.pack(len(key)) + key


def chunk_key(key: bytes, n: int) -> bytes:
    return chunk_prefix(key) + _U32.pack(n)


def staged_prefix(upload_id: bytes) -> bytes:
    return b"s" + bytes([len(upload_id)]) + upload_id


def staged_key(upload_id: bytes, seq: int) -> bytes:
    return staged_prefix(upload_id) + _U32.pack(seq)


def upload_key(upload_id: bytes) -> bytes:
    return b"u" + bytes([len(upload_id)]) + upload_id


def activity_key(upload_id: bytes) -> bytes:
    return b"a" + bytes([len(upload_id)]) + upload_id


def upload_sum_key(upload_id: bytes) -> bytes:
    return b"h" + bytes([len(upload_id)]) + upload_id


def encode_state_hash(index: int, value: int) -> bytes:
    return _U64.pack(index) + sh.to_bytes(value)


def decode_state_hash(raw: bytes | None) -> tuple[int, int]:
    """(index, hash) of the meta record; CorruptionError when it is missing or malformed."""
    if raw is None or len(raw) != 8 + sh.HASH_BYTES:
        raise CorruptionError("meta record state_hash is missing or malformed")
    return int(_U64.unpack_from(raw)[0]), sh.from_bytes(raw[8:])


def decode_upload_sum(raw: bytes) -> int:
    if len(raw) != sh.HASH_BYTES:
        raise CorruptionError(f"upload sum: {len(raw)} bytes, expected {sh.HASH_BYTES}")
    return sh.from_bytes(raw)


def uploads_in_progress(
    txn: lmdb.Transaction[bytes], files: lmdb._Database
) -> list[tuple[bytes, int]]:
    """(upload id, index of its last staged chunk) of every upload in progress."""
    out: list[tuple[bytes, int]] = []
    cur = txn.cursor(db=files)
    if cur.set_range(b"a"):
        for k, v in cur.iternext():
            if k[:1] != b"a":
                break
            out.append((k[2:], decode_u64("upload activity", unseal(FILES, k, v))))
    return out


def session_key(client_id: bytes) -> bytes:
    return b"c" + client_id


def session_lru_key(index: int, client_id: bytes) -> bytes:
    return b"i" + _U64.pack(index) + client_id


def decode_u64(what: str, raw: bytes | None) -> int:
    if raw is None:
        return 0
    if len(raw) != 8:
        raise CorruptionError(f"{what}: {len(raw)} bytes, expected 8")
    return int(_U64.unpack(raw)[0])


def count_prefix(txn: lmdb.Transaction[bytes], db: lmdb._Database, prefix: bytes) -> int:
    cur = txn.cursor(db=db)
    n = 0
    if cur.set_range(prefix):
        for k in cur.iternext(keys=True, values=False):
            if not k.startswith(prefix):
                break
            n += 1
    return n


def delete_prefix(txn: lmdb.Transaction[bytes], db: lmdb._Database, prefix: bytes) -> None:
    cur = txn.cursor(db=db)
    if cur.set_range(prefix):
        while cur.key().startswith(prefix):
            if not cur.delete():
                break


class LmdbStateTxn:
    """commands.StateTxn over one LMDB write transaction.

    Writes to `kv` are held back and written in key order by `flush()`, which the store calls
    once every entry of the batch is applied (before the commit). Why: LMDB splits a full leaf
    page in half unless the new key goes at its very end, so keys written in the order puts
    arrive (nearly sorted, but interleaved by concurrent clients) leave pages about 2/3
    full, while one sorted batch fills them; a sorted batch with a few stored keys after it
    is appended (`_append`), or it would leave them half full (docs/bench.md). The buffer
    holds one apply batch at most (the replica bounds it); reads in the batch see it.

    Every write updates `running`, the state hash (state_hash.py), with the change of the
    record's contribution: the old payload is the one a read in this transaction found
    (kept in `_known`/`_sessions`, so a put costs no second lookup) or read now. The
    store writes it to meta with the applied index (`set_applied_index`).
    """

    def __init__(
        self,
        txn: lmdb.Transaction[bytes],
        dbs: Dbs,
        hashes: UploadHashes | None = None,
        *,
        entries: Mapping[int, bytes] | None = None,
        log_start: Callable[[], int] | None = None,
        track: bool = False,
        changes: list[Change] | None = None,
        max_leases: int = 0,
        lease_total: int | None = None,
    ) -> None:
        self.txn = txn
        self.dbs = dbs
        self.max_leases = max_leases
        self.lease_total = lease_total
        """How many leases there are as of this transaction's writes, once known (the
        store passes what the last apply left; None: counted when a grant needs it)."""
        self.lease_events: list[LeaseEvent] = []
        """What this transaction's entries did to leases (the store hands them to its
        LeaseEventLog once the transaction commits)."""
        self.recorder = None if changes is None else ChangeRecorder(changes)
        """With a list: each change to a key or file is appended to it (for watchers,
        rkv.node.watch), recorded by the shared apply logic (changes.py)."""
        self.hashes = hashes if hashes is not None else UploadHashes(0)
        index, value = decode_state_hash(txn.get(STATE_HASH_KEY, db=dbs.meta))
        applied = self.applied_index()
        if index != applied:
            raise CorruptionError(f"state hash is of index {index}, the applied index is {applied}")
        self.running = sh.Running(value, track)
        """The state hash as of this transaction's writes; with `track`, their deltas."""
        self._kv: dict[bytes, Record | None] = {}
        """kv writes not yet flushed: key -> record, or None for a delete."""
        self._known: dict[bytes, bytes | None] = {}
        """kv key -> its payload as of this transaction (read or written), None: absent."""
        self._sessions: dict[bytes, bytes | None] = {}
        """client id -> its session payload as of this transaction, None: absent."""
        self._entries = entries if entries is not None else {}
        """index -> data of the log entries being applied (whose records end with it): a
        chunk found at the end of its entry's data is staged by pinning the record."""
        self._log_start = log_start
        """The log's first index as of this transaction (records below it are pins only)."""

    def get(self, key: bytes) -> Record | None:
        if key in self._kv:
            return self._kv[key]
        raw = self.txn.get(key, db=self.dbs.kv)
        if raw is None:
            self._known[key] = None
            return None
        payload = self._known[key] = unseal(KV, key, raw)
        return decode_record(payload)

    def _kv_payload(self, key: bytes) -> bytes | None:
        if key in self._known:
            return self._known[key]
        return self._payload(self.dbs.kv, KV, key)

    def _payload(self, db: lmdb._Database, name: str, key: bytes) -> bytes | None:
        raw = self.txn.get(key, db=db)
        return None if raw is None else unseal(name, key, raw)

    def put(self, key: bytes, rec: Record) -> None:
        new = encode_record(rec)
        old = self._kv_payload(key)  # known already: every write reads the key first
        self.running.change(SNAP_KV, key, old, new)
        self._known[key] = new
        self._kv[key] = rec

    def delete(self, key: bytes) -> None:
        old = self._kv_payload(key)
        self.running.change(SNAP_KV, key, old, None)
        self._known[key] = None
        self._kv[key] = None

    def keys(self, prefix: bytes) -> list[bytes]:
        out = set()
        cur = self.txn.cursor(db=self.dbs.kv)
        if cur.set_range(prefix):
            for k in cur.iternext(keys=True, values=False):
                if not k.startswith(prefix):
                    break
                out.add(k)
        for k, rec in self._kv.items():
            if k.startswith(prefix):
                if rec is None:
                    out.discard(k)
                else:
                    out.add(k)
        return sorted(out)

    def flush(self) -> None:
        """Write the held-back kv writes, in key order."""
        txn, db, pending = self.txn, self.dbs.kv, self._kv
        keys = sorted(pending)
        if keys and self._append(keys):
            pending.clear()
            return
        known = self._known
        for key in keys:
            payload = known[key]
            if payload is None:
                txn.delete(key, db=db)
            else:
                txn.put(key, seal(key, payload), db=db)
        pending.clear()

    def _append(self, keys: list[bytes]) -> bool:
        """Write a batch that sorts after all but a few stored keys (at most TAIL_MAX, and
        at most half the batch) as an append: lift those few, then append batch and tail
        merged, in order (MDB_APPEND). Why: the batch would otherwise go in just before the
        tail, on the page that holds it, which LMDB splits in half each time it fills, so
        keys written in order ahead of even one larger key (a time-ordered fill before a
        "z" key) leave every page half full; appended, they fill pages. False (nothing
        written) when the batch does not qualify."""
        txn, db = self.txn, self.dbs.kv
        limit = min(TAIL_MAX, len(keys) // 2)
        cur = txn.cursor(db=db)
        tail: list[tuple[bytes, bytes]] = []
        if cur.set_range(keys[0]):
            for item in cur.iternext():
                if len(tail) == limit:
                    return False
                tail.append(item)
        for k, _ in tail:
            txn.delete(k, db=db)
        merged = dict(tail)
        for k in keys:
            payload = self._known[k]
            if payload is None:
                merged.pop(k, None)
            else:
                merged[k] = seal(k, payload)
        for k in sorted(merged):
            if not cur.put(k, merged[k], append=True):
                raise StoreError(f"kv append of {k!r} refused")  # pragma: no cover
        return True

    def manifest(self, key: bytes) -> Manifest | None:
        mkey = manifest_key(key)
        raw = self.txn.get(mkey, db=self.dbs.files)
        return None if raw is None else decode_manifest(unseal(FILES, mkey, raw))

    def _files_record(self, fkey: bytes, new: bytes | None) -> None:
        """Put (or with None delete) a record of `files` that counts in the state hash as
        its payload."""
        files = self.dbs.files
        self.running.change(SNAP_FILES, fkey, self._payload(files, FILES, fkey), new)
        if new is None:
            self.txn.delete(fkey, db=files)
        else:
            self.txn.put(fkey, seal(fkey, new), db=files)

    def put_manifest(self, key: bytes, m: Manifest) -> None:
        self._files_record(manifest_key(key), encode_manifest(m))

    def delete_manifest(self, key: bytes) -> None:
        self._files_record(manifest_key(key), None)

    def put_chunk(self, key: bytes, n: int, data: bytes) -> None:
        self._files_record(chunk_key(key, n), data)

    def delete_chunk(self, key: bytes, n: int) -> None:
        self._files_record(chunk_key(key, n), None)

    def stage_chunk(self, upload_id: bytes, seq: int, key: bytes, data: bytes, index: int) -> None:
        skey = staged_key(upload_id, seq)
        old = self.txn.get(skey, db=self.dbs.files)
        old_ref: bytes | tuple[int, int] | None = None
        d = sh.contribution(SNAP_FILES, skey, sh.staged_form(key, data))
        if old is not None:
            old_key, old_ref = decode_staged_any(unseal(FILES, skey, old))
            old_data = old_ref if isinstance(old_ref, bytes) else self._tail(*old_ref)
            d -= sh.contribution(SNAP_FILES, skey, sh.staged_form(old_key, old_data))
        self.running.add(SNAP_FILES, skey, d)
        self._add_upload_sum(upload_id, d)
        src = self._entries.get(index)
        # codec: a FileChunk's data is the last field of its request, which is the last field
        # of its log record, so the record ends with the chunk; checked, not assumed
        if (
            len(data) >= PIN_MIN
            and src is not None
            and src.endswith(data)
            and self.txn.cursor(db=self.dbs.log).set_key(_U64.pack(index))
        ):
            if isinstance(old_ref, tuple) and old_ref[0] != index:
                self._unpin(*old_ref)
            self.txn.put(skey, seal(skey, pack([key, index, len(data)])), db=self.dbs.files)
            if not (isinstance(old_ref, tuple) and old_ref[0] == index):
                self._pin(index, len(data))
        else:
            if isinstance(old_ref, tuple):
                self._unpin(*old_ref)
            self.txn.put(skey, seal(skey, pack([key, data])), db=self.dbs.files)
        self.hashes.on_stage(upload_id, seq, key, data)

    def _tail(self, index: int, n: int) -> bytes:
        return pinned_tail(self.txn, self.dbs.log, index, n)

    def _add_upload_sum(self, upload_id: bytes, d: int) -> None:
        hkey = upload_sum_key(upload_id)
        old = self._payload(self.dbs.files, FILES, hkey)
        total = 0 if old is None else decode_upload_sum(old)
        new = sh.to_bytes((total + d) & sh.MASK)
        self.txn.put(hkey, seal(hkey, new), db=self.dbs.files)

    def _pin(self, index: int, n: int) -> None:
        pkey = pin_key(index)
        self.txn.put(pkey, seal(pkey, _U64.pack(n)), db=self.dbs.files)
        self._add_pinned(n)

    def _unpin(self, index: int, n: int) -> None:
        if not self.txn.delete(pin_key(index), db=self.dbs.files):
            raise CorruptionError(f"staged chunk refers to log record {index}, which is not pinned")
        self._add_pinned(-n)
        if self._log_start is None:
            raise StoreError("unpinning a chunk needs the log's first index")
        if index < self._log_start():
            # compacted: the record was kept for this chunk alone
            self.txn.delete(_U64.pack(index), db=self.dbs.log)

    def _add_pinned(self, n: int) -> None:
        total = decode_u64("pinned", self.txn.get(PINNED_KEY, db=self.dbs.meta)) + n
        self.txn.put(PINNED_KEY, _U64.pack(max(total, 0)), db=self.dbs.meta)

    def upload_committed(self, upload_id: bytes) -> bool:
        return self.txn.get(upload_key(upload_id), db=self.dbs.files) is not None

    def set_upload_committed(self, upload_id: bytes, key: bytes | None) -> None:
        self.hashes.forget(upload_id)
        self._files_record(upload_key(upload_id), key)

    def upload_digest(self, upload_id: bytes, chunks: int, key: bytes) -> tuple[bytes, int] | None:
        return self.hashes.digest(upload_id, chunks, key)

    def staged_chunk(self, upload_id: bytes, seq: int) -> tuple[bytes, bytes] | None:
        skey = staged_key(upload_id, seq)
        raw = self.txn.get(skey, db=self.dbs.files)
        return (
            None if raw is None else staged_data(self.txn, self.dbs.log, unseal(FILES, skey, raw))
        )

    def staged_count(self, upload_id: bytes) -> int:
        return count_prefix(self.txn, self.dbs.files, staged_prefix(upload_id))

    def upload_activity(self, upload_id: bytes) -> int | None:
        akey = activity_key(upload_id)
        raw = self.txn.get(akey, db=self.dbs.files)
        return None if raw is None else decode_u64("upload activity", unseal(FILES, akey, raw))

    def set_upload_activity(self, upload_id: bytes, index: int | None) -> None:
        self._files_record(activity_key(upload_id), None if index is None else _U64.pack(index))

    def drop_staged(self, upload_id: bytes) -> None:
        self.hashes.forget(upload_id)
        prefix = staged_prefix(upload_id)
        hkey = upload_sum_key(upload_id)
        total = self._payload(self.dbs.files, FILES, hkey)
        if total is not None:
            # every staged chunk of the upload at once: O(1), whatever its size
            self.running.add(SNAP_FILES, prefix, -decode_upload_sum(total), prefix=True)
            self.txn.delete(hkey, db=self.dbs.files)
        cur = self.txn.cursor(db=self.dbs.files)
        refs = []
        if cur.set_range(prefix):
            for k, v in cur.iternext():
                if not k.startswith(prefix):
                    break
                ref = decode_staged_any(unseal(FILES, k, v))[1]
                if isinstance(ref, tuple):
                    refs.append(ref)
        for ref in refs:
            self._unpin(*ref)
        delete_prefix(self.txn, self.dbs.files, prefix)

    def session(self, client_id: bytes) -> Session | None:
        payload = self._sessions[client_id] = self._session_payload(client_id)
        return None if payload is None else decode_session(payload)

    def _session_payload(self, client_id: bytes) -> bytes | None:
        return self._payload(self.dbs.sessions, SESSIONS, session_key(client_id))

    def put_session(self, client_id: bytes, s: Session, old: Session | None) -> None:
        db = self.dbs.sessions
        if old is not None:
            self.txn.delete(session_lru_key(old.index, client_id), db=db)
        skey, lru = session_key(client_id), session_lru_key(s.index, client_id)
        was = (
            self._sessions[client_id]
            if client_id in self._sessions
            else self._session_payload(client_id)
        )
        new = self._sessions[client_id] = encode_session(s)
        self.running.change(SNAP_SESSIONS, skey, was, new)
        self.txn.put(skey, seal(skey, new), db=db)
        self.txn.put(lru, seal(lru, b""), db=db)

    def session_count(self) -> int:
        # two records per session; stat() sees this transaction's own writes
        return self.txn.stat(self.dbs.sessions)["entries"] // 2

    def evict_oldest_session(self) -> None:
        db = self.dbs.sessions
        cur = self.txn.cursor(db=db)
        if not cur.set_range(b"i"):
            raise CorruptionError("session LRU index is empty")
        lru = cur.key()
        if not lru.startswith(b"i") or len(lru) < 9:
            raise CorruptionError("session LRU index is empty")
        cur.delete()
        client_id = lru[9:]
        old = self._session_payload(client_id)
        self.running.change(SNAP_SESSIONS, session_key(client_id), old, None)
        self._sessions[client_id] = None
        self.txn.delete(session_key(client_id), db=db)

    def applied_index(self) -> int:
        return decode_u64("applied index", self.txn.get(APPLIED_KEY, db=self.dbs.meta))

    def set_applied_index(self, index: int) -> None:
        meta = self.dbs.meta
        self.txn.put(APPLIED_KEY, _U64.pack(index), db=meta)
        self.txn.put(STATE_HASH_KEY, encode_state_hash(index, self.running.value), db=meta)

    def set_conf(self, conf: ConfState) -> None:
        self.txn.put(CONF_KEY, encode_conf(conf), db=self.dbs.meta)

    # --- leases (leases.py) -------------------------------------------------------------

    def lease(self, lease_id: int) -> Lease | None:
        payload = self._payload(self.dbs.files, FILES, lease_key(lease_id))
        return None if payload is None else decode_lease(payload)

    def _lease_record(self, k: bytes, new: bytes | None) -> bytes | None:
        """Write (or delete: None) a lease or attachment record; returns its old payload."""
        old = self._payload(self.dbs.files, FILES, k)
        self.running.change(SNAP_FILES, k, old, new)
        if new is None:
            self.txn.delete(k, db=self.dbs.files)
        else:
            self.txn.put(k, seal(k, new), db=self.dbs.files)
        return old

    def put_lease(self, lease_id: int, lease: Lease) -> None:
        if self._lease_record(lease_key(lease_id), encode_lease(lease)) is None:
            self._count_leases(1)

    def delete_lease(self, lease_id: int) -> None:
        if self._lease_record(lease_key(lease_id), None) is not None:
            self._count_leases(-1)

    def _count_leases(self, d: int) -> None:
        if self.lease_total is not None:
            self.lease_total += d

    def lease_count(self) -> int:
        if self.lease_total is None:  # once per store open or install: a scan
            self.lease_total = count_leases(self.txn, self.dbs.files)
        return self.lease_total

    def lease_limit(self) -> int:
        return self.max_leases

    def attach(self, lease_id: int, key: bytes) -> None:
        self._lease_record(attach_key(lease_id, key), b"")

    def detach(self, lease_id: int, key: bytes) -> None:
        self._lease_record(attach_key(lease_id, key), None)

    def lease_keys(self, lease_id: int) -> list[bytes]:
        return read_lease_keys(self.txn, self.dbs.files, lease_id)

    def lease_event(self, event: LeaseEvent) -> None:
        self.lease_events.append(event)


def scan_records(
    txn: lmdb.Transaction[bytes],
    db: lmdb._Database,
    prefix: bytes,
    limit: int,
    after: bytes | None = None,
) -> list[tuple[bytes, Record]]:
    """Up to `limit` (key, record) pairs whose key starts with `prefix` and, given `after`,
    is greater than it, in key order (one cursor: set_range to the later of the two)."""
    out: list[tuple[bytes, Record]] = []
    if limit == 0:
        return out
    cur = txn.cursor(db=db)
    start = prefix if after is None or after < prefix else after
    # LMDB refuses an empty key, so an empty start is the first record
    found = cur.set_range(start) if start else cur.first()
    if not found:
        return out
    for k, v in cur.iternext():
        if not k.startswith(prefix):
            break
        if after is not None and k <= after:
            continue  # only the record at `after` itself
        out.append((k, decode_record(unseal(KV, k, v))))
        if len(out) >= limit:
            break
    return out


def scan(
    txn: lmdb.Transaction[bytes],
    db: lmdb._Database,
    prefix: bytes,
    limit: int,
    after: bytes | None = None,
) -> list[tuple[bytes, bytes]]:
    """`scan_records`' (key, value) pairs."""
    return [(k, r.value) for k, r in scan_records(txn, db, prefix, limit, after)]


def file_chunk(txn: lmdb.Transaction[bytes], dbs: Dbs, key: bytes, n: int) -> bytes | None:
    """Chunk n of committed file `key` (None if there is none), wherever it is stored."""
    files = dbs.files
    mkey = manifest_key(key)
    raw = txn.get(mkey, db=files)
    if raw is None:
        return None
    m = decode_manifest(unseal(FILES, mkey, raw))
    if not 0 <= n < m.chunks:
        return None
    try:
        if not m.upload_id:
            ckey = chunk_key(key, n)
            data = txn.get(ckey, db=files)
            return None if data is None else unseal(FILES, ckey, data)
        skey = staged_key(m.upload_id, n)
        staged = txn.get(skey, db=files)
        return None if staged is None else staged_data(txn, dbs.log, unseal(FILES, skey, staged))[1]
    except IntegrityError as e:
        # name the file, not only the record that holds its chunk
        raise IntegrityError(e.db, e.key, f"chunk {n} of file {key!r} ({e.what})") from None


def pinned_keys(
    txn: lmdb.Transaction[bytes], files: lmdb._Database, lo: int, hi: int
) -> set[bytes]:
    """The log keys in [lo, hi] pinned by staged chunks of this generation's `files`."""
    out: set[bytes] = set()
    cur = txn.cursor(db=files)
    if cur.set_range(pin_key(lo)):
        for k in cur.iternext(keys=True, values=False):
            if not k.startswith(b"p") or len(k) != 9:
                break
            index = int(_U64.unpack_from(k, 1)[0])
            if index > hi:
                break
            out.add(k[1:])
    return out


def export_files_record(txn: lmdb.Transaction[bytes], dbs: Dbs, k: bytes, v: bytes) -> bytes | None:
    """A `files` record as a snapshot stream carries it: its payload, checked against its
    seal; staged chunks by copy (the receiver's log is not ours), pins not at all (None)."""
    tag = k[:1]
    if tag in (b"p", b"h"):
        return None
    v = unseal(FILES, k, v)
    if tag == b"s":
        key, data = decode_staged_any(v)
        if isinstance(data, tuple):
            return pack([key, pinned_tail(txn, dbs.log, *data)])
    return v


def check_received_files_record(k: bytes, v: bytes) -> None:
    """What export_files_record never sends: a pin, an upload sum, or a staged chunk by
    reference."""
    if k[:1] in (b"p", b"h"):
        raise CorruptionError(f"snapshot files record {k!r}: a pin or an upload sum")
    if k[:1] == b"s":
        decode_staged(v)


def verify_state(txn: lmdb.Transaction[bytes], dbs: Dbs) -> int:
    """Check the seal of every record of the state machine in `dbs` and the entry crc of
    each log record its staged chunks pin; returns how many records were checked. Raises
    IntegrityError at the first mismatch."""
    n = 0
    for name, db in ((KV, dbs.kv), (FILES, dbs.files), (SESSIONS, dbs.sessions)):
        for k, v in txn.cursor(db=db).iternext():
            payload = unseal(name, k, v)
            if name == FILES and k[:1] == b"s":
                staged_data(txn, dbs.log, payload)
            n += 1
    return n
