"""The client requests (rkv.protocol): one frozen dataclass per kind a node accepts, the
table of kinds, and `decode_request`, the one place a received request is checked.

Owns: the request kinds, their fields in wire order, which are writes and which only the leader
answers. Must not: read replies (rkv.protocol.replies) or know what a request does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from rkv.codec import (
    MAX_KEY_LEN,
    MAX_LEASE_ID,
    Cas,
    Delete,
    FileAbort,
    FileChunk,
    FileCommit,
    FileDelete,
    Put,
    PutLease,
    Txn,
)
from rkv.protocol.fields import (
    _ID,
    _KEY,
    _NODE_ID,
    _SEQ,
    _SPECS,
    _U64,
    _VALUE,
    DEFAULT_SCAN_LIMIT,
    FWD,
    MAX_BACKUP_TOKEN_LEN,
    MAX_CHUNK_NO,
    MAX_CHUNKS,
    MAX_SCAN_LIMIT,
    SHA256_LEN,
    Frame,
    ProtocolError,
    _bool,
    _bytes,
    _f,
    _int,
    _member_op,
    _nil_is,
    _node_ids,
    _optional,
    _Request,
    _Spec,
    _type_name,
    _Write,
)
from rkv.protocol.leases import (
    LeaseGrantRequest,
    LeaseKeepaliveRequest,
    LeaseListRequest,
    LeaseRevokeRequest,
    LeaseTtlRequest,
)
from rkv.txn import (
    MAX_COMPARES,
    MAX_OPS,
    Compare,
    Op,
    TxnError,
    op_from_wire,
    op_to_wire,
)

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
    lease: int = _f("lease", _int(0, MAX_LEASE_ID), absent=0, omit=0, default=0)
    """Attach the key to this lease (0: none; a put without a lease detaches the key)."""

    def command(self) -> Put | PutLease:
        if self.lease:
            return PutLease(self.key, self.value, self.lease)
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


def _txn_list(most: int, item: Any, what: str) -> Any:
    """A check of a txn's compares or ops: a list of their wire forms (rkv.txn), or of the
    values themselves (a request built in this process)."""

    def check(v: object, name: str) -> tuple[Any, ...]:
        if type(v) is not list and type(v) is not tuple:
            raise ProtocolError(
                f"field {name!r} must be a list of {what}, got {_type_name(v)}", name
            )
        assert isinstance(v, list | tuple)
        if len(v) > most:
            raise ProtocolError(
                f"field {name!r} must hold at most {most} {what}, got {len(v)}", name
            )
        out = []
        for i, x in enumerate(v):
            try:
                out.append(x if isinstance(x, Compare | Op) else item(x))
            except TxnError as e:
                raise ProtocolError(f"field {name!r} item {i}: {e}", name) from None
        return tuple(out)

    return check


@dataclass(frozen=True, slots=True)
class TxnRequest(_Write):
    """If every compare holds, the `success` ops, else the `failure` ops, as one write
    (rkv.txn: the compares' and ops' wire forms, the bounds)."""

    T = "txn"
    compares: tuple[Compare, ...] = _f(
        "cmp", _txn_list(MAX_COMPARES, Compare.from_wire, "compares"), absent=(), omit=()
    )
    success: tuple[Op, ...] = _f(
        "then", _txn_list(MAX_OPS, op_from_wire, "ops"), absent=(), omit=()
    )
    failure: tuple[Op, ...] = _f(
        "else", _txn_list(MAX_OPS, op_from_wire, "ops"), absent=(), omit=()
    )
    client_id: bytes = _f("c", _ID)
    seq: int = _f("s", _SEQ)
    fwd: bool = _f(FWD, _bool, absent=False, omit=False, default=False)

    def __post_init__(self) -> None:
        _Write.__post_init__(self)
        try:
            self.command()  # the whole txn's bounds: writes per key, bytes
        except TxnError as e:
            raise ProtocolError(f"txn: {e}") from None

    def command(self) -> Txn:
        return Txn(self.compares, self.success, self.failure)

    def to_frame(self) -> Frame:
        frame = _Write.to_frame(self)
        frame["cmp"] = [c.to_wire() for c in self.compares]
        frame["then"] = [op_to_wire(op) for op in self.success]
        frame["else"] = [op_to_wire(op) for op in self.failure]
        return frame


@dataclass(frozen=True, slots=True)
class GetRequest(_Request):
    """The value of `key`; linearizable unless `stale` (the node's local copy)."""

    T = "get"
    key: bytes = _f("k", _KEY)
    stale: bool = _f("stale", _bool, absent=False, default=False)
    meta: bool = _f("meta", _bool, absent=False, omit=False, default=False)
    """The reply carries the key's record too (`rec`: create, mod, version, lease)."""


@dataclass(frozen=True, slots=True)
class ScanRequest(_Request):
    """Up to `limit` pairs whose key starts with `prefix` (`p`; nil or missing: all keys)
    and, given `after`, is greater than it (nil or missing: from the prefix's first key)."""

    T = "scan"
    prefix: bytes = _f("p", _nil_is(b"", _bytes(0, MAX_KEY_LEN)), absent=b"", default=b"")
    limit: int = _f(
        "limit", _int(1, MAX_SCAN_LIMIT), absent=DEFAULT_SCAN_LIMIT, default=DEFAULT_SCAN_LIMIT
    )
    stale: bool = _f("stale", _bool, absent=False, default=False)
    after: bytes | None = _f("after", _optional(_KEY), absent=None, omit=None, default=None)
    """Only keys greater than this one (exclusive): the last key of the previous page."""
    meta: bool = _f("meta", _bool, absent=False, omit=False, default=False)
    """Each item carries the key's record too: [key, value, create, mod, version, lease]."""


MAX_WATCH_LIMIT = 10_000
"""The most events one watch reply may carry (a revision's events are never split)."""
DEFAULT_WATCH_LIMIT = 1000
MAX_WATCH_WAIT_MS = 60_000
DEFAULT_WATCH_WAIT_MS = 1000


@dataclass(frozen=True, slots=True)
class WatchRequest(_Request):
    """One poll of a watch (docs/contracts.md, Watch): the events on keys starting with
    `prefix` (`p`) of revisions after `after` (nil or missing: from the node's current
    revision), as soon as there are some, or after `wait_ms` a progress answer whose revision
    a ReadIndex proved current (`exact`: only the key `p` itself). `prev`: each event
    carries the key's value before it. At
    most `limit` events (whole revisions: one revision's events are never split)."""

    T = "watch"
    prefix: bytes = _f("p", _nil_is(b"", _bytes(0, MAX_KEY_LEN)), absent=b"", default=b"")
    after: int | None = _f("after", _optional(_U64), absent=None, omit=None, default=None)
    prev: bool = _f("prev", _bool, absent=False, default=False)
    limit: int = _f(
        "limit", _int(1, MAX_WATCH_LIMIT), absent=DEFAULT_WATCH_LIMIT, default=DEFAULT_WATCH_LIMIT
    )
    wait_ms: int = _f(
        "wait_ms",
        _int(0, MAX_WATCH_WAIT_MS),
        absent=DEFAULT_WATCH_WAIT_MS,
        default=DEFAULT_WATCH_WAIT_MS,
    )
    exact: bool = _f("exact", _bool, absent=False, omit=False, default=False)
    """Only the key equal to `prefix` (a watch of one key), not every key it begins."""


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
    | TxnRequest
    | LeaseGrantRequest
    | LeaseKeepaliveRequest
    | LeaseRevokeRequest
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
    | WatchRequest
    | LeaseTtlRequest
    | LeaseListRequest
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
        TxnRequest,
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
        WatchRequest,
        LeaseGrantRequest,
        LeaseKeepaliveRequest,
        LeaseRevokeRequest,
        LeaseTtlRequest,
        LeaseListRequest,
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
