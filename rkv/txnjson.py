"""The JSON form of a transaction and of its result: `rkv txn` and `POST /v1/txn` share it.

Owns: reading a txn from decoded JSON (with a precise one-line error naming the place, e.g.
`success[1].op: must be one of put, delete, ...`) and writing a TxnResult as JSON. Must not:
import from rkv anything but rkv.txn, or do I/O.

Shape (docs/contracts.md, "Transactions as JSON"):

    {"compare": [{"key": "k", "target": "value", "op": "==", "value": "v"},
                 {"key": "n", "target": "version", "op": ">", "number": 0},
                 {"key": "lock", "target": "absent"}],
     "success": [{"op": "put", "key": "k", "value": "v2"}, {"op": "get", "key": "n"}],
     "failure": [{"op": "get", "key": "k"}]}

Targets: value (operand `value`), version, create, mod (operand `number`: revisions are log
indexes), and the shorthands exists / absent (no op, no operand: version > 0 / == 0). Ops:
put (key, value), delete (key), delete_prefix (prefix), get (key), incr (key, `by` integer,
default 1), incr_float (key, `by` a decimal number as a string or a number), append (key,
value). Every key, value and prefix is a UTF-8 string, or base64 in a field named with a
`_b64` suffix instead (`key_b64`, `value_b64`, `prefix_b64`). All three lists are optional.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from rkv.txn import (
    CMP_OPS,
    OP_NAMES,
    Compare,
    KeyValue,
    Op,
    OpAppend,
    OpDelete,
    OpDeletePrefix,
    OpGet,
    OpIncr,
    OpIncrFloat,
    OpPut,
    Txn,
    TxnError,
    TxnResult,
)

_TARGETS = ("value", "version", "create", "mod", "exists", "absent")
_OPS = tuple(OP_NAMES.values())
_OP_FIELDS = {
    "put": ("key", "value"),
    "delete": ("key",),
    "delete_prefix": ("prefix",),
    "get": ("key",),
    "incr": ("key", "by"),
    "incr_float": ("key", "by"),
    "append": ("key", "value"),
}


class TxnJsonError(ValueError):
    """A JSON txn that does not fit: the message names the place."""


def _bytes_field(obj: dict[str, Any], name: str, where: str, *, required: bool = True) -> bytes:
    plain, b64 = obj.get(name), obj.get(name + "_b64")
    if plain is not None and b64 is not None:
        raise TxnJsonError(f"{where}: give {name} or {name}_b64, not both")
    if b64 is not None:
        if type(b64) is not str:
            raise TxnJsonError(f"{where}.{name}_b64: must be a base64 string")
        try:
            return base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise TxnJsonError(f"{where}.{name}_b64: not valid base64") from None
    if plain is None:
        if required:
            raise TxnJsonError(f"{where}: {name} (or {name}_b64) is missing")
        return b""
    if type(plain) is not str:
        raise TxnJsonError(f"{where}.{name}: must be a string (or use {name}_b64)")
    return plain.encode()


def _check_fields(obj: object, allowed: set[str], where: str) -> dict[str, Any]:
    if type(obj) is not dict:
        raise TxnJsonError(f"{where}: must be an object")
    extra = sorted(set(obj) - allowed)
    if extra:
        raise TxnJsonError(f"{where}: unknown field {extra[0]!r}")
    return obj


def _compare(obj: object, where: str) -> Compare:
    c = _check_fields(
        obj, {"key", "key_b64", "target", "op", "value", "value_b64", "number"}, where
    )
    key = _bytes_field(c, "key", where)
    target = c.get("target")
    if target not in _TARGETS:
        raise TxnJsonError(f"{where}.target: must be one of {', '.join(_TARGETS)}")
    if target in ("exists", "absent"):
        if {"op", "value", "value_b64", "number"} & set(c):
            raise TxnJsonError(f"{where}: target {target} takes no op or operand")
        return Compare(key, "version", ">" if target == "exists" else "==", 0)
    op = c.get("op")
    if op not in CMP_OPS:
        raise TxnJsonError(f"{where}.op: must be one of {' '.join(CMP_OPS)}")
    if target == "value":
        if "number" in c:
            raise TxnJsonError(f"{where}: a value compare takes value (or value_b64)")
        return Compare(key, "value", op, _bytes_field(c, "value", where))
    n = c.get("number")
    if {"value", "value_b64"} & set(c) or type(n) is not int or n < 0:
        raise TxnJsonError(f"{where}.number: a {target} compare takes an integer >= 0")
    return Compare(key, target, op, n)


def _op(obj: object, where: str) -> Op:
    if type(obj) is not dict:
        raise TxnJsonError(f"{where}: must be an object")
    name = obj.get("op")
    if name not in _OP_FIELDS:
        raise TxnJsonError(f"{where}.op: must be one of {', '.join(_OPS)}")
    fields = _OP_FIELDS[name]
    allowed = {"op"} | {f for f in fields if f != "by"}
    allowed |= {f + "_b64" for f in fields if f != "by"}
    if "by" in fields:
        allowed.add("by")
    o = _check_fields(obj, allowed, where)
    if name == "delete_prefix":
        return OpDeletePrefix(_bytes_field(o, "prefix", where))
    key = _bytes_field(o, "key", where)
    if name == "put":
        return OpPut(key, _bytes_field(o, "value", where))
    if name == "append":
        return OpAppend(key, _bytes_field(o, "value", where))
    if name == "delete":
        return OpDelete(key)
    if name == "get":
        return OpGet(key)
    by = o.get("by", 1)
    if name == "incr":
        if type(by) is not int:
            raise TxnJsonError(f"{where}.by: must be an integer")
        return OpIncr(key, by)
    if type(by) not in (int, float, str):
        raise TxnJsonError(f"{where}.by: must be a decimal number (or a string of one)")
    return OpIncrFloat(key, str(by).encode())


def txn_from_json(doc: object) -> Txn:
    """The Txn a decoded JSON document describes; TxnJsonError naming the place otherwise
    (also for a txn over rkv.txn's bounds)."""
    d = _check_fields(doc, {"compare", "success", "failure"}, "txn")
    parts: dict[str, list[Any]] = {}
    for name in ("compare", "success", "failure"):
        v = d.get(name, [])
        if type(v) is not list:
            raise TxnJsonError(f"{name}: must be a list")
        parts[name] = v
    try:
        compares = [_compare(c, f"compare[{i}]") for i, c in enumerate(parts["compare"])]
        success = [_op(o, f"success[{i}]") for i, o in enumerate(parts["success"])]
        failure = [_op(o, f"failure[{i}]") for i, o in enumerate(parts["failure"])]
        return Txn(tuple(compares), tuple(success), tuple(failure))
    except TxnError as e:
        raise TxnJsonError(str(e)) from None


def txn_from_text(text: str | bytes) -> Txn:
    """`txn_from_json` of a JSON text; TxnJsonError for text that is not JSON."""
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TxnJsonError(f"not valid JSON: {e}") from None
    return txn_from_json(doc)


def _put_bytes(out: dict[str, Any], name: str, b: bytes) -> None:
    try:
        out[name] = b.decode("utf-8")
    except UnicodeDecodeError:
        out[name + "_b64"] = base64.b64encode(b).decode()


def result_to_json(branch: tuple[Op, ...], r: TxnResult) -> dict[str, Any]:
    """The JSON form of a txn's result: {"succeeded", "revision", "results": [one object per
    op of the branch that ran]} (`branch`: that branch's ops, to name them)."""
    results: list[dict[str, Any]] = []
    for op, res in zip(branch, r.results, strict=False):
        name = OP_NAMES[type(op)]
        item: dict[str, Any] = {"op": name}
        if isinstance(op, OpGet):
            _put_bytes(item, "key", op.key)
            item["found"] = res is not None
            if isinstance(res, KeyValue):
                _put_bytes(item, "value", res.value)
                item["create_revision"] = res.create_revision
                item["mod_revision"] = res.mod_revision
                item["version"] = res.version
                if res.lease:
                    item["lease"] = res.lease
        elif isinstance(op, OpDelete | OpDeletePrefix):
            item["deleted"] = res
        elif isinstance(op, OpIncr):
            item["value"] = res
        elif isinstance(op, OpIncrFloat):
            assert type(res) is bytes
            item["value"] = res.decode()
        elif isinstance(op, OpAppend):
            item["length"] = res
        results.append(item)
    return {"succeeded": r.succeeded, "revision": r.revision, "results": results}
