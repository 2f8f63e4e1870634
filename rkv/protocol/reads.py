"""The read replies of the client protocol (rkv.protocol): a get's and a scan's answers, and
KeyRecord, the record a read with `meta` returns for each key.

A get with `meta` answers `rec`: [create, mod, version, lease] (nil: the key is absent) next
to `val`; a scan with `meta` answers each item as [key, value, create, mod, version, lease]
instead of [key, value]. Without `meta` the replies are as before (no `rec`, pairs).

Owns: ValueReply, ScanReply, KeyRecord and the record's wire form. Must not: build requests
or read the store.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rkv.codec import MAX_LEASE_ID, MAX_U64, MAX_VALUE_LEN
from rkv.protocol.fields import BadReply, Frame, _bytes, _optional, _type_name
from rkv.protocol.replies import _ok, _reply_field, _rev, _with_rev
from rkv.txn import KeyValue

_VALUE_OR_NIL = _optional(_bytes(0, MAX_VALUE_LEN))


@dataclass(frozen=True, slots=True)
class KeyRecord(KeyValue):
    """A key as a read with `meta` returns it: a KeyValue (value, create and mod revisions,
    version, the lease the key is attached to: 0 none), with its wire form."""

    def meta(self) -> list[int]:
        """The record's wire form without the value: [create, mod, version, lease]."""
        return [self.create_revision, self.mod_revision, self.version, self.lease]

    @classmethod
    def from_meta(cls, value: bytes, meta: object, what: str) -> KeyRecord:
        """The record of `value` and its wire form `meta`; BadReply if `meta` does not fit."""
        if (
            type(meta) is not list
            or len(meta) != 4
            or not all(type(x) is int and 0 <= x <= MAX_U64 for x in meta)
            or meta[3] > MAX_LEASE_ID
        ):
            raise BadReply(f"{what} reply: a record must be [create, mod, version, lease]")
        return cls(value, meta[0], meta[1], meta[2], meta[3])


@dataclass(frozen=True, slots=True)
class ValueReply:
    """A get's answer: the value, None if the key is absent; `rev`: the store's revision (its
    applied index) the value was read at; `record`: with `meta`, the key's record (None:
    absent) and `meta` True (a reply without `rec` has `meta` False)."""

    value: bytes | None
    rev: int | None = None
    record: KeyRecord | None = None
    meta: bool = False

    def to_frame(self) -> Frame:
        frame = _with_rev({"t": "ok", "val": self.value}, self.rev)
        if self.meta:
            frame["rec"] = None if self.record is None else self.record.meta()
        return frame

    @classmethod
    def from_frame(cls, frame: Mapping[str, Any]) -> ValueReply:
        _ok(frame, "get")
        value = _reply_field(frame, "val", _VALUE_OR_NIL, "get")
        rev = _rev(frame, "get")
        if "rec" not in frame:
            return cls(value, rev)
        raw = frame["rec"]
        if raw is None or value is None:
            if raw is not None or value is not None:
                raise BadReply("get reply: 'rec' and 'val' must both be nil or neither")
            return cls(None, rev, None, True)
        return cls(value, rev, KeyRecord.from_meta(value, raw, "get"), True)


@dataclass(frozen=True, slots=True)
class ScanReply:
    """A scan's answer: (key, value) pairs in key order; `rev`: the store's revision (its
    applied index) they were read at; `records`: with `meta`, each key's record (in the
    pairs' order; None: a reply of pairs)."""

    items: tuple[tuple[bytes, bytes], ...]
    rev: int | None = None
    records: tuple[KeyRecord, ...] | None = None

    def to_frame(self) -> Frame:
        items: list[list[bytes | int]]
        if self.records is None:
            items = [[k, v] for k, v in self.items]
        else:
            items = [[k, v, *r.meta()] for (k, v), r in zip(self.items, self.records, strict=True)]
        return _with_rev({"t": "ok", "items": items}, self.rev)

    @classmethod
    def from_frame(cls, frame: Mapping[str, Any]) -> ScanReply:
        _ok(frame, "scan")
        raw = frame.get("items")
        if type(raw) is not list:
            raise BadReply(f"scan reply: field 'items' must be a list, got {_type_name(raw)}")
        items: list[tuple[bytes, bytes]] = []
        records: list[KeyRecord] = []
        width = len(raw[0]) if raw and type(raw[0]) is list else 2
        for i, p in enumerate(raw):
            if (
                type(p) is not list
                or len(p) != width
                or width not in (2, 6)
                or type(p[0]) is not bytes
                or type(p[1]) is not bytes
            ):
                raise BadReply(
                    f"scan reply: item {i} of 'items' must be [key bytes, value bytes] "
                    "or [key, value, create, mod, version, lease] (all alike)"
                )
            items.append((p[0], p[1]))
            if width == 6:
                records.append(KeyRecord.from_meta(p[1], p[2:], "scan"))
        return cls(tuple(items), _rev(frame, "scan"), tuple(records) if width == 6 else None)
