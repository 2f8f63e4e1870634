"""msgpack <-> rkv domain objects: log entries, hard state, Raft messages, client commands.

Owns: every byte layout that leaves memory (the Raft log on disk, Raft messages on the wire,
client requests inside log entries), and the validation of whatever comes back. It is the only
place that knows field order and the short wire keys. Anything malformed, truncated, of the
wrong type or over a size limit raises `CodecError` (a ValueError), never an exception from
deep inside msgpack or a dataclass.
Must not: do I/O, know about LMDB, trio or sockets, or import anything above rkv.raft (and
rkv.txn, the transaction values, which import nothing).

Layouts (all msgpack with bin types; no ext types):
- entry (on disk): 1 version byte, 4-byte big-endian crc32 of the payload, payload =
  [term, index, type, data]. `decode_entry` verifies the crc (`ChecksumError`).
- hard state: [term, vote, commit].
- message (wire): a map with short keys, defaults omitted (see `_MSG_KEYS`); entries inside a
  message are [term, index, data] arrays ([term, index, data, type] when not NORMAL).
- request (log entry data): [1, client_id, seq, tag, *command fields]; a Txn (tag 8) is
  [compares, success, failure] in rkv.txn's wire form; leases (tags 9..14): LeaseGrant
  [lease_id, ttl_ms], LeaseRenew [lease_id], LeaseRevoke [lease_id], LeaseCheckpoint
  [[[lease_id, gen, remaining_ms], ...]], LeaseExpire [term, [[lease_id, gen], ...]],
  PutLease [key, value, lease_id].
"""

from __future__ import annotations

import struct
import threading
import zlib
from dataclasses import dataclass
from typing import Any, NoReturn, TypeAlias

import msgpack

from rkv import txn as _txn
from rkv.raft.types import (
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
)

# --- limits -----------------------------------------------------------------------------------

MAX_U64 = (1 << 64) - 1
MAX_KEY_LEN = 400
"""User keys (1..400 bytes) (kv and file names). LMDB keys are at most 511 bytes and file chunk keys add a
7-byte prefix/suffix, so keys are capped well below that."""
MAX_VALUE_LEN = 16 << 20
MAX_ID_LEN = 64
"""client_id and upload_id."""
MAX_NODE_ID_LEN = 256
MAX_CONTEXT_LEN = 1 << 16
MAX_BIN_LEN = 64 << 20
"""Default cap on one bin/str inside any unpacked object (also bounded by the input size)."""
MAX_ARRAY_LEN = 1 << 20
MAX_MAP_LEN = 1 << 10
assert (_txn.MAX_KEY_LEN, _txn.MAX_VALUE_LEN) == (MAX_KEY_LEN, MAX_VALUE_LEN)


class CodecError(ValueError):
    """Bytes or a decoded structure that is not a valid rkv object."""


class UnknownCommand(CodecError):
    """A well-formed request whose format or command tag this rkv does not know: a newer rkv
    wrote it (tags and formats are only ever added)."""


class ChecksumError(CodecError):
    """A stored record whose checksum does not match its payload (corruption)."""


def _fail(msg: str) -> NoReturn:
    raise CodecError(msg)


# --- pack / unpack ----------------------------------------------------------------------------


_packers = threading.local()
_PACKER_KEEP = 256 << 10
"""A thread's Packer is dropped after packing more than this (its buffer stays that big)."""


def packb(obj: object) -> bytes:
    """`msgpack.packb(obj, use_bin_type=True)` with one reusable Packer per thread: building a
    Packer costs more than packing a small object (1.5 us against 0.3). Raises what msgpack
    raises (TypeError, ValueError, OverflowError); the Packer resets itself on an error."""
    p: msgpack.Packer | None = getattr(_packers, "p", None)
    if p is None:
        p = _packers.p = msgpack.Packer(use_bin_type=True)
    out: bytes = p.pack(obj)
    if len(out) > _PACKER_KEEP:
        _packers.p = None
    return out


