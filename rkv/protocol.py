"""The client protocol's requests and common replies, defined once (docs/contracts.md).

Owns: one frozen dataclass per request kind a node accepts from a client (`t` of the frame:
the writes, the reads, and the admin requests), each with `to_frame()` giving the wire map
the client sends, and `decode_request(frame)`, the one place a received request is checked
field by field; typed forms of the common ok replies (`to_frame` / `from_frame`); the limits
of the protocol that are not the state machine's (scan limits), the field a forwarding
follower marks a request with (`FWD`), and which kinds only the leader answers
(`LEADER_KINDS`). Must not: import anything from rkv but rkv.codec (the limits of keys,
values and ids) and rkv.errors, do I/O, or know what a request does.

Wire form: a request is a msgpack map `{"t": kind, field: value, ...}`; the RPC layer adds
`"id"`. Fields the request does not define are ignored (the RPC layer's `id`, a newer
client's optional fields). The writes carry their session: `c` (client id) and `s` (seq >= 1);
a request a follower forwards to the leader (rkv.forward) carries `"fwd": true`, and only the
kinds in LEADER_KINDS define it. Optional fields have a default when missing (`stale`: false,
`p`: empty, `limit`: DEFAULT_SCAN_LIMIT, `exp` and `to`: nil, `drop_to` / `drop_from`: empty).

Errors: a request that does not fit raises `ProtocolError`, a `BadRequest` (code
`bad_request`) naming the field and what was wrong ("field 'k' must be bytes of 1..400
bytes, got int"); the constructors check the same way, so a bad request is refused where it
is built. A reply that does not fit raises `BadReply` (code `internal`: the node answered
something this client does not understand).

Replies: the ok replies with fixed fields are typed here (OkReply, ValueReply, ExistedReply,
SwappedReply, AbortedReply, ScanReply, FileMetaReply, DataReply, StatusReply). The others are
free-form maps and stay so: `members` / `member` (membership and per-member progress, read
leniently by the client), `check` (rkv.compare's verdicts), `state_hashes` (rkv.compare's
`pairs_frame`), `backup_begin` (its manifest is rkv.backup_file's), `transfer`, `repair` and
`fault`; error replies are rkv.errors' (`error_frame` / `from_error_frame`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeAlias

from rkv.codec import (
    MAX_ID_LEN,
    MAX_KEY_LEN,
    MAX_NODE_ID_LEN,
    MAX_U64,
    MAX_VALUE_LEN,
    Cas,
    Command,
    Delete,
    FileAbort,
    FileChunk,
    FileCommit,
    FileDelete,
    Put,
)
from rkv.errors import BadRequest, InternalError

Frame = dict[str, Any]

MAX_SCAN_LIMIT = 10_000
"""Most (key, value) pairs one scan returns."""
DEFAULT_SCAN_LIMIT = 1000
"""A scan's limit when the request does not give one."""
MAX_CHUNK_NO = (1 << 32) - 1
"""Highest file chunk number (rkv.codec.FileChunk)."""
MAX_CHUNKS = 1 << 32
"""Most chunks of one file (rkv.codec.FileCommit)."""
SHA256_LEN = 32
MAX_BACKUP_TOKEN_LEN = 64
FWD = "fwd"
"""The field a follower marks a forwarded request with (rkv.forward): the node that takes it
never forwards it again."""
MEMBER_OPS = ("add", "promote", "remove")


class ProtocolError(BadRequest):
    """A request frame that does not fit the protocol: `field` names the field (None: the
    frame as a whole)."""

    def __init__(self, msg: str, field: str | None = None) -> None:
        super().__init__(msg)
        self.field = field


class BadReply(InternalError):
    """A reply frame that does not fit the protocol (the node's answer is not understood)."""

    def __init__(self, msg: str, field: str | None = None) -> None:
        super().__init__(msg)
        self.field = field


# --- field checks -----------------------------------------------------------------------------
# A check takes the value of a field and its wire name, and returns the value to keep (lists
# become tuples) or raises ProtocolError saying what the field must be and what it got.

Check = Callable[[object, str], Any]


