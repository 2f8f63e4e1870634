"""The lease requests and replies of the client protocol (rkv.protocol).

Owns: lease_grant, lease_keepalive, lease_revoke (writes: the leader answers, a follower
forwards), lease_ttl and lease_list (reads: any node, after a read barrier), and their typed
replies. TTLs on the wire are milliseconds. Must not: know what a request does (the node's
rkv.node.leases does), import from rkv anything but rkv.codec and rkv.protocol's fields and
replies (the reply field checks).

Wire forms:
- {"t": "lease_grant", "ttl": ms, "lease": id (0 or absent: the node picks), c, s}
  -> {"t": "ok", "lease": id, "ttl": granted ms (raised to the node's minimum), "rev"}
- {"t": "lease_keepalive", "lease": id, c, s} -> {"t": "ok", "ttl": ms, "rev"}
- {"t": "lease_revoke", "lease": id, c, s} -> {"t": "ok", "existed": bool, "rev"}
- {"t": "lease_ttl", "lease": id, "keys": bool} -> {"t": "ok", "lease": id, "ttl": ms,
  "left": remaining ms on the answering node's clock, "keys": [key...] or nil, "rev"}
- {"t": "lease_list"} -> {"t": "ok", "leases": [[id, ttl ms, left ms, attached keys]...], "rev"}
A lease that does not exist is the error code `lease_not_found` (rkv.errors.LeaseNotFound).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rkv.codec import (
    MAX_KEY_LEN,
    MAX_LEASE_ID,
    MAX_LEASE_TTL_MS,
    LeaseGrant,
    LeaseRenew,
    LeaseRevoke,
)
from rkv.protocol.fields import (
    _ID,
    _SEQ,
    FWD,
    Frame,
    ProtocolError,
    _bool,
    _f,
    _int,
    _Request,
    _Write,
)
from rkv.protocol.replies import _ok, _reply_field, _rev

_LEASE_ID = _int(1, MAX_LEASE_ID)
_TTL = _int(1, MAX_LEASE_TTL_MS)
MAX_LIST_KEYS = 10_000
"""Most attached keys a lease_ttl reply lists (the count is in lease_list)."""


@dataclass(frozen=True, slots=True)
class LeaseGrantRequest(_Write):
    T = "lease_grant"
    ttl_ms: int = _f("ttl", _TTL)
    client_id: bytes = _f("c", _ID)
    seq: int = _f("s", _SEQ)
    lease_id: int = _f("lease", _int(0, MAX_LEASE_ID), absent=0, omit=0, default=0)
    fwd: bool = _f(FWD, _bool, absent=False, omit=False, default=False)

    def command(self) -> LeaseGrant:
        return LeaseGrant(self.lease_id, self.ttl_ms)


@dataclass(frozen=True, slots=True)
class LeaseKeepaliveRequest(_Write):
    T = "lease_keepalive"
    lease_id: int = _f("lease", _LEASE_ID)
    client_id: bytes = _f("c", _ID)
    seq: int = _f("s", _SEQ)
    fwd: bool = _f(FWD, _bool, absent=False, omit=False, default=False)

    def command(self) -> LeaseRenew:
        return LeaseRenew(self.lease_id)


@dataclass(frozen=True, slots=True)
class LeaseRevokeRequest(_Write):
    T = "lease_revoke"
    lease_id: int = _f("lease", _LEASE_ID)
    client_id: bytes = _f("c", _ID)
    seq: int = _f("s", _SEQ)
    fwd: bool = _f(FWD, _bool, absent=False, omit=False, default=False)

    def command(self) -> LeaseRevoke:
        return LeaseRevoke(self.lease_id)


@dataclass(frozen=True, slots=True)
class LeaseTtlRequest(_Request):
    T = "lease_ttl"
    lease_id: int = _f("lease", _LEASE_ID)
    keys: bool = _f("keys", _bool, absent=False, omit=False, default=False)


@dataclass(frozen=True, slots=True)
class LeaseListRequest(_Request):
    T = "lease_list"


LEASE_REQUESTS: tuple[type[_Request], ...] = (
    LeaseGrantRequest,
    LeaseKeepaliveRequest,
    LeaseRevokeRequest,
    LeaseTtlRequest,
    LeaseListRequest,
)


# --- replies ----------------------------------------------------------------------------------


_MS = _int(0, MAX_LEASE_TTL_MS)


@dataclass(frozen=True, slots=True)
class LeaseGrantReply:
    lease_id: int
    ttl_ms: int
    rev: int | None = None

    def to_frame(self) -> Frame:
        return {"t": "ok", "lease": self.lease_id, "ttl": self.ttl_ms, "rev": self.rev}

    @classmethod
    def from_frame(cls, frame: Mapping[str, Any]) -> LeaseGrantReply:
        _ok(frame, "lease_grant")
        return cls(
            _reply_field(frame, "lease", _LEASE_ID, "lease_grant"),
            _reply_field(frame, "ttl", _TTL, "lease_grant"),
            _rev(frame, "lease_grant"),
        )


@dataclass(frozen=True, slots=True)
class LeaseKeepaliveReply:
    ttl_ms: int
    rev: int | None = None

    def to_frame(self) -> Frame:
        return {"t": "ok", "ttl": self.ttl_ms, "rev": self.rev}

    @classmethod
    def from_frame(cls, frame: Mapping[str, Any]) -> LeaseKeepaliveReply:
        _ok(frame, "lease_keepalive")
        return cls(
            _reply_field(frame, "ttl", _TTL, "lease_keepalive"), _rev(frame, "lease_keepalive")
        )


def _keys(v: object, name: str) -> tuple[bytes, ...] | None:
    if v is None:
        return None
    if type(v) is not list or len(v) > MAX_LIST_KEYS:
        raise ProtocolError(f"field {name!r} must be nil or a list of keys", name)
    for k in v:
        if type(k) is not bytes or not 1 <= len(k) <= MAX_KEY_LEN:
            raise ProtocolError(f"field {name!r} must hold keys", name)
    return tuple(v)


@dataclass(frozen=True, slots=True)
class LeaseTtlReply:
    """A lease's TTL, its remaining TTL on the answering node's clock, and its keys (when
    asked for; at most MAX_LIST_KEYS)."""

    lease_id: int
    ttl_ms: int
    remaining_ms: int
    keys: tuple[bytes, ...] | None = None
    rev: int | None = None

    def to_frame(self) -> Frame:
        return {
            "t": "ok",
            "lease": self.lease_id,
            "ttl": self.ttl_ms,
            "left": self.remaining_ms,
            "keys": None if self.keys is None else list(self.keys),
            "rev": self.rev,
        }

    @classmethod
    def from_frame(cls, frame: Mapping[str, Any]) -> LeaseTtlReply:
        w = "lease_ttl"
        _ok(frame, w)
        return cls(
            _reply_field(frame, "lease", _LEASE_ID, w),
            _reply_field(frame, "ttl", _TTL, w),
            _reply_field(frame, "left", _MS, w),
            _reply_field(frame, "keys", _keys, w) if frame.get("keys") is not None else None,
            _rev(frame, w),
        )


@dataclass(frozen=True, slots=True)
class LeaseListItem:
    lease_id: int
    ttl_ms: int
    remaining_ms: int
    keys: int


def _items(v: object, name: str) -> tuple[LeaseListItem, ...]:
    if type(v) is not list:
        raise ProtocolError(f"field {name!r} must be a list", name)
    out = []
    for it in v:
        if type(it) is not list or len(it) != 4 or any(type(x) is not int for x in it):
            raise ProtocolError(f"field {name!r} must hold [id, ttl, left, keys] items", name)
        out.append(LeaseListItem(it[0], it[1], it[2], it[3]))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class LeaseListReply:
    leases: tuple[LeaseListItem, ...]
    rev: int | None = None

    def to_frame(self) -> Frame:
        items = [[x.lease_id, x.ttl_ms, x.remaining_ms, x.keys] for x in self.leases]
        return {"t": "ok", "leases": items, "rev": self.rev}

    @classmethod
    def from_frame(cls, frame: Mapping[str, Any]) -> LeaseListReply:
        _ok(frame, "lease_list")
        return cls(_reply_field(frame, "leases", _items, "lease_list"), _rev(frame, "lease_list"))