def pack(obj: object) -> bytes:
    """msgpack with bin types. Raises CodecError for objects msgpack cannot represent."""
    try:
        return packb(obj)
    except (TypeError, ValueError, OverflowError) as e:
        raise CodecError(f"cannot pack {type(obj).__name__}: {e}") from e


def _no_ext(code: int, data: bytes) -> NoReturn:
    raise CodecError(f"msgpack ext type {code} is not allowed")


def unpack(
    data: bytes | bytearray | memoryview,
    *,
    max_bin_len: int = MAX_BIN_LEN,
    max_str_len: int = MAX_BIN_LEN,
    max_array_len: int = MAX_ARRAY_LEN,
    max_map_len: int = MAX_MAP_LEN,
) -> object:
    """Exactly one msgpack object from `data`. Every length is capped (and never above
    len(data)), so a hostile length header cannot make us allocate; trailing bytes, ext types
    and non-str/bytes map keys are errors."""
    n = len(data)
    try:
        if max_bin_len >= n and max_str_len >= n and max_array_len >= n and max_map_len >= n:
            # msgpack caps every length at len(data) by default, and raw=False, use_list and
            # strict_map_key are its defaults: the same call as below without the keyword
            # parsing, which costs five times the decoding of a small record.
            return msgpack.unpackb(data, ext_hook=_no_ext, max_ext_len=0)
        return msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            ext_hook=_no_ext,
            max_bin_len=min(max_bin_len, n),
            max_str_len=min(max_str_len, n),
            max_array_len=min(max_array_len, n),
            max_map_len=min(max_map_len, n),
            max_ext_len=0,
        )
    except CodecError:
        raise
    except (ValueError, TypeError, OverflowError, RecursionError, msgpack.UnpackException) as e:
        # msgpack signals garbage via ValueError subclasses (ExtraData, FormatError,
        # StackError, UnicodeDecodeError, "exceeds max_*_len") and OutOfData.
        raise CodecError(f"undecodable msgpack: {type(e).__name__}: {e}") from e


# --- field checkers (the decoded structure is untrusted) ---------------------------------------


def _int(v: object, what: str, lo: int = 0, hi: int = MAX_U64) -> int:
    if type(v) is not int:
        _fail(f"{what}: expected int, got {type(v).__name__}")
    if not lo <= v <= hi:
        _fail(f"{what}: {v} out of range [{lo}, {hi}]")
    return v


def _bytes(v: object, what: str, max_len: int) -> bytes:
    if type(v) is not bytes:
        _fail(f"{what}: expected bytes, got {type(v).__name__}")
    if len(v) > max_len:
        _fail(f"{what}: {len(v)} bytes > {max_len}")
    return v


def _str(v: object, what: str, max_len: int) -> str:
    if type(v) is not str:
        _fail(f"{what}: expected str, got {type(v).__name__}")
    if len(v) > max_len:
        _fail(f"{what}: {len(v)} chars > {max_len}")
    return v


def _bool(v: object, what: str) -> bool:
    if type(v) is not bool:
        _fail(f"{what}: expected bool, got {type(v).__name__}")
    return v


def _list(v: object, what: str, n: int | None = None) -> list[Any]:
    if type(v) is not list:
        _fail(f"{what}: expected array, got {type(v).__name__}")
    if n is not None and len(v) != n:
        _fail(f"{what}: expected {n} items, got {len(v)}")
    return v


def _dict(v: object, what: str) -> dict[str, Any]:
    if type(v) is not dict:
        _fail(f"{what}: expected map, got {type(v).__name__}")
    for k in v:
        if type(k) is not str:
            _fail(f"{what}: map keys must be str")
    return v


def _entry_type(v: object) -> EntryType:
    try:
        return EntryType(_int(v, "entry type", 0, 255))
    except ValueError as e:
        if isinstance(e, CodecError):
            raise
        raise CodecError(f"unknown entry type {v}") from None


# --- log entries ------------------------------------------------------------------------------

ENTRY_FORMAT = 1
_ENTRY_HDR = struct.Struct(">BI")