def _got(v: object) -> str:
    """What a value of the right type but out of bounds is, for an error message."""
    if type(v) is bytes:
        return f"{len(v)} bytes"
    if type(v) is str:
        return f"string of {len(v)} characters"
    if type(v) is int:
        return str(v) if abs(v) < 10**30 else "a huge integer"
    return _type_name(v)


def _fail(name: str, must: str, v: object) -> ProtocolError:
    return ProtocolError(f"field {name!r} must be {must}, got {_got(v)}", name)


def _type_name(v: object) -> str:
    return "nil" if v is None else type(v).__name__


def _bytes(lo: int, hi: int) -> Check:
    must = (
        f"bytes of exactly {hi} bytes"
        if lo == hi
        else f"bytes of at most {hi} bytes"
        if lo == 0
        else f"bytes of {lo}..{hi} bytes"
    )

    def check(v: object, name: str) -> bytes:
        if type(v) is not bytes:
            raise ProtocolError(f"field {name!r} must be {must}, got {_type_name(v)}", name)
        if not lo <= len(v) <= hi:
            raise _fail(name, must, v)
        return v

    return check


def _int(lo: int, hi: int) -> Check:
    must = f"an integer in {lo}..{hi}"

    def check(v: object, name: str) -> int:
        if type(v) is not int:
            raise ProtocolError(f"field {name!r} must be {must}, got {_type_name(v)}", name)
        if not lo <= v <= hi:
            raise _fail(name, must, v)
        return v

    return check


def _bool(v: object, name: str) -> bool:
    if type(v) is not bool:
        raise ProtocolError(f"field {name!r} must be a bool, got {_type_name(v)}", name)
    return v


def _str(lo: int, hi: int) -> Check:
    must = f"a string of {lo}..{hi} characters"

    def check(v: object, name: str) -> str:
        if type(v) is not str:
            raise ProtocolError(f"field {name!r} must be {must}, got {_type_name(v)}", name)
        if not lo <= len(v) <= hi:
            raise _fail(name, must, v)
        return v

    return check


def _optional(inner: Check) -> Check:
    def check(v: object, name: str) -> Any:
        if v is None:
            return None
        try:
            return inner(v, name)
        except ProtocolError as e:
            raise ProtocolError(e.msg.replace(" must be ", " must be nil or ", 1), name) from None

    return check


def _nil_is(default: Any, inner: Check) -> Check:
    """`inner`, with nil standing for `default` (as if the field were missing)."""

    def check(v: object, name: str) -> Any:
        return default if v is None else inner(v, name)

    return check


def _node_ids(v: object, name: str) -> tuple[str, ...]:
    must = f"a list of node ids (strings of 1..{MAX_NODE_ID_LEN} characters)"
    if type(v) is not list and type(v) is not tuple:
        raise ProtocolError(f"field {name!r} must be {must}, got {_type_name(v)}", name)
    assert isinstance(v, list | tuple)
    for i, p in enumerate(v):
        if type(p) is not str or not 1 <= len(p) <= MAX_NODE_ID_LEN:
            got = _got(p) if type(p) is str else _type_name(p)
            raise ProtocolError(f"field {name!r} must be {must}, got item {i}: {got}", name)
    return tuple(v)


def _member_op(v: object, name: str) -> str:
    if type(v) is not str or v not in MEMBER_OPS:
        shown = repr(v)[:40] if isinstance(v, str) else _type_name(v)
        raise ProtocolError(
            f"field {name!r} must be one of {', '.join(MEMBER_OPS)}, got {shown}", name
        )
    return v


_KEY = _bytes(1, MAX_KEY_LEN)
_VALUE = _bytes(0, MAX_VALUE_LEN)
_ID = _bytes(0, MAX_ID_LEN)
_SEQ = _int(1, MAX_U64)
_U64 = _int(0, MAX_U64)
_NODE_ID = _str(1, MAX_NODE_ID_LEN)

_MISSING: Any = object()
"""A required field the frame lacks (decode_request): the constructor says so."""
_NEVER: Any = object()


def _f(
    wire: str, check: Check, *, absent: Any = _MISSING, omit: Any = _NEVER, default: Any = _NEVER
) -> Any:
    """A request field: its wire name, its check, its value when the frame lacks it (`absent`;
    required if not given), the value `to_frame` leaves out (`omit`), and the constructor's
    default."""
    meta = {"wire": wire, "check": check, "absent": absent, "omit": omit}
    if default is _NEVER:
        return field(metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True, slots=True)
