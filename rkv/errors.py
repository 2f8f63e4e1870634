"""Error types shared by the node runtime, the client and the CLI, and the process exit codes.

Owns: the public exception hierarchy (`RkvError` and its subclasses), the mapping between
them and the wire error codes of the client protocol (docs/contracts.md), and the exit codes
of `rkv serve`. Must not: import anything from rkv (this module sits at the bottom of the
layering so that every layer may raise or translate these errors).
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    """Exit codes of `rkv serve` (and of the other CLI commands where they apply)."""

    OK = 0
    """Clean shutdown (SIGINT/SIGTERM) or successful command."""
    ERROR = 1
    """Unexpected internal error (a bug): the message and traceback are logged."""
    USAGE = 2
    """Bad arguments or configuration (same code as typer/click usage errors)."""
    UNAVAILABLE = 3
    """The cluster could not serve the request (no leader, timeout) - client commands."""
    PORT_IN_USE = 10
    """The listen address could not be bound (already in use or not permitted)."""
    IDENTITY_MISMATCH = 11
    """The data dir belongs to another cluster or node."""
    STORE_FULL = 12
    """The disk / LMDB map is full: the node refuses to continue rather than corrupt data."""
    STORE_ERROR = 13
    """The data dir cannot be opened or is corrupt (other than an identity mismatch)."""
    REMOVED = 14
    """The node was removed from the cluster (`rkv member remove`) and stopped."""
    MEMBER_EXISTS = 15
    """`rkv serve --join` on a new data dir for a node the cluster has as a voter (its disk was
    replaced): it would vote with a log it lost. Remove it first (`rkv member remove`)."""
    INTEGRITY = 16
    """A stored record failed its checksum: a client command was refused the damaged data
    by a node (which marks itself degraded), or `rkv serve` stopped because it had to apply
    a write over it."""
    REPLICAS_DIFFER = 17
    """`rkv check`: a member's state hash differs from the others' at the same applied
    index (never from `rkv serve`)."""
    REPAIR = 18
    """`rkv serve` stopped for a repair (`rkv repair NODE`): its damaged data dir was moved
    aside and a new one prepared; start it again with the same flags (it rebuilds from the
    cluster)."""


class RkvError(Exception):
    """Base of all rkv errors a caller may want to handle. `code` is the wire error code."""

    code: str = "internal"

    def __init__(self, msg: str = "") -> None:
        super().__init__(msg or self.__class__.__doc__ or self.code)
        self.msg = msg or (self.__class__.__doc__ or self.code).strip().splitlines()[0]

    def to_fields(self) -> dict[str, Any]:
        """Extra fields of the error frame (besides t/id/code/msg)."""
        return {}


class Unavailable(RkvError):
    """No leader is known, or leadership was lost before the write committed (retry is safe)."""

    code = "unavailable"


class NotLeader(RkvError):
    """This node is not the leader; the write was NOT applied."""

    code = "not_leader"

    def __init__(self, msg: str = "", leader_addr: str | None = None) -> None:
        super().__init__(msg or f"not the leader (leader: {leader_addr or 'unknown'})")
        self.leader_addr = leader_addr

    def to_fields(self) -> dict[str, Any]:
        return {"leader_addr": self.leader_addr}


class Timeout(RkvError):
    """The request did not complete within its deadline (its outcome may be unknown)."""

    code = "timeout"


class BadRequest(RkvError):
    """The request was malformed."""

    code = "bad_request"


class NotFound(RkvError):
    """The key or file does not exist."""

    code = "not_found"


class LeaseNotFound(NotFound):
    """The lease does not exist (never granted, revoked, or expired)."""

    code = "lease_not_found"


class LockLost(RkvError):
    """The lease holding a lock or an election candidacy is gone (expired, revoked, or not
    renewable within its TTL), or its key was deleted: the lock is no longer held. Raised by
    rkv.recipes on the client side (never sent by a node), after cancelling the block that
    held the lock."""

    code = "lock_lost"


class Changed(RkvError):
    """The file was overwritten during the download."""

    code = "changed"


class IntegrityError(RkvError):
    """Data failed an integrity check (checksum or size mismatch)."""

    code = "integrity"


class CorruptData(IntegrityError):
    """A node's stored copy of the data failed its checksum; it refused to serve it and
    marked itself degraded (another node may hold a good copy)."""

    code = "integrity"


class StoreFull(RkvError):
    """The node's disk or store map is full; the write was refused."""

    code = "store_full"


class AuthError(RkvError):
    """Authentication failed: a wrong or missing cluster token (or a token the node does not
    expect); the connection was refused before any request was served."""

    code = "auth_failed"


class Removed(RkvError):
    """The peer was removed from this cluster's configuration; its Raft traffic is refused."""

    code = "removed_node"


class InternalError(RkvError):
    """The server hit an unexpected error."""

    code = "internal"


class Compacted(RkvError):
    """A watch asked for revisions this node no longer holds; `first_revision` is the first
    it can serve (a watch from there misses the changes in between: re-read, then watch)."""

    code = "compacted"

    def __init__(self, msg: str = "", first_revision: int = 0) -> None:
        super().__init__(msg or f"revisions before {first_revision} are compacted")
        self.first_revision = first_revision

    def to_fields(self) -> dict[str, Any]:
        return {"first_revision": self.first_revision}


class NoLeader(RkvError):
    """The node serving the watch has had no leader for longer than an election timeout: it
    may be cut off, so its stream may be stale (watch through another node)."""

    code = "no_leader"


class TooManyWatchers(RkvError):
    """The node (or this connection) has as many watches as it allows (retry later, or watch
    through another node)."""

    code = "too_many_watchers"


_BY_CODE: dict[str, type[RkvError]] = {
    cls.code: cls
    for cls in (
        Unavailable,
        NotLeader,
        Timeout,
        BadRequest,
        NotFound,
        LeaseNotFound,
        Changed,
        CorruptData,  # "integrity" from a node: only damaged stored data is sent with it
        StoreFull,
        AuthError,
        InternalError,
        Compacted,
        NoLeader,
        TooManyWatchers,
    )
}


def error_frame(req_id: Any, err: RkvError) -> dict[str, Any]:
    """The wire answer for `err` to the request `req_id` (server side)."""
    frame: dict[str, Any] = {"t": "error", "id": req_id, "code": err.code, "msg": err.msg}
    frame.update(err.to_fields())
    return frame


def from_error_frame(frame: dict[str, Any]) -> RkvError:
    """The exception for an error frame received from a node (client side).

    Unknown codes map to InternalError so that a newer server never crashes an older client.
    """
    code = frame.get("code")
    raw_msg = frame.get("msg")
    msg = raw_msg if isinstance(raw_msg, str) else ""
    cls = _BY_CODE.get(code, InternalError) if isinstance(code, str) else InternalError
    if cls is NotLeader:
        addr = frame.get("leader_addr")
        return NotLeader(msg, leader_addr=addr if isinstance(addr, str) else None)
    if cls is Compacted:
        first = frame.get("first_revision")
        return Compacted(msg, first if type(first) is int else 0)
    return cls(msg)
