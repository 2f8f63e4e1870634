"""Multi-key transactions: their compares, operations and results, as values.

Owns: the `Txn` command (compares, then `success` ops if every compare holds, else `failure`
ops), its bounds, its wire form (the same list form in a log entry and in a client's `txn`
request), the `TxnResult` form, and the arithmetic rules of the read-modify-write ops (incr,
incr_float, append) that the state machine runs (rkv.store.txn) and the RESP door shows.
Must not: import anything from rkv (rkv.codec imports it: the command is a log record too),
do I/O, or look at clocks or randomness (every replica computes the same result).

Wire forms (msgpack lists, bin for bytes):
- compare: [key, target, op, operand]; target 0 value / 1 version / 2 create / 3 mod
  (revisions: log indexes), op 0 == / 1 != / 2 < / 3 >, operand bytes for value else int.
  An absent key has version, create and mod 0; a value compare on an absent key is false.
- op: [0, key, value] put ([0, key, value, lease id] with a lease), [1, key] delete, [2, prefix] delete_prefix, [3, key] get,
  [4, key, delta int] incr, [5, key, delta decimal string] incr_float, [6, key, bytes] append.
- txn: [compares, success, failure]; result: [succeeded, revision, [one result per op run]]:
  put nil, delete and delete_prefix the number of keys deleted, get nil (absent) or [value,
  create, mod, version] ([..., lease id] when the key is attached to a lease), incr the new integer, incr_float the new value (bytes), append the
  new length.
Errors: a value that does not fit raises `TxnError` (a ValueError) with a one-line reason.
"""

from __future__ import annotations

import decimal
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

MAX_KEY_LEN = 400
"""As rkv.codec.MAX_KEY_LEN (rkv.codec checks they agree)."""
MAX_VALUE_LEN = 16 << 20
"""As rkv.codec.MAX_VALUE_LEN."""
MAX_COMPARES = 128
"""Most compares of one txn."""
MAX_OPS = 128
"""Most ops of each branch (success, failure) of one txn."""
MAX_TXN_BYTES = MAX_VALUE_LEN
"""Most bytes of keys, values and compare operands in one txn, and of values its gets return
(a txn whose gets would return more fails, changing nothing)."""
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1

TARGETS = ("value", "version", "create", "mod")
CMP_OPS = ("==", "!=", "<", ">")

# the error texts of the read-modify-write ops (Redis' own, so rkv.resp passes them on)
NOT_AN_INTEGER = "value is not an integer or out of range"
OVERFLOW = "increment or decrement would overflow"
NOT_A_FLOAT = "value is not a valid float"
NOT_FINITE = "increment would produce NaN or Infinity"


class TxnError(ValueError):
    """A txn, compare, op or result that does not fit (one line)."""


class TxnFromNewer(TxnError):
    """An op of a kind or with fields this rkv does not know: a newer rkv wrote it (op kinds
    and trailing fields are only ever added). In a log entry it must stop the node (rkv.codec
    maps it to UnknownCommand), not be taken as a malformed txn, or replicas would diverge."""


def _key(v: object, what: str = "key") -> bytes:
    if type(v) is not bytes:
        raise TxnError(f"{what} must be bytes, got {type(v).__name__}")
    if not 1 <= len(v) <= MAX_KEY_LEN:
        raise TxnError(f"{what} must be 1..{MAX_KEY_LEN} bytes, got {len(v)} bytes")
    return v


def _value(v: object, what: str = "value") -> bytes:
    if type(v) is not bytes:
        raise TxnError(f"{what} must be bytes, got {type(v).__name__}")
    if len(v) > MAX_VALUE_LEN:
        raise TxnError(f"{what} must be at most {MAX_VALUE_LEN} bytes, got {len(v)} bytes")
    return v


def _int(v: object, what: str, lo: int, hi: int) -> int:
    if type(v) is not int:
        raise TxnError(f"{what} must be an integer, got {type(v).__name__}")
    if not lo <= v <= hi:
        raise TxnError(f"{what} must be in {lo}..{hi}, got {v}")
    return v


# --- numbers as the read-modify-write ops see them ------------------------------------------

_INT_RE = re.compile(rb"0|-?[1-9][0-9]{0,19}")
_FLOAT_RE = re.compile(rb"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{1,4})?")
_DEC = decimal.Context(
    prec=34, rounding=decimal.ROUND_HALF_EVEN, Emax=4932, Emin=-4951, traps=[decimal.Overflow]
)
"""The arithmetic of incr_float: decimal, 34 digits (Redis uses a C long double, about 19;
decimal is exact for the usual cases, 0.1 + 0.2 = 0.3 as Redis shows, and the same on every
replica), the range of a long double."""
_WIDE = decimal.Context(prec=6000, Emax=4932, Emin=-4951)
_PLACES = decimal.Decimal(1).scaleb(-17)