class _Spec:
    attr: str
    wire: str
    check: Check
    absent: Any
    omit: Any


_SPECS: dict[type, tuple[_Spec, ...]] = {}


class _Request:
    """What every request class shares: `T` (its kind), `to_frame`, and its fields checked on
    construction."""

    __slots__ = ()
    T: ClassVar[str]
    LEADER: ClassVar[bool] = False
    """Only the leader answers it: a follower forwards it (rkv.forward)."""

    def __post_init__(self) -> None:
        # The one check of every field: decode_request constructs without checking first.
        for s in _SPECS[type(self)]:
            v = getattr(self, s.attr)
            if v is _MISSING:
                raise ProtocolError(f"field {s.wire!r} is missing from a {self.T} request", s.wire)
            kept = s.check(v, s.wire)
            if kept is not v:  # nil for its default, a list of node ids as a tuple
                object.__setattr__(self, s.attr, kept)

    def to_frame(self) -> Frame:
        """The wire map of this request (without the RPC layer's `id`)."""
        frame: Frame = {"t": self.T}
        for s in _SPECS[type(self)]:
            v = getattr(self, s.attr)
            if s.omit is not _NEVER and v == s.omit:
                continue
            frame[s.wire] = list(v) if type(v) is tuple else v
        return frame


class _Write(_Request):
    """A write: proposed to the log by the leader, with its session (`c`, `s`)."""

    __slots__ = ()
    LEADER = True

    def command(self) -> Command:
        """The state machine command this write proposes (rkv.codec)."""
        raise NotImplementedError


# --- the requests -----------------------------------------------------------------------------
# Fields are in wire order (the order the client always sent them in).


@dataclass(frozen=True, slots=True)
class PutRequest(_Write):
    T = "put"
    key: bytes = _f("k", _KEY)
    value: bytes = _f("val", _VALUE)
    client_id: bytes = _f("c", _ID)
    seq: int = _f("s", _SEQ)
    fwd: bool = _f(FWD, _bool, absent=False, omit=False, default=False)

    def command(self) -> Put:
        return Put(self.key, self.value)


@dataclass(frozen=True, slots=True)
class DeleteRequest(_Write):
    T = "delete"
    key: bytes = _f("k", _KEY)
    client_id: bytes = _f("c", _ID)
    seq: int = _f("s", _SEQ)
    fwd: bool = _f(FWD, _bool, absent=False, omit=False, default=False)

    def command(self) -> Delete:
        return Delete(self.key)


@dataclass(frozen=True, slots=True)
class CasRequest(_Write):
    """Set `key` to `value` if its value is `expected` (None: if it is absent)."""

    T = "cas"
    key: bytes = _f("k", _KEY)
    expected: bytes | None = _f("exp", _optional(_VALUE), absent=None)
    value: bytes = _f("val", _VALUE)
    client_id: bytes = _f("c", _ID)
    seq: int = _f("s", _SEQ)
    fwd: bool = _f(FWD, _bool, absent=False, omit=False, default=False)

    def command(self) -> Cas:
        return Cas(self.key, self.expected, self.value)


@dataclass(frozen=True, slots=True)
class FileChunkRequest(_Write):
    """Chunk `n` (0-based) of upload `upload_id` of file `key`."""

    T = "file_chunk"
    key: bytes = _f("k", _KEY)
    upload_id: bytes = _f("u", _ID)
    n: int = _f("n", _int(0, MAX_CHUNK_NO))
    data: bytes = _f("data", _VALUE)
    client_id: bytes = _f("c", _ID)
    seq: int = _f("s", _SEQ)
    fwd: bool = _f(FWD, _bool, absent=False, omit=False, default=False)

    def command(self) -> FileChunk:
        return FileChunk(self.key, self.upload_id, self.n, self.data)