def encode_entry(entry: Entry) -> bytes:
    """The on-disk form of a log entry: version byte, crc32, msgpack [term, index, type, data]."""
    payload = pack([entry.term, entry.index, int(entry.type), entry.data])
    return _ENTRY_HDR.pack(ENTRY_FORMAT, zlib.crc32(payload)) + payload


def decode_entry(data: bytes | bytearray | memoryview) -> Entry:
    """Inverse of encode_entry. Raises ChecksumError on a crc mismatch, CodecError otherwise."""
    if len(data) < _ENTRY_HDR.size:
        _fail(f"entry record too short ({len(data)} bytes)")
    version, crc = _ENTRY_HDR.unpack_from(data)
    if version != ENTRY_FORMAT:
        _fail(f"unknown entry format {version}")
    payload = memoryview(data)[_ENTRY_HDR.size :]
    if zlib.crc32(payload) != crc:
        raise ChecksumError("entry checksum mismatch")
    return _entry_from_list(_list(unpack(payload), "entry", 4))


def entry_checksum_ok(data: bytes | bytearray | memoryview) -> bool:
    """Whether an encoded entry's crc matches its payload, without decoding it (a stored
    record's bytes read in place, e.g. a file chunk kept in its log record)."""
    if len(data) < _ENTRY_HDR.size:
        return False
    version, crc = _ENTRY_HDR.unpack_from(data)
    return bool(version == ENTRY_FORMAT and zlib.crc32(memoryview(data)[_ENTRY_HDR.size :]) == crc)


def _entry_from_list(f: list[Any]) -> Entry:
    return Entry(
        term=_int(f[0], "entry term"),
        index=_int(f[1], "entry index"),
        type=_entry_type(f[2]),
        data=_bytes(f[3], "entry data", MAX_BIN_LEN),
    )


# --- hard state -------------------------------------------------------------------------------


def encode_hard_state(hs: HardState) -> bytes:
    """[term, vote, commit], with a 4th field `recovering` only while it is set (so a store
    that never recovered reads the same with an rkv that predates it)."""
    if hs.recovering:
        return pack([hs.term, hs.vote, hs.commit, True])
    return pack([hs.term, hs.vote, hs.commit])


def decode_hard_state(data: bytes | bytearray | memoryview) -> HardState:
    v = unpack(data)
    f = _list(v, "hard state", 4 if type(v) is list and len(v) == 4 else 3)
    recovering = len(f) == 4 and f[3]
    if type(recovering) is not bool:
        _fail("hard state recovering: expected bool")
    return HardState(
        term=_int(f[0], "hard state term"),
        vote=_str(f[1], "hard state vote", MAX_NODE_ID_LEN),
        commit=_int(f[2], "hard state commit"),
        recovering=recovering,
    )


# --- snapshot meta (stored by rkv.store, sent inside SNAPSHOT messages) -----------------------


def snapshot_meta_to_list(meta: SnapshotMeta) -> list[Any]:
    out: list[Any] = [meta.index, meta.term, list(meta.voters)]
    if meta.learners:
        out.append(list(meta.learners))
    return out


def snapshot_meta_from_list(v: object) -> SnapshotMeta:
    """[index, term, voters] or [index, term, voters, learners] (learners came later)."""
    if type(v) is list and len(v) == 4:
        f = v
        learners = _node_ids(f[3], "snapshot learners")
    else:
        f = _list(v, "snapshot meta", 3)
        learners = ()
    return SnapshotMeta(
        index=_int(f[0], "snapshot index"),
        term=_int(f[1], "snapshot term"),
        voters=_node_ids(f[2], "snapshot voters"),
        learners=learners,
    )


def _node_ids(v: object, what: str) -> tuple[str, ...]:
    ids = _list(v, what)
    if len(ids) > 1024:
        _fail(f"{what}: too many")
    return tuple(_str(x, "node id", MAX_NODE_ID_LEN) for x in ids)


# --- snapshot chunks (streamed from a leader's store to a follower's staging area) ----------

