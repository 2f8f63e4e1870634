"""The client protocol's requests and common replies, defined once (docs/contracts.md).
The package: `fields` (limits, errors, field checks, the request base classes), `requests`
(the kinds and `decode_request`), `replies` (the typed ok replies), `reads` (the get's and
scan's replies, KeyRecord); import from here.

Owns: one frozen dataclass per request kind a node accepts from a client (`t` of the frame:
the writes, the reads, and the admin requests), each with `to_frame()` giving the wire map
the client sends, and `decode_request(frame)`, the one place a received request is checked
field by field; typed forms of the common ok replies (`to_frame` / `from_frame`); the limits
of the protocol that are not the state machine's (scan limits), the field a forwarding
follower marks a request with (`FWD`), and which kinds only the leader answers
(`LEADER_KINDS`). Must not: import anything from rkv but rkv.codec (the limits of keys,
values and ids), rkv.txn (a txn's compares, ops and result) and rkv.errors, do I/O, or
know what a request does.

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

Reads: a scan's optional `after` (a key: only keys greater than it, still under `p`; nil
or missing: from the prefix's first key) pages through a prefix; a get's or scan's optional
`meta` (false when missing) returns each key's record (rkv.protocol.reads: create and mod
revision, version, lease) without a log entry.

Leases: rkv.protocol.leases (lease_grant, lease_keepalive, lease_revoke, lease_ttl,
lease_list and their replies; a put's optional `lease`).

Replies: the ok replies with fixed fields are typed here (OkReply, ValueReply, ExistedReply,
SwappedReply, AbortedReply, ScanReply, TxnReply, FileMetaReply, DataReply, StatusReply,
WatchReply with its WatchEvents); get,
scan and every write carry `rev`, the revision they read at or made (optional: None from a
node that predates it). The others are
free-form maps and stay so: `members` / `member` (membership and per-member progress, read
leniently by the client), `check` (rkv.compare's verdicts), `state_hashes` (rkv.compare's
`pairs_frame`), `backup_begin` (its manifest is rkv.backup_file's), `transfer`, `repair` and
`fault`; error replies are rkv.errors' (`error_frame` / `from_error_frame`).
"""

from __future__ import annotations

from rkv.protocol.fields import (
    DEFAULT_SCAN_LIMIT,
    FWD,
    MAX_BACKUP_TOKEN_LEN,
    MAX_CHUNK_NO,
    MAX_CHUNKS,
    MAX_SCAN_LIMIT,
    MEMBER_OPS,
    SHA256_LEN,
    BadReply,
    Frame,
    ProtocolError,
)
from rkv.protocol.leases import (
    LeaseGrantReply,
    LeaseGrantRequest,
    LeaseKeepaliveReply,
    LeaseKeepaliveRequest,
    LeaseListItem,
    LeaseListReply,
    LeaseListRequest,
    LeaseRevokeRequest,
    LeaseTtlReply,
    LeaseTtlRequest,
)
from rkv.protocol.reads import KeyRecord, ScanReply, ValueReply
from rkv.protocol.replies import (
    AbortedReply,
    DataReply,
    ExistedReply,
    FileMetaReply,
    OkReply,
    StatusReply,
    SwappedReply,
    TxnReply,
    WatchEvent,
    WatchReply,
)
from rkv.protocol.requests import (
    LEADER_KINDS,
    REQUEST_TYPES,
    WRITE_KINDS,
    BackupBeginRequest,
    BackupEndRequest,
    BackupReadRequest,
    CasRequest,
    CheckRequest,
    ClientRequest,
    DeleteRequest,
    FaultRequest,
    FileAbortRequest,
    FileChunkRequest,
    FileCommitRequest,
    FileDeleteRequest,
    FileMetaRequest,
    FileReadRequest,
    GetRequest,
    MemberRequest,
    MembersRequest,
    PutRequest,
    RepairRequest,
    ScanRequest,
    StateHashesRequest,
    StatusRequest,
    TransferRequest,
    TxnRequest,
    WatchRequest,
    WriteRequest,
    decode_request,
)

__all__ = [
    "DEFAULT_SCAN_LIMIT",
    "FWD",
    "LEADER_KINDS",
    "MAX_BACKUP_TOKEN_LEN",
    "MAX_CHUNKS",
    "MAX_CHUNK_NO",
    "MAX_SCAN_LIMIT",
    "MEMBER_OPS",
    "REQUEST_TYPES",
    "SHA256_LEN",
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
    "Frame",
    "GetRequest",
    "KeyRecord",
    "LeaseGrantReply",
    "LeaseGrantRequest",
    "LeaseKeepaliveReply",
    "LeaseKeepaliveRequest",
    "LeaseListItem",
    "LeaseListReply",
    "LeaseListRequest",
    "LeaseRevokeRequest",
    "LeaseTtlReply",
    "LeaseTtlRequest",
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
    "TxnReply",
    "TxnRequest",
    "ValueReply",
    "WatchEvent",
    "WatchReply",
    "WatchRequest",
    "WriteRequest",
    "decode_request",
]