@dataclass(frozen=True, slots=True)
class FileCommitRequest(_Write):
    """Make chunks 0..chunks-1 of upload `upload_id` the file `key` (size bytes, SHA-256)."""

    T = "file_commit"
    key: bytes = _f("k", _KEY)
    upload_id: bytes = _f("u", _ID)
    size: int = _f("size", _U64)
    chunks: int = _f("chunks", _int(0, MAX_CHUNKS))
    sha: bytes = _f("sha", _bytes(SHA256_LEN, SHA256_LEN))
    client_id: bytes = _f("c", _ID)
    seq: int = _f("s", _SEQ)
    fwd: bool = _f(FWD, _bool, absent=False, omit=False, default=False)

    def command(self) -> FileCommit:
        return FileCommit(self.key, self.upload_id, self.size, self.chunks, self.sha)


@dataclass(frozen=True, slots=True)
class FileAbortRequest(_Write):
    """Drop the staged chunks of upload `upload_id` (a client's own abort: any last index)."""

    T = "file_abort"
    upload_id: bytes = _f("u", _ID)
    client_id: bytes = _f("c", _ID)
    seq: int = _f("s", _SEQ)
    fwd: bool = _f(FWD, _bool, absent=False, omit=False, default=False)

    def command(self) -> FileAbort:
        return FileAbort(self.upload_id, 0)


@dataclass(frozen=True, slots=True)
class FileDeleteRequest(_Write):
    T = "file_delete"
    key: bytes = _f("k", _KEY)
    client_id: bytes = _f("c", _ID)
    seq: int = _f("s", _SEQ)
    fwd: bool = _f(FWD, _bool, absent=False, omit=False, default=False)

    def command(self) -> FileDelete:
        return FileDelete(self.key)


@dataclass(frozen=True, slots=True)
class GetRequest(_Request):
    """The value of `key`; linearizable unless `stale` (the node's local copy)."""

    T = "get"
    key: bytes = _f("k", _KEY)
    stale: bool = _f("stale", _bool, absent=False, default=False)


@dataclass(frozen=True, slots=True)
class ScanRequest(_Request):
    """Up to `limit` pairs whose key starts with `prefix` (`p`; nil or missing: all keys)."""

    T = "scan"
    prefix: bytes = _f("p", _nil_is(b"", _bytes(0, MAX_KEY_LEN)), absent=b"", default=b"")
    limit: int = _f(
        "limit", _int(1, MAX_SCAN_LIMIT), absent=DEFAULT_SCAN_LIMIT, default=DEFAULT_SCAN_LIMIT
    )
    stale: bool = _f("stale", _bool, absent=False, default=False)


@dataclass(frozen=True, slots=True)
class FileMetaRequest(_Request):
    T = "file_meta"
    key: bytes = _f("k", _KEY)
    stale: bool = _f("stale", _bool, absent=False, default=False)


@dataclass(frozen=True, slots=True)
class FileReadRequest(_Request):
    """Chunk `n` of file `key`, if the file's SHA-256 is still `sha` (else: changed)."""

    T = "file_read"
    key: bytes = _f("k", _KEY)
    n: int = _f("n", _U64)
    sha: bytes = _f("sha", _bytes(SHA256_LEN, SHA256_LEN))


@dataclass(frozen=True, slots=True)
class StatusRequest(_Request):
    T = "status"


@dataclass(frozen=True, slots=True)
class TransferRequest(_Request):
    """Hand leadership to node `to` (None: the most caught-up follower)."""

    T = "transfer"
    LEADER = True
    to: str | None = _f("to", _optional(_NODE_ID), absent=None, default=None)
    fwd: bool = _f(FWD, _bool, absent=False, omit=False, default=False)


@dataclass(frozen=True, slots=True)
class MembersRequest(_Request):
    T = "members"
    LEADER = True
    fwd: bool = _f(FWD, _bool, absent=False, omit=False, default=False)


@dataclass(frozen=True, slots=True)
class MemberRequest(_Request):
    """A membership change: `op` add (as a learner) / promote / remove, of member `node`."""

    T = "member"
    LEADER = True
    op: str = _f("op", _member_op)
    node: str = _f("node", _NODE_ID)
    fwd: bool = _f(FWD, _bool, absent=False, omit=False, default=False)


@dataclass(frozen=True, slots=True)
class BackupBeginRequest(_Request):
    T = "backup_begin"


