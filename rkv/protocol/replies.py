"""The common ok replies of the client protocol (rkv.protocol), typed: `to_frame` for the node,
`from_frame` for the client (BadReply when a node's answer does not fit).

Owns: the replies with fixed fields, but the reads' (get, scan: rkv.protocol.reads). Must not: type the free-form replies (members, check,
state_hashes, backup_begin, transfer, repair, fault: see rkv.protocol) or build requests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rkv.codec import (
    MAX_NODE_ID_LEN,
    MAX_U64,
    MAX_VALUE_LEN,
)
from rkv.protocol.fields import (
    _U64,
    MAX_CHUNKS,
    SHA256_LEN,
    BadReply,
    Check,
    Frame,
    ProtocolError,
    _bool,
    _bytes,
    _int,
    _node_ids,
    _optional,
    _str,
    _type_name,
)
from rkv.txn import OpResult, TxnError, TxnResult

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


# The checks of reply fields, made once (every get and chunk read of a client runs them).
_VALUE_OR_NIL = _optional(_bytes(0, MAX_VALUE_LEN))
_CHUNKS = _int(0, MAX_CHUNKS)
_SHA = _bytes(SHA256_LEN, SHA256_LEN)
_DATA = _bytes(0, MAX_U64)
_REV = _optional(_U64)


def _rev(frame: Mapping[str, Any], what: str) -> int | None:
    """The reply's revision (`rev`: the store's applied index it read at, or the log index of
    the write), None from a node that does not send it."""
    if frame.get("rev") is None:
        return None
    rev: int = _reply_field(frame, "rev", _REV, what)
    return rev


def _with_rev(frame: Frame, rev: int | None) -> Frame:
    if rev is not None:
        frame["rev"] = rev
    return frame


@dataclass(frozen=True, slots=True)
class OkReply:
    """The answer without fields but the revision (`rev`, the write's log index): put,
    file_chunk, file_commit."""

    rev: int | None = None

    def to_frame(self) -> Frame:
        return _with_rev({"t": "ok"}, self.rev)

    @classmethod
    def from_frame(cls, frame: Mapping[str, Any]) -> OkReply:
        _ok(frame, "ok")
        return cls(_rev(frame, "ok"))


@dataclass(frozen=True, slots=True)
class ExistedReply:
    """A delete's or file_delete's answer (`rev`: the delete's log index)."""

    existed: bool
    rev: int | None = None

    def to_frame(self) -> Frame:
        return _with_rev({"t": "ok", "existed": self.existed}, self.rev)

    @classmethod
    def from_frame(cls, frame: Mapping[str, Any]) -> ExistedReply:
        _ok(frame, "delete")
        return cls(_reply_field(frame, "existed", _bool, "delete"), _rev(frame, "delete"))


@dataclass(frozen=True, slots=True)
class SwappedReply:
    """A cas's answer (`rev`: the cas's log index)."""

    swapped: bool
    rev: int | None = None

    def to_frame(self) -> Frame:
        return _with_rev({"t": "ok", "swapped": self.swapped}, self.rev)

    @classmethod
    def from_frame(cls, frame: Mapping[str, Any]) -> SwappedReply:
        _ok(frame, "cas")
        return cls(_reply_field(frame, "swapped", _bool, "cas"), _rev(frame, "cas"))


@dataclass(frozen=True, slots=True)
class AbortedReply:
    """A file_abort's answer: whether staged chunks were dropped (`rev`: its log index)."""

    aborted: bool
    rev: int | None = None

    def to_frame(self) -> Frame:
        return _with_rev({"t": "ok", "aborted": self.aborted}, self.rev)

    @classmethod
    def from_frame(cls, frame: Mapping[str, Any]) -> AbortedReply:
        _ok(frame, "file_abort")
        aborted = _reply_field(frame, "aborted", _bool, "file_abort")
        return cls(aborted, _rev(frame, "file_abort"))


@dataclass(frozen=True, slots=True)
class TxnReply:
    """A txn's answer: whether its compares held, the revision it made (its log index), one
    result per op of the branch that ran (rkv.txn.TxnResult)."""

    succeeded: bool
    rev: int
    results: tuple[OpResult, ...] = ()

    def to_frame(self) -> Frame:
        ok, rev, results = TxnResult(self.succeeded, self.rev, self.results).to_wire()
        return {"t": "ok", "ok": ok, "rev": rev, "results": results}

    @classmethod
    def from_frame(cls, frame: Mapping[str, Any]) -> TxnReply:
        _ok(frame, "txn")
        try:
            r = TxnResult.from_wire([frame.get("ok"), frame.get("rev"), frame.get("results")])
        except TxnError as e:
            raise BadReply(f"txn reply: {e}") from None
        return cls(r.succeeded, r.revision, r.results)

    def result(self) -> TxnResult:
        return TxnResult(self.succeeded, self.rev, self.results)


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
            _reply_field(frame, "chunks", _CHUNKS, "file_meta"),
            _reply_field(frame, "sha", _SHA, "file_meta"),
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
        return cls(_reply_field(frame, "data", _DATA, "read"))


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


WATCH_EVENT_TYPES = frozenset({"put", "delete", "file_commit", "file_delete"})
_KEY_BYTES = _bytes(1, MAX_U64)


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change seen by a watch: at revision `rev` (the log index of the write), `type`
    "put" (`value`: the new value), "delete", "file_commit" or "file_delete" (a file: no
    value); `prev`: the key's value before this revision (nil: it did not exist), sent only
    to a watch that asked for it, and only for keys, not files (`prev_known`: it was sent)."""

    rev: int
    type: str
    key: bytes
    value: bytes | None = None
    prev: bytes | None = None
    prev_known: bool = False

    def to_wire(self) -> Frame:
        w: Frame = {"rev": self.rev, "type": self.type, "k": self.key}
        if self.value is not None:
            w["v"] = self.value
        if self.prev_known:
            w["prev"] = self.prev
        return w

    @classmethod
    def from_wire(cls, w: object, what: str) -> WatchEvent:
        if not isinstance(w, Mapping):
            raise BadReply(f"{what}: an event must be a map, got {_type_name(w)}")
        rev = _reply_field(w, "rev", _U64, what)
        typ = w.get("type")
        if typ not in WATCH_EVENT_TYPES:
            raise BadReply(f"{what}: unknown event type {typ!r}", "type")
        key = _reply_field(w, "k", _KEY_BYTES, what)
        value = _VALUE_OR_NIL(w.get("v"), "v")
        known = "prev" in w
        prev = _VALUE_OR_NIL(w.get("prev"), "prev") if known else None
        return cls(rev, typ, key, value, prev, known)


@dataclass(frozen=True, slots=True)
class WatchReply:
    """A watch poll's answer: `events` in revision order (whole revisions), and `rev`: every
    event of the watch up to `rev` is in this reply or an earlier one (the next poll asks for
    what comes after it). `progress`: `rev` was proven current by a ReadIndex (no write the
    cluster committed before the poll's ReadIndex is missing); `no_leader` is an error, not a
    reply (rkv.errors.NoLeader)."""

    events: tuple[WatchEvent, ...]
    rev: int
    progress: bool = False

    def to_frame(self) -> Frame:
        return {
            "t": "ok",
            "events": [e.to_wire() for e in self.events],
            "rev": self.rev,
            "progress": self.progress,
        }

    @classmethod
    def from_frame(cls, frame: Mapping[str, Any]) -> WatchReply:
        _ok(frame, "watch")
        raw = frame.get("events")
        if type(raw) is not list:
            raise BadReply(f"watch reply: field 'events' must be a list, got {_type_name(raw)}")
        events = tuple(WatchEvent.from_wire(e, "watch reply") for e in raw)
        rev = _reply_field(frame, "rev", _U64, "watch")
        progress = _reply_field(frame, "progress", _bool, "watch")
        return cls(events, rev, progress)