def parse_int(b: bytes) -> int | None:
    """`b` as Redis reads an integer (decimal, no sign but '-', no leading zeros, no spaces,
    in int64), or None."""
    if _INT_RE.fullmatch(b) is None:
        return None
    n = int(b)
    return n if INT64_MIN <= n <= INT64_MAX else None


def parse_decimal(b: bytes) -> decimal.Decimal | None:
    """`b` as a finite decimal number (`1`, `-2.5`, `.5`, `3e10`; no spaces, inf or nan), or
    None."""
    if len(b) > 5000 or _FLOAT_RE.fullmatch(b) is None:
        return None
    return decimal.Decimal(b.decode())


def format_decimal(d: decimal.Decimal) -> bytes:
    """As Redis prints an INCRBYFLOAT result: fixed point, at most 17 decimal places, no
    trailing zeros (`10.6`, `3`, `1e3` as `1000`)."""
    if d.as_tuple().exponent < -17:  # type: ignore[operator]
        d = d.quantize(_PLACES, context=_WIDE)
    s = format(d, "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    if s in ("-0", ""):
        s = "0"
    return s.encode()


def add_decimal(cur: bytes | None, delta: bytes) -> bytes:
    """incr_float's new value for current value `cur` (None: absent, 0); TxnError with
    NOT_A_FLOAT or NOT_FINITE."""
    a = decimal.Decimal(0) if cur is None else parse_decimal(cur)
    b = parse_decimal(delta)
    if a is None or b is None:
        raise TxnError(NOT_A_FLOAT)
    try:
        return format_decimal(_DEC.add(a, b))
    except decimal.Overflow:
        raise TxnError(NOT_FINITE) from None


def add_int(cur: bytes | None, delta: int) -> int:
    """incr's new value for current value `cur` (None: absent, 0); TxnError with
    NOT_AN_INTEGER or OVERFLOW."""
    n = 0 if cur is None else parse_int(cur)
    if n is None:
        raise TxnError(NOT_AN_INTEGER)
    out = n + delta
    if not INT64_MIN <= out <= INT64_MAX:
        raise TxnError(OVERFLOW)
    return out


# --- compares ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Compare:
    """`target` of `key` `op` `operand`: target one of TARGETS, op one of CMP_OPS; operand
    bytes for "value", an integer >= 0 for the others."""

    key: bytes
    target: str
    op: str
    operand: bytes | int

    def __post_init__(self) -> None:
        _key(self.key)
        if self.target not in TARGETS:
            raise TxnError(f"compare target must be one of {', '.join(TARGETS)}")
        if self.op not in CMP_OPS:
            raise TxnError(f"compare op must be one of {' '.join(CMP_OPS)}")
        if self.target == "value":
            _value(self.operand, "compare value")
        else:
            _int(self.operand, f"compare {self.target}", 0, (1 << 64) - 1)

    def holds(self, value: bytes | None, version: int, create: int, mod: int) -> bool:
        """Whether it holds for a key with this value (None: absent) and revisions."""
        if self.target == "value":
            if value is None:
                return False
            a: Any = value
        else:
            a = {"version": version, "create": create, "mod": mod}[self.target]
        b: Any = self.operand
        return bool(
            a == b
            if self.op == "=="
            else a != b
            if self.op == "!="
            else a < b
            if self.op == "<"
            else a > b
        )

    def to_wire(self) -> list[Any]:
        return [self.key, TARGETS.index(self.target), CMP_OPS.index(self.op), self.operand]

    @staticmethod
    def from_wire(v: object) -> Compare:
        if type(v) is not list or len(v) != 4:
            raise TxnError("a compare must be [key, target, op, operand]")
        t, o = _int(v[1], "compare target", 0, 3), _int(v[2], "compare op", 0, 3)
        return Compare(v[0], TARGETS[t], CMP_OPS[o], v[3])


# --- ops --------------------------------------------------------------------------------------


MAX_LEASE_ID = (1 << 63) - 1
"""As rkv.codec.MAX_LEASE_ID."""


@dataclass(frozen=True, slots=True)
class OpPut:
    """Put; with `lease` (non-zero) the key is attached to that lease, which must exist (the
    txn fails otherwise). A put without a lease detaches the key from any lease."""

    key: bytes
    value: bytes
    lease: int = 0

    def __post_init__(self) -> None:
        _key(self.key)
        _value(self.value)
        _int(self.lease, "lease id", 0, MAX_LEASE_ID)


@dataclass(frozen=True, slots=True)
class OpDelete:
    key: bytes

    def __post_init__(self) -> None:
        _key(self.key)


@dataclass(frozen=True, slots=True)
class OpDeletePrefix:
    """Delete every key starting with `prefix` (1..400 bytes: an empty one is refused)."""

    prefix: bytes

    def __post_init__(self) -> None:
        _key(self.prefix, "prefix")


@dataclass(frozen=True, slots=True)
class OpGet:
    key: bytes

    def __post_init__(self) -> None:
        _key(self.key)


@dataclass(frozen=True, slots=True)
class OpIncr:
    """Add `delta` to the key's integer value (absent: 0); the result is stored as decimal."""

    key: bytes
    delta: int

    def __post_init__(self) -> None:
        _key(self.key)
        _int(self.delta, "incr delta", INT64_MIN, INT64_MAX)


@dataclass(frozen=True, slots=True)
class OpIncrFloat:
    """Add the decimal number `delta` to the key's numeric value (absent: 0)."""

    key: bytes
    delta: bytes

    def __post_init__(self) -> None:
        _key(self.key)
        if type(self.delta) is not bytes or parse_decimal(self.delta) is None:
            raise TxnError(NOT_A_FLOAT)


@dataclass(frozen=True, slots=True)
class OpAppend:
    """Append `value` to the key's value (absent: empty)."""

    key: bytes
    value: bytes

    def __post_init__(self) -> None:
        _key(self.key)
        _value(self.value)


Op: TypeAlias = OpPut | OpDelete | OpDeletePrefix | OpGet | OpIncr | OpIncrFloat | OpAppend
OP_NAMES: dict[type, str] = {
    OpPut: "put",
    OpDelete: "delete",
    OpDeletePrefix: "delete_prefix",
    OpGet: "get",
    OpIncr: "incr",
    OpIncrFloat: "incr_float",
    OpAppend: "append",
}
_OP_TAGS = {cls: i for i, cls in enumerate(OP_NAMES)}
_OP_CLASSES = list(OP_NAMES)
WRITE_OPS = (OpPut, OpDelete, OpDeletePrefix, OpIncr, OpIncrFloat, OpAppend)


def op_to_wire(op: Op) -> list[Any]:
    if isinstance(op, OpPut):
        if op.lease:
            return [_OP_TAGS[OpPut], op.key, op.value, op.lease]
        return [_OP_TAGS[OpPut], op.key, op.value]
    return [_OP_TAGS[type(op)], *(getattr(op, f) for f in op.__slots__)]


def op_from_wire(v: object) -> Op:
    """An op from its wire form. TxnFromNewer for a kind above this rkv's, or for more
    fields than it knows (a newer rkv added them); TxnError for anything else wrong."""
    if type(v) is list and v and type(v[0]) is int and v[0] >= len(_OP_CLASSES):
        raise TxnFromNewer(f"an op must be [kind 0..6, fields...]: {v[0]} is of a newer rkv")
    if type(v) is not list or not v or type(v[0]) is not int or not 0 <= v[0] < len(_OP_CLASSES):
        raise TxnError("an op must be [kind 0..6, fields...]")
    cls = _OP_CLASSES[v[0]]
    n = len(cls.__slots__)  # type: ignore[attr-defined]
    least = n - 1 if cls is OpPut else n  # a put's lease is optional
    if len(v) > 1 + n:
        raise TxnFromNewer(f"a {OP_NAMES[cls]} op has {n} fields here, got {len(v) - 1}")
    if len(v) < 1 + least:
        raise TxnError(f"a {OP_NAMES[cls]} op has {least} fields, got {len(v) - 1}")
    op: Op = cls(*v[1:])
    return op


def _op_bytes(op: Op) -> int:
    return sum(len(x) for x in (getattr(op, f) for f in op.__slots__) if type(x) is bytes)


def _written(op: Op) -> bytes | None:
    if isinstance(op, OpGet | OpDeletePrefix):
        return None
    return op.key


def _check_branch(ops: tuple[Op, ...], what: str) -> None:
    if len(ops) > MAX_OPS:
        raise TxnError(f"a txn has at most {MAX_OPS} {what} ops, got {len(ops)}")
    seen: set[bytes] = set()
    prefixes = [op.prefix for op in ops if isinstance(op, OpDeletePrefix)]
    for op in ops:
        if not isinstance(op, Op):
            raise TxnError(f"{what} ops must be ops, got {type(op).__name__}")
        k = _written(op)
        if k is None:
            continue
        if k in seen:
            raise TxnError(f"key {k[:60]!r} is written twice in the {what} ops")
        if any(k.startswith(p) for p in prefixes):
            raise TxnError(f"key {k[:60]!r} is written and deleted by prefix in the {what} ops")
        seen.add(k)


@dataclass(frozen=True, slots=True)
class Txn:
    """If every compare holds, run `success` in order, else `failure`, as one write at one
    revision. A key is written at most once per branch (and not also under a delete_prefix
    of it); a get sees the writes of the ops before it."""

    compares: tuple[Compare, ...] = ()
    success: tuple[Op, ...] = ()
    failure: tuple[Op, ...] = ()

    def __post_init__(self) -> None:
        for name in ("compares", "success", "failure"):
            v = getattr(self, name)
            if type(v) is list:
                object.__setattr__(self, name, tuple(v))
            elif type(v) is not tuple:
                raise TxnError(f"txn {name} must be a list, got {type(v).__name__}")
        if len(self.compares) > MAX_COMPARES:
            raise TxnError(f"a txn has at most {MAX_COMPARES} compares, got {len(self.compares)}")
        for c in self.compares:
            if not isinstance(c, Compare):
                raise TxnError(f"compares must be Compare, got {type(c).__name__}")
        _check_branch(self.success, "success")
        _check_branch(self.failure, "failure")
        size = sum(
            len(c.key) + (len(c.operand) if type(c.operand) is bytes else 8) for c in self.compares
        ) + sum(_op_bytes(op) for op in (*self.success, *self.failure))
        if size > MAX_TXN_BYTES:
            raise TxnError(f"a txn holds at most {MAX_TXN_BYTES} bytes, got {size}")

    def to_wire(self) -> list[Any]:
        return [
            [c.to_wire() for c in self.compares],
            [op_to_wire(op) for op in self.success],
            [op_to_wire(op) for op in self.failure],
        ]

    @staticmethod
    def from_wire(compares: object, success: object, failure: object) -> Txn:
        for what, v, most in (
            ("compares", compares, MAX_COMPARES),
            ("success", success, MAX_OPS),
            ("failure", failure, MAX_OPS),
        ):
            if type(v) is not list:
                raise TxnError(f"txn {what} must be a list, got {type(v).__name__}")
            if len(v) > most:
                raise TxnError(f"a txn has at most {most} {what}, got {len(v)}")
        assert isinstance(compares, list) and isinstance(success, list)
        assert isinstance(failure, list)
        return Txn(
            tuple(Compare.from_wire(c) for c in compares),
            tuple(op_from_wire(op) for op in success),
            tuple(op_from_wire(op) for op in failure),
        )


# --- results ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyValue:
    """A get's answer: the value and its revisions (create, mod: log indexes; version: 1 on
    creation, +1 per write)."""

    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0
    """The lease the key is attached to (0: none)."""


OpResult: TypeAlias = KeyValue | bytes | int | None


@dataclass(frozen=True, slots=True)
class TxnResult:
    """Whether the compares held, the revision the txn made (its log index), and one result
    per op of the branch that ran (see the module docstring)."""

    succeeded: bool
    revision: int
    results: tuple[OpResult, ...] = ()

    def to_wire(self) -> list[Any]:
        return [
            self.succeeded,
            self.revision,
            [_kv_wire(r) if isinstance(r, KeyValue) else r for r in self.results],
        ]

    @staticmethod
    def from_wire(v: object) -> TxnResult:
        if type(v) is not list or len(v) != 3 or type(v[0]) is not bool or type(v[2]) is not list:
            raise TxnError("a txn result must be [succeeded, revision, results]")
        rev = _int(v[1], "txn revision", 0, (1 << 64) - 1)
        out: list[OpResult] = []
        for r in v[2]:
            if type(r) is list:
                if (
                    len(r) not in (4, 5)
                    or type(r[0]) is not bytes
                    or not all(type(x) is int for x in r[1:])
                ):
                    raise TxnError("a get result must be [value, create, mod, version(, lease)]")
                out.append(KeyValue(*r))
            elif r is None or type(r) in (bytes, int):
                out.append(r)
            else:
                raise TxnError(f"an op result must be nil, bytes, int or a list, got {r!r:.40}")
        return TxnResult(v[0], rev, tuple(out))


def _kv_wire(r: KeyValue) -> list[Any]:
    """A get's result: [value, create, mod, version], and the lease only when attached (a
    lease-free key's result is as before leases)."""
    out: list[Any] = [r.value, r.create_revision, r.mod_revision, r.version]
    if r.lease:
        out.append(r.lease)
    return out


def results_of(branch: Sequence[Op], result: TxnResult) -> list[tuple[Op, OpResult]]:
    """(op, its result) for the branch that ran."""
    return list(zip(branch, result.results, strict=False))