SNAPSHOT_FORMAT = 1
SNAP_KV = 0
SNAP_FILES = 1
SNAP_SESSIONS = 2
"""Which state-machine database a snapshot record belongs to."""
SNAP_DBS = (SNAP_KV, SNAP_FILES, SNAP_SESSIONS)
MAX_SNAPSHOT_CHUNK = MAX_BIN_LEN
"""Largest chunk a receiver decodes (a chunk holds at least one record, up to a file chunk)."""

SnapshotRecord: TypeAlias = tuple[int, bytes, bytes]
"""(database, key, value): a stored record's payload (rkv.store's layouts, without the seal
an LMDB store keeps it under), copied as is between stores."""


def encode_snapshot_chunk(records: list[SnapshotRecord]) -> bytes:
    """One bounded piece of a snapshot stream: version byte, crc32, msgpack [[db, key, value]...]."""
    payload = pack([[d, k, v] for d, k, v in records])
    return _ENTRY_HDR.pack(SNAPSHOT_FORMAT, zlib.crc32(payload)) + payload


def decode_snapshot_chunk(data: bytes | bytearray | memoryview) -> list[SnapshotRecord]:
    """Inverse of encode_snapshot_chunk; ChecksumError on a crc mismatch, CodecError otherwise."""
    if len(data) < _ENTRY_HDR.size:
        _fail(f"snapshot chunk too short ({len(data)} bytes)")
    if len(data) > MAX_SNAPSHOT_CHUNK + _ENTRY_HDR.size:
        _fail(f"snapshot chunk of {len(data)} bytes is too large")
    version, crc = _ENTRY_HDR.unpack_from(data)
    if version != SNAPSHOT_FORMAT:
        _fail(f"unknown snapshot chunk format {version}")
    payload = memoryview(data)[_ENTRY_HDR.size :]
    if zlib.crc32(payload) != crc:
        raise ChecksumError("snapshot chunk checksum mismatch")
    out: list[SnapshotRecord] = []
    for rec in _list(unpack(payload), "snapshot chunk"):
        f = _list(rec, "snapshot record", 3)
        db = _int(f[0], "snapshot record db", 0, len(SNAP_DBS) - 1)
        key = _bytes(f[1], "snapshot record key", 511)
        if not key:
            _fail("snapshot record key: empty")
        out.append((db, key, _bytes(f[2], "snapshot record value", MAX_SNAPSHOT_CHUNK)))
    return out


# --- Raft messages ----------------------------------------------------------------------------

# Short keys: this map is built for every message on the hot path. "v", "t" and "id" are left
# free for the frame envelope of rkv.net, which may merge this map into its own.
_K_TYPE = "y"
_K_TO = "to"
_K_FROM = "fr"
_K_TERM = "tm"
_K_LOG_TERM = "lt"
_K_INDEX = "i"
_K_ENTRIES = "e"
_K_COMMIT = "c"
_K_REJECT = "r"
_K_HINT = "h"
_K_CONTEXT = "x"
_K_SNAPSHOT = "s"
_MSG_KEYS = frozenset(
    {
        _K_TYPE,
        _K_TO,
        _K_FROM,
        _K_TERM,
        _K_LOG_TERM,
        _K_INDEX,
        _K_ENTRIES,
        _K_COMMIT,
        _K_REJECT,
        _K_HINT,
        _K_CONTEXT,
        _K_SNAPSHOT,
    }
)
_MESSAGE_TYPES = {int(t): t for t in MessageType}
_NORMAL = EntryType.NORMAL


def message_to_wire(m: Message) -> dict[str, Any]:
    """A compact msgpack-ready map for `m`; fields at their default value are omitted."""
    d: dict[str, Any] = {_K_TYPE: int(m.type), _K_TO: m.to, _K_FROM: m.frm}
    if m.term:
        d[_K_TERM] = m.term
    if m.log_term:
        d[_K_LOG_TERM] = m.log_term
    if m.index:
        d[_K_INDEX] = m.index
    if m.entries:
        d[_K_ENTRIES] = [
            [e.term, e.index, e.data]
            if e.type is _NORMAL
            else [e.term, e.index, e.data, int(e.type)]
            for e in m.entries
        ]
    if m.commit:
        d[_K_COMMIT] = m.commit
    if m.reject:
        d[_K_REJECT] = True
    if m.reject_hint:
        d[_K_HINT] = m.reject_hint
    if m.context:
        d[_K_CONTEXT] = m.context
    if m.snapshot is not None:
        d[_K_SNAPSHOT] = [snapshot_meta_to_list(m.snapshot.meta), m.snapshot.data]
    return d