@dataclass(frozen=True, slots=True)
class BackupReadRequest(_Request):
    """`length` bytes at offset `off` of backup `token`'s copy."""

    T = "backup_read"
    token: bytes = _f("b", _bytes(0, MAX_BACKUP_TOKEN_LEN))
    off: int = _f("off", _U64)
    length: int = _f("len", _U64)


@dataclass(frozen=True, slots=True)
class BackupEndRequest(_Request):
    T = "backup_end"
    token: bytes = _f("b", _bytes(0, MAX_BACKUP_TOKEN_LEN))


@dataclass(frozen=True, slots=True)
class RepairRequest(_Request):
    T = "repair"


@dataclass(frozen=True, slots=True)
class StateHashesRequest(_Request):
    T = "state_hashes"


@dataclass(frozen=True, slots=True)
class CheckRequest(_Request):
    T = "check"


@dataclass(frozen=True, slots=True)
class FaultRequest(_Request):
    """Drop Raft traffic to / from these peers (replacing both sets; empty heals). Tests only:
    refused unless the node runs with fault injection."""

    T = "fault"
    drop_to: tuple[str, ...] = _f("drop_to", _node_ids, absent=(), default=())
    drop_from: tuple[str, ...] = _f("drop_from", _node_ids, absent=(), default=())


WriteRequest: TypeAlias = (
    PutRequest
    | DeleteRequest
    | CasRequest
    | FileChunkRequest
    | FileCommitRequest
    | FileAbortRequest
    | FileDeleteRequest
)
ClientRequest: TypeAlias = (
    WriteRequest
    | GetRequest
    | ScanRequest
    | FileMetaRequest
    | FileReadRequest
    | StatusRequest
    | TransferRequest
    | MembersRequest
    | MemberRequest
    | BackupBeginRequest
    | BackupReadRequest
    | BackupEndRequest
    | RepairRequest
    | StateHashesRequest
    | CheckRequest
    | FaultRequest
)
"""Any client request (rkv.codec.Request is a different thing: a command with its session, as
the log stores it)."""

REQUEST_TYPES: dict[str, type[ClientRequest]] = {
    cls.T: cls
    for cls in (
        PutRequest,
        DeleteRequest,
        CasRequest,
        FileChunkRequest,
        FileCommitRequest,
        FileAbortRequest,
        FileDeleteRequest,
        GetRequest,
        ScanRequest,
        FileMetaRequest,
        FileReadRequest,
        StatusRequest,
        TransferRequest,
        MembersRequest,
        MemberRequest,
        BackupBeginRequest,
        BackupReadRequest,
        BackupEndRequest,
        RepairRequest,
        StateHashesRequest,
        CheckRequest,
        FaultRequest,
    )
}
"""Every request kind by its `t`."""

WRITE_KINDS = frozenset(t for t, cls in REQUEST_TYPES.items() if issubclass(cls, _Write))
LEADER_KINDS = frozenset(t for t, cls in REQUEST_TYPES.items() if cls.LEADER)
"""The kinds only the leader answers (a follower forwards them, marked FWD): the writes, the
membership list and changes, leadership transfer."""

for _cls in REQUEST_TYPES.values():
    _SPECS[_cls] = tuple(
        _Spec(
            f.name,
            f.metadata["wire"],
            f.metadata["check"],
            f.metadata["absent"],
            f.metadata["omit"],
        )
        for f in dataclasses.fields(_cls)
    )
    assert all(s.wire != "t" for s in _SPECS[_cls]), _cls
    assert (FWD in {s.wire for s in _SPECS[_cls]}) == _cls.LEADER, _cls
del _cls


def decode_request(frame: Mapping[str, Any]) -> ClientRequest:
    """The request `frame` (as received: the RPC layer's `id` and unknown fields are ignored)
    stands for; ProtocolError (a BadRequest) naming the field that does not fit."""
    if not isinstance(frame, Mapping):
        raise ProtocolError(f"a request must be a map, got {_type_name(frame)}")
    t = frame.get("t")
    if type(t) is not str:
        raise ProtocolError(
            f"field 't' must be a string naming the request type, "
            f"got {'missing' if 't' not in frame else _type_name(t)}",
            "t",
        )
    cls = REQUEST_TYPES.get(t)
    if cls is None:
        raise ProtocolError(f"unknown request type {t[:100]!r}", "t")
    # the constructor checks every field, in order
    return cls(**{s.attr: frame.get(s.wire, s.absent) for s in _SPECS[cls]})


