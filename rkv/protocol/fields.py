"""The client protocol's vocabulary (rkv.protocol): its limits, its errors, the checks of a
field, and what every request class shares (checked on construction, `to_frame`).

Owns: the field checks and the request base classes. Must not: name a request kind (that is
rkv.protocol.requests), read a reply (rkv.protocol.replies), import from rkv anything but
rkv.codec and rkv.errors, or do I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from rkv.codec import (
    MAX_ID_LEN,
    MAX_KEY_LEN,
    MAX_NODE_ID_LEN,
    MAX_U64,
    MAX_VALUE_LEN,
    Command,
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