def _wire_entry(v: object) -> Entry:
    if type(v) is not list or len(v) not in (3, 4):
        _fail("message entry: expected [term, index, data(, type)]")
    return Entry(
        term=_int(v[0], "entry term"),
        index=_int(v[1], "entry index"),
        data=_bytes(v[2], "entry data", MAX_BIN_LEN),
        type=_entry_type(v[3]) if len(v) == 4 else _NORMAL,
    )


def message_from_wire(d: object) -> Message:
    """Validate a decoded map and build the Message. Keys this version does not know (for
    example the frame envelope's "v"/"t"/"id") are ignored; a known key with a value of the
    wrong type or range is a CodecError."""
    d = _dict(d, "message")
    raw_type = d.get(_K_TYPE)
    mtype = _MESSAGE_TYPES.get(raw_type) if type(raw_type) is int else None
    if mtype is None:
        _fail(f"message: missing or unknown type {raw_type!r}")
    if _K_TO not in d or _K_FROM not in d:
        _fail("message: missing to/fr")
    get = d.get
    raw_entries = get(_K_ENTRIES)
    entries: tuple[Entry, ...] = ()
    if raw_entries is not None:
        entries = tuple(_wire_entry(e) for e in _list(raw_entries, "message entries"))
    snapshot = None
    raw_snap = get(_K_SNAPSHOT)
    if raw_snap is not None:
        s = _list(raw_snap, "message snapshot", 2)
        snapshot = Snapshot(
            meta=snapshot_meta_from_list(s[0]), data=_bytes(s[1], "snapshot data", MAX_BIN_LEN)
        )
    return Message(
        type=mtype,
        to=_str(d[_K_TO], "message to", MAX_NODE_ID_LEN),
        frm=_str(d[_K_FROM], "message fr", MAX_NODE_ID_LEN),
        term=_int(get(_K_TERM, 0), "message term"),
        log_term=_int(get(_K_LOG_TERM, 0), "message log_term"),
        index=_int(get(_K_INDEX, 0), "message index"),
        entries=entries,
        commit=_int(get(_K_COMMIT, 0), "message commit"),
        reject=_bool(get(_K_REJECT, False), "message reject"),
        reject_hint=_int(get(_K_HINT, 0), "message reject_hint"),
        context=_bytes(get(_K_CONTEXT, b""), "message context", MAX_CONTEXT_LEN),
        snapshot=snapshot,
    )


# --- client commands --------------------------------------------------------------------------
# Constructors validate types and sizes (raising CodecError), so a bad command is refused where
# it is built (client side) and a bad decoded one can never reach the state machine.


def _check_key(key: object) -> None:
    # LMDB cannot store an empty key, so neither store accepts one.
    if not _bytes(key, "key", MAX_KEY_LEN):
        _fail("key: must not be empty")


@dataclass(frozen=True, slots=True)
class Put:
    key: bytes
    value: bytes

    def __post_init__(self) -> None:
        _check_key(self.key)
        _bytes(self.value, "value", MAX_VALUE_LEN)


@dataclass(frozen=True, slots=True)
class Delete:
    key: bytes

    def __post_init__(self) -> None:
        _check_key(self.key)


@dataclass(frozen=True, slots=True)
class Cas:
    """Set key to `new` if its current value is `expected` (None: only if the key is absent)."""

    key: bytes
    expected: bytes | None
    new: bytes

    def __post_init__(self) -> None:
        _check_key(self.key)
        if self.expected is not None:
            _bytes(self.expected, "expected", MAX_VALUE_LEN)
        _bytes(self.new, "new", MAX_VALUE_LEN)