# --- replies ----------------------------------------------------------------------------------


def _ok(frame: Mapping[str, Any], what: str) -> None:
    if not isinstance(frame, Mapping) or frame.get("t") != "ok":
        got = frame.get("t") if isinstance(frame, Mapping) else _type_name(frame)
        raise BadReply(f"{what} reply: expected an ok frame, got {got!r}")


def _reply_field(frame: Mapping[str, Any], name: str, check: Check, what: str) -> Any:
    if name not in frame:
        raise BadReply(f"{what} reply: field {name!r} is missing", name)
    try:
        return check(frame[name], name)
    except ProtocolError as e:
        raise BadReply(f"{what} reply: {e.msg}", name) from None


@dataclass(frozen=True, slots=True)
class OkReply:
    """The answer without fields: put, file_chunk, file_commit."""

    def to_frame(self) -> Frame:
        return {"t": "ok"}

    @classmethod
    def from_frame(cls, frame: Mapping[str, Any]) -> OkReply:
        _ok(frame, "ok")
        return cls()


@dataclass(frozen=True, slots=True)
class ValueReply:
    """A get's answer: the value, None if the key is absent."""

    value: bytes | None

    def to_frame(self) -> Frame:
        return {"t": "ok", "val": self.value}

    @classmethod
    def from_frame(cls, frame: Mapping[str, Any]) -> ValueReply:
        _ok(frame, "get")
        return cls(_reply_field(frame, "val", _optional(_bytes(0, MAX_VALUE_LEN)), "get"))


@dataclass(frozen=True, slots=True)
class ExistedReply:
    """A delete's or file_delete's answer."""

    existed: bool

    def to_frame(self) -> Frame:
        return {"t": "ok", "existed": self.existed}

    @classmethod
    def from_frame(cls, frame: Mapping[str, Any]) -> ExistedReply:
        _ok(frame, "delete")
        return cls(_reply_field(frame, "existed", _bool, "delete"))


@dataclass(frozen=True, slots=True)
class SwappedReply:
    """A cas's answer."""

    swapped: bool

    def to_frame(self) -> Frame:
        return {"t": "ok", "swapped": self.swapped}

    @classmethod
    def from_frame(cls, frame: Mapping[str, Any]) -> SwappedReply:
        _ok(frame, "cas")
        return cls(_reply_field(frame, "swapped", _bool, "cas"))


@dataclass(frozen=True, slots=True)
class AbortedReply:
    """A file_abort's answer: whether staged chunks were dropped."""

    aborted: bool

    def to_frame(self) -> Frame:
        return {"t": "ok", "aborted": self.aborted}

    @classmethod
    def from_frame(cls, frame: Mapping[str, Any]) -> AbortedReply:
        _ok(frame, "file_abort")
        return cls(_reply_field(frame, "aborted", _bool, "file_abort"))


@dataclass(frozen=True, slots=True)
class ScanReply:
    """A scan's answer: (key, value) pairs in key order."""

    items: tuple[tuple[bytes, bytes], ...]

    def to_frame(self) -> Frame:
        return {"t": "ok", "items": [[k, v] for k, v in self.items]}

    @classmethod
    def from_frame(cls, frame: Mapping[str, Any]) -> ScanReply:
        _ok(frame, "scan")
        raw = frame.get("items")
        if type(raw) is not list:
            raise BadReply(f"scan reply: field 'items' must be a list, got {_type_name(raw)}")
        items = []
        for i, p in enumerate(raw):
            if (
                type(p) is not list
                or len(p) != 2
                or type(p[0]) is not bytes
                or type(p[1]) is not bytes
            ):
                raise BadReply(f"scan reply: item {i} of 'items' must be [key bytes, value bytes]")
            items.append((p[0], p[1]))
        return cls(tuple(items))