@dataclass(frozen=True, slots=True)
class FileChunk:
    """Chunk number `seq` (0-based) of upload `upload_id` for file `key`; staged until commit."""

    key: bytes
    upload_id: bytes
    seq: int
    data: bytes

    def __post_init__(self) -> None:
        _check_key(self.key)
        _bytes(self.upload_id, "upload_id", MAX_ID_LEN)
        _int(self.seq, "chunk seq", 0, (1 << 32) - 1)
        _bytes(self.data, "chunk data", MAX_VALUE_LEN)


@dataclass(frozen=True, slots=True)
class FileCommit:
    """Make staged chunks 0..chunks-1 of `upload_id` the content of file `key` atomically."""

    key: bytes
    upload_id: bytes
    size: int
    chunks: int
    sha256: bytes

    def __post_init__(self) -> None:
        _check_key(self.key)
        _bytes(self.upload_id, "upload_id", MAX_ID_LEN)
        _int(self.size, "file size")
        _int(self.chunks, "chunk count", 0, 1 << 32)
        _bytes(self.sha256, "sha256", 32)
        if len(self.sha256) != 32:
            _fail("sha256: expected 32 bytes")


@dataclass(frozen=True, slots=True)
class FileDelete:
    key: bytes

    def __post_init__(self) -> None:
        _check_key(self.key)


@dataclass(frozen=True, slots=True)
class FileAbort:
    """Drop the staged chunks of upload `upload_id` if the last chunk staged for it is still
    the one at log index `last_index` (0: whichever it is). The leader proposes it for uploads
    left idle (NodeConfig.upload_ttl_seconds); a client for an upload it gave up."""

    upload_id: bytes
    last_index: int

    def __post_init__(self) -> None:
        _bytes(self.upload_id, "upload_id", MAX_ID_LEN)
        _int(self.last_index, "last index")


Txn = _txn.Txn
"""A multi-key transaction (rkv.txn): compares, then the success or the failure ops."""

MAX_LEASE_ID = (1 << 63) - 1
"""Lease ids are 1..2^63-1 (they fit a signed 64-bit integer, as etcd's, and JSON clients)."""
MAX_LEASE_TTL_MS = 1 << 40
"""About 34 years."""
MAX_LEASE_BATCH = 1024
"""Most leases one checkpoint or expire command names."""


def _lease_id(v: object, what: str = "lease id") -> int:
    return _int(v, what, 1, MAX_LEASE_ID)


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    """Create lease `lease_id` (0: the entry's index is its id) with a TTL of `ttl_ms`."""

    lease_id: int
    ttl_ms: int

    def __post_init__(self) -> None:
        _int(self.lease_id, "lease id", 0, MAX_LEASE_ID)
        _int(self.ttl_ms, "lease ttl", 1, MAX_LEASE_TTL_MS)


@dataclass(frozen=True, slots=True)
class LeaseRenew:
    """A keep-alive: the lease's remaining TTL is its full TTL again, from this entry."""

    lease_id: int

    def __post_init__(self) -> None:
        _lease_id(self.lease_id)


@dataclass(frozen=True, slots=True)
class LeaseRevoke:
    """Delete the lease and every key attached to it (at this entry's revision)."""

    lease_id: int

    def __post_init__(self) -> None:
        _lease_id(self.lease_id)


@dataclass(frozen=True, slots=True)
class LeaseCheckpoint:
    """Leader-internal: (lease id, gen, remaining ms) of leases whose remaining TTL fell."""

    items: tuple[tuple[int, int, int], ...]

    def __post_init__(self) -> None:
        items = _list(list(self.items) if type(self.items) is tuple else self.items, "items")
        if len(items) > MAX_LEASE_BATCH:
            _fail(f"lease checkpoint: {len(items)} items > {MAX_LEASE_BATCH}")
        out = []
        for it in items:
            f = _list(list(it) if type(it) is tuple else it, "lease checkpoint item", 3)
            out.append((_lease_id(f[0]), _int(f[1], "lease gen"), _int(f[2], "remaining ms")))
        object.__setattr__(self, "items", tuple(out))


@dataclass(frozen=True, slots=True)
class LeaseExpire:
    """Leader-internal: the leases (id, gen) whose deadline passed on the leader of `term`;
    applied only in an entry of that term, to leases still of that gen."""

    term: int
    items: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        _int(self.term, "term")
        items = _list(list(self.items) if type(self.items) is tuple else self.items, "items")
        if len(items) > MAX_LEASE_BATCH:
            _fail(f"lease expire: {len(items)} items > {MAX_LEASE_BATCH}")
        out = []
        for it in items:
            f = _list(list(it) if type(it) is tuple else it, "lease expire item", 2)
            out.append((_lease_id(f[0]), _int(f[1], "lease gen")))
        object.__setattr__(self, "items", tuple(out))


@dataclass(frozen=True, slots=True)
class PutLease:
    """Put, attaching the key to lease `lease_id` (which must exist)."""

    key: bytes
    value: bytes
    lease_id: int

    def __post_init__(self) -> None:
        _check_key(self.key)
        _bytes(self.value, "value", MAX_VALUE_LEN)
        _lease_id(self.lease_id)


LeaseCommand: TypeAlias = LeaseGrant | LeaseRenew | LeaseRevoke | LeaseCheckpoint | LeaseExpire

Command: TypeAlias = (
    Put
    | Delete
    | Cas
    | FileChunk
    | FileCommit
    | FileDelete
    | FileAbort
    | Txn
    | LeaseGrant
    | LeaseRenew
    | LeaseRevoke
    | LeaseCheckpoint
    | LeaseExpire
    | PutLease
)


@dataclass(frozen=True, slots=True)
class Request:
    """A client command with its session: seq 0 = no session (no duplicate detection)."""

    client_id: bytes
    seq: int
    command: Command

    def __post_init__(self) -> None:
        _bytes(self.client_id, "client_id", MAX_ID_LEN)
        _int(self.seq, "request seq")
        if not isinstance(self.command, _COMMAND_TAGS):
            _fail(f"request command: unknown type {type(self.command).__name__}")


REQUEST_FORMAT = 1
_TAG_PUT, _TAG_DELETE, _TAG_CAS, _TAG_CHUNK, _TAG_COMMIT, _TAG_FDELETE = 1, 2, 3, 4, 5, 6
_TAG_FABORT = 7
_TAG_TXN = 8
_TAG_LGRANT, _TAG_LRENEW, _TAG_LREVOKE, _TAG_LCHECKPOINT, _TAG_LEXPIRE = 9, 10, 11, 12, 13
_TAG_PUT_LEASE = 14
_COMMAND_TAGS = (
    Put,
    Delete,
    Cas,
    FileChunk,
    FileCommit,
    FileDelete,
    FileAbort,
    Txn,
    LeaseGrant,
    LeaseRenew,
    LeaseRevoke,
    LeaseCheckpoint,
    LeaseExpire,
    PutLease,
)


def _command_fields(c: Command) -> list[Any]:
    if isinstance(c, Put):
        return [_TAG_PUT, c.key, c.value]
    if isinstance(c, Delete):
        return [_TAG_DELETE, c.key]
    if isinstance(c, Cas):
        return [_TAG_CAS, c.key, c.expected, c.new]
    if isinstance(c, FileChunk):
        return [_TAG_CHUNK, c.key, c.upload_id, c.seq, c.data]
    if isinstance(c, FileCommit):
        return [_TAG_COMMIT, c.key, c.upload_id, c.size, c.chunks, c.sha256]
    if isinstance(c, FileDelete):
        return [_TAG_FDELETE, c.key]
    if isinstance(c, FileAbort):
        return [_TAG_FABORT, c.upload_id, c.last_index]
    if isinstance(c, Txn):
        return [_TAG_TXN, *c.to_wire()]
    if isinstance(c, LeaseGrant):
        return [_TAG_LGRANT, c.lease_id, c.ttl_ms]
    if isinstance(c, LeaseRenew):
        return [_TAG_LRENEW, c.lease_id]
    if isinstance(c, LeaseRevoke):
        return [_TAG_LREVOKE, c.lease_id]
    if isinstance(c, LeaseCheckpoint):
        return [_TAG_LCHECKPOINT, [list(it) for it in c.items]]
    if isinstance(c, LeaseExpire):
        return [_TAG_LEXPIRE, c.term, [list(it) for it in c.items]]
    if isinstance(c, PutLease):
        return [_TAG_PUT_LEASE, c.key, c.value, c.lease_id]
    _fail(f"unknown command {type(c).__name__}")