@dataclass(frozen=True, slots=True)
class FileMetaReply:
    """A file_meta's answer: the file's size, chunk count and SHA-256."""

    size: int
    chunks: int
    sha: bytes

    def to_frame(self) -> Frame:
        return {"t": "ok", "size": self.size, "chunks": self.chunks, "sha": self.sha}

    @classmethod
    def from_frame(cls, frame: Mapping[str, Any]) -> FileMetaReply:
        _ok(frame, "file_meta")
        return cls(
            _reply_field(frame, "size", _U64, "file_meta"),
            _reply_field(frame, "chunks", _int(0, MAX_CHUNKS), "file_meta"),
            _reply_field(frame, "sha", _bytes(SHA256_LEN, SHA256_LEN), "file_meta"),
        )


@dataclass(frozen=True, slots=True)
class DataReply:
    """A file_read's or backup_read's answer: the bytes read."""

    data: bytes

    def to_frame(self) -> Frame:
        return {"t": "ok", "data": self.data}

    @classmethod
    def from_frame(cls, frame: Mapping[str, Any]) -> DataReply:
        _ok(frame, "read")
        return cls(_reply_field(frame, "data", _bytes(0, MAX_U64), "read"))


_STATUS_CHECKS: dict[str, Check] = {
    "node": _str(0, MAX_NODE_ID_LEN),
    "addr": _str(0, MAX_NODE_ID_LEN),
    "cluster": _str(0, MAX_NODE_ID_LEN),
    "role": _str(0, 64),
    "term": _U64,
    "leader": _optional(_str(0, MAX_NODE_ID_LEN)),
    "leader_addr": _optional(_str(0, MAX_NODE_ID_LEN)),
    "commit": _U64,
    "applied": _U64,
    "last_index": _U64,
    "peers": _node_ids,
    "voters": _node_ids,
    "learners": _node_ids,
    "recovering": _bool,
    "degraded": _optional(_str(0, 1 << 16)),
}


@dataclass(frozen=True, slots=True)
class StatusReply:
    """A status answer: the node's own view. `node` is its id (the frame's `id` is the
    request's). Every field may be missing (None: a node that does not send it) but must have
    its type when present (`leader`, `leader_addr` and `degraded` may be nil)."""

    node: str | None = None
    addr: str | None = None
    cluster: str | None = None
    role: str | None = None
    term: int | None = None
    leader: str | None = None
    leader_addr: str | None = None
    commit: int | None = None
    applied: int | None = None
    last_index: int | None = None
    peers: tuple[str, ...] | None = None
    voters: tuple[str, ...] | None = None
    learners: tuple[str, ...] | None = None
    recovering: bool | None = None
    degraded: str | None = None

    def to_frame(self) -> Frame:
        frame: Frame = {"t": "ok"}
        for name in _STATUS_CHECKS:
            v = getattr(self, name)
            frame[name] = list(v) if type(v) is tuple else v
        return frame

    @classmethod
    def from_frame(cls, frame: Mapping[str, Any]) -> StatusReply:
        _ok(frame, "status")
        kwargs = {
            name: _reply_field(frame, name, check, "status")
            for name, check in _STATUS_CHECKS.items()
            if frame.get(name) is not None
        }
        return cls(**kwargs)


__all__ = [
    "DEFAULT_SCAN_LIMIT",
    "FWD",
    "LEADER_KINDS",
    "MAX_SCAN_LIMIT",
    "REQUEST_TYPES",
    "WRITE_KINDS",
    "AbortedReply",
    "BackupBeginRequest",
    "BackupEndRequest",
    "BackupReadRequest",
    "BadReply",
    "CasRequest",
    "CheckRequest",
    "ClientRequest",
    "DataReply",
    "DeleteRequest",
    "ExistedReply",
    "FaultRequest",
    "FileAbortRequest",
    "FileChunkRequest",
    "FileCommitRequest",
    "FileDeleteRequest",
    "FileMetaReply",
    "FileMetaRequest",
    "FileReadRequest",
    "GetRequest",
    "MemberRequest",
    "MembersRequest",
    "OkReply",
    "ProtocolError",
    "PutRequest",
    "RepairRequest",
    "ScanReply",
    "ScanRequest",
    "StateHashesRequest",
    "StatusReply",
    "StatusRequest",
    "SwappedReply",
    "TransferRequest",
    "ValueReply",
    "WriteRequest",
    "decode_request",
]