_ARITY = {
    _TAG_PUT: 2,
    _TAG_DELETE: 1,
    _TAG_CAS: 3,
    _TAG_CHUNK: 4,
    _TAG_COMMIT: 5,
    _TAG_FDELETE: 1,
    _TAG_FABORT: 2,
    _TAG_TXN: 3,
    _TAG_LGRANT: 2,
    _TAG_LRENEW: 1,
    _TAG_LREVOKE: 1,
    _TAG_LCHECKPOINT: 1,
    _TAG_LEXPIRE: 2,
    _TAG_PUT_LEASE: 3,
}


def _command_from_fields(tag: object, f: list[Any]) -> Command:
    if type(tag) is int and tag > max(_ARITY):
        raise UnknownCommand(f"request: command tag {tag} is not known to this rkv")
    if type(tag) is not int or tag not in _ARITY:
        _fail(f"request: unknown command tag {tag!r}")
    if len(f) != _ARITY[tag]:
        _fail(f"request: command {tag} expects {_ARITY[tag]} fields, got {len(f)}")
    # The constructors check every field's type and size and raise CodecError.
    try:
        if tag == _TAG_PUT:
            return Put(f[0], f[1])
        if tag == _TAG_DELETE:
            return Delete(f[0])
        if tag == _TAG_CAS:
            return Cas(f[0], f[1], f[2])
        if tag == _TAG_CHUNK:
            return FileChunk(f[0], f[1], f[2], f[3])
        if tag == _TAG_COMMIT:
            return FileCommit(f[0], f[1], f[2], f[3], f[4])
        if tag == _TAG_FABORT:
            return FileAbort(f[0], f[1])
        if tag == _TAG_TXN:
            return Txn.from_wire(f[0], f[1], f[2])
        if tag == _TAG_LGRANT:
            return LeaseGrant(f[0], f[1])
        if tag == _TAG_LRENEW:
            return LeaseRenew(f[0])
        if tag == _TAG_LREVOKE:
            return LeaseRevoke(f[0])
        if tag == _TAG_LCHECKPOINT:
            return LeaseCheckpoint(f[0])
        if tag == _TAG_LEXPIRE:
            return LeaseExpire(f[0], f[1])
        if tag == _TAG_PUT_LEASE:
            return PutLease(f[0], f[1], f[2])
        return FileDelete(f[0])
    except CodecError:
        raise
    except _txn.TxnFromNewer as e:
        # an op this rkv does not know: applying the rest would diverge from the upgraded
        raise UnknownCommand(f"request: {e}") from e
    except _txn.TxnError as e:
        raise CodecError(f"request: bad txn: {e}") from e
    except (TypeError, ValueError) as e:  # pragma: no cover - constructors raise CodecError
        raise CodecError(f"request: bad command fields: {e}") from e


def encode_request(r: Request) -> bytes:
    return pack([REQUEST_FORMAT, r.client_id, r.seq, *_command_fields(r.command)])


def decode_request(data: bytes | bytearray | memoryview) -> Request:
    f = _list(unpack(data), "request")
    if len(f) < 4:
        _fail("request: too few fields")
    if type(f[0]) is int and f[0] > REQUEST_FORMAT:
        raise UnknownCommand(f"request: format {f[0]} is not known to this rkv")
    if f[0] != REQUEST_FORMAT or type(f[0]) is not int:
        _fail(f"request: unknown format {f[0]!r}")
    command = _command_from_fields(f[3], f[4:])
    return Request(client_id=f[1], seq=f[2], command=command)
