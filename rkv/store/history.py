"""The durable watch history: the changes committed applies made, kept in the LMDB environment
so that a watch can resume from a revision it saw before a restart (docs/contracts.md, Watch).

Owns: the history database's record format (ONE record per apply transaction that changed
something; key: the revision of its first change, 8-byte big-endian; value: sealed (rkv.store.seal:
a crc32 over key and payload) payload of a 12-byte header (changes, bytes, span: last revision -
first) then msgpack of the changes as compact tuples: a record whose bytes changed is never
served, its read raises IntegrityError),
its meta record (in the store's meta database: the first revision held whole and the totals
the trim needs, so an open reads one small record and never the history), and the operations
on them, each inside the caller's transaction: `append` (in the apply transaction, trimming
whole records, oldest first, once past the bounds: amortized, several at a time, rarely),
`reset` (a snapshot install: what came before is unknown), `read` (a bounded range).
The bytes of a change are counted as the watch hub counts what it holds (`held_size`), so the
two keep the same bounds.

Must not: know about watches, polls or the wire; open or commit a transaction; import lmdb at
run time (the watch hub imports `held_size` and `HistoryRead` from here).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rkv.codec import CodecError, pack, unpack
from rkv.store.commands import Change
from rkv.store.errors import CorruptionError
from rkv.store.seal import HISTORY as SEAL_DB
from rkv.store.seal import SEAL_BYTES, seal, unseal

if TYPE_CHECKING:
    import lmdb

DB_NAME = b"watch_history"
"""The named LMDB database of the records."""
META_KEY = b"watch_history"
"""The meta record's key in the store's meta database."""
KINDS = ("put", "delete", "file_commit", "file_delete")
"""A change's kind, stored as its position here."""
_KIND_CODE = {k: i for i, k in enumerate(KINDS)}
_KEY = struct.Struct(">Q")
_HEADER = struct.Struct(">III")
_META = struct.Struct(">QQQ")
_U32_MAX = 0xFFFFFFFF
_TRIM_SLACK = 64
"""A trim by count waits until the excess passes max(this, changes // 8) (as the hub's)."""


@dataclass(frozen=True, slots=True)
class Bounds:
    """How much history is kept: about `changes` changes and `bytes` bytes (held_size)."""

    changes: int = 100_000
    bytes: int = 64 << 20

    def __post_init__(self) -> None:
        if self.changes < 1 or self.bytes < 1:
            raise ValueError(f"history bounds must be >= 1, got {self.changes}, {self.bytes}")


@dataclass(frozen=True, slots=True)
class Meta:
    """The first revision held whole (every change from it on is held), and the totals."""

    first: int
    changes: int = 0
    bytes: int = 0


@dataclass(frozen=True, slots=True)
class HistoryRead:
    """What a read found: the changes after the asked revision in revision order, whole
    revisions, complete through `through` (no change between the last one and it is missing);
    `first` as of the read (below it the history holds nothing)."""

    first: int
    changes: tuple[Change, ...]
    through: int


def held_size(c: Change) -> int:
    """What a held change costs, about (its bytes and the objects around them)."""
    return len(c.key) + len(c.value or b"") + len(c.prev or b"") + 100


# -- the record codec ---------------------------------------------------------------------------


def encode_batch(changes: Sequence[Change]) -> bytes:
    """One record's stored value: sealed, the header, then [revision - first, kind, key, value,
    prev] per change. `changes` is not empty and in revision order."""
    payload = _encode(changes)[0]
    return seal(_KEY.pack(changes[0].revision), payload)


def _encode(changes: Sequence[Change]) -> tuple[bytes, int, int]:
    """The record's payload (unsealed), its change count and its bytes (held_size)."""
    first = changes[0].revision
    items = []
    size = 0
    for c in changes:
        k, v, p = c.key, c.value, c.prev
        size += len(k) + (len(v) if v else 0) + (len(p) if p else 0) + 100  # held_size
        items.append((c.revision - first, _KIND_CODE[c.kind], k, v, p))
    n, span = len(items), changes[-1].revision - first
    return _HEADER.pack(n, min(size, _U32_MAX), span) + pack(items), n, size


def decode_header(raw: bytes) -> tuple[int, int, int]:
    """A stored record's (changes, bytes, span), without checking its seal or decoding its
    changes (what the trim and the read's record walk need)."""
    if len(raw) < SEAL_BYTES + _HEADER.size:
        raise CorruptionError("watch history: short record")
    n, size, span = _HEADER.unpack_from(raw, SEAL_BYTES)
    return n, size, span


def decode_batch(first: int, raw: bytes) -> list[Change]:
    """The changes of the stored record at key `first`. Raises IntegrityError when it fails
    its seal, CorruptionError when it does not decode."""
    payload = unseal(SEAL_DB, _KEY.pack(first), raw)
    n, _, span = decode_header(raw)
    try:
        items = unpack(memoryview(payload)[_HEADER.size :], max_array_len=max(n, 5))
    except CodecError as e:
        raise CorruptionError(f"watch history record {first}: {e}") from e
    if type(items) is not list or len(items) != n:
        raise CorruptionError(f"watch history record {first}: not {n} changes")
    out = []
    for it in items:
        out.append(_change(first, it))
    if out and out[-1].revision != first + span:
        raise CorruptionError(f"watch history record {first}: span does not match")
    return out


def _change(first: int, it: Any) -> Change:
    try:
        delta, code, key, value, prev = it
        ok = (
            type(delta) is int
            and delta >= 0
            and type(code) is int
            and 0 <= code < len(KINDS)
            and type(key) is bytes
            and (value is None or type(value) is bytes)
            and (prev is None or type(prev) is bytes)
        )
        kind = KINDS[code] if ok else ""
    except (TypeError, ValueError, IndexError):
        ok = False
    if not ok:
        raise CorruptionError(f"watch history record {first}: bad change {it!r:.80}")
    return Change(first + delta, kind, key, value, prev)


def read_meta(txn: lmdb.Transaction[bytes], meta_db: lmdb._Database, applied: int) -> Meta:
    """The meta record; without one (a store from before the history, or one that never
    applied a change) nothing is held and the first revision is the one after `applied`."""
    raw = txn.get(META_KEY, db=meta_db)
    if raw is None:
        return Meta(applied + 1)
    if len(raw) != _META.size:
        raise CorruptionError("watch history: bad meta record")
    return Meta(*_META.unpack(raw))


# -- writes: inside the apply (or install) transaction ------------------------------------------


def append(
    txn: lmdb.Transaction[bytes],
    db: lmdb._Database,
    meta_db: lmdb._Database,
    meta: Meta,
    changes: Sequence[Change],
    bounds: Bounds,
) -> Meta:
    """Record the changes of one apply transaction as one record, then trim past the bounds.
    `meta` is the meta record as committed (the caller keeps it: no read here). Returns the
    new one, written too. A batch is written with the applied index in one transaction: a
    power loss undoes both, and the apply run again writes the same record."""
    if not changes:
        return meta
    payload, n, size = _encode(changes)
    key = _KEY.pack(changes[0].revision)
    raw = seal(key, payload)
    if not txn.put(key, raw, db=db, append=True):  # the newest key: appended, no search
        txn.put(key, raw, db=db)  # a key not past the last (not expected)
    count, size = meta.changes + n, meta.bytes + size
    first = meta.first
    if count - bounds.changes > max(_TRIM_SLACK, bounds.changes // 8) or size > bounds.bytes:
        first, count, size = _trim(txn, db, first, count, size, bounds)
    txn.put(META_KEY, _META.pack(first, count, size), db=meta_db)
    return Meta(first, count, size)


def _trim(
    txn: lmdb.Transaction[bytes],
    db: lmdb._Database,
    first: int,
    count: int,
    size: int,
    bounds: Bounds,
) -> tuple[int, int, int]:
    """Drop whole records, oldest first: down to `bounds.changes` changes once the excess
    passes an eighth of it (or 64), and to 7/8 of `bounds.bytes` once over it (the caller
    checked that one of them is). Returns the new (first, count, size)."""
    over_count = count - bounds.changes > max(_TRIM_SLACK, bounds.changes // 8)
    count_to = bounds.changes if over_count else count
    bytes_to = bounds.bytes * 7 // 8 if size > bounds.bytes else size
    cur = txn.cursor(db=db)
    more = cur.first()
    while more and (count > count_to or size > bytes_to):
        n, b, span = decode_header(cur.value())
        first = max(first, _KEY.unpack(cur.key())[0] + span + 1)
        count, size = count - n, size - b
        more = cur.delete()
    return first, max(count, 0), max(size, 0)


def reset(
    txn: lmdb.Transaction[bytes], db: lmdb._Database, meta_db: lmdb._Database, index: int
) -> int:
    """The state was replaced at `index` (a snapshot install): drop every record, hold from
    the next revision on. Returns that first revision."""
    txn.drop(db, delete=False)
    txn.put(META_KEY, _META.pack(index + 1, 0, 0), db=meta_db)
    return index + 1


# -- reads -------------------------------------------------------------------------------------


def read(
    txn: lmdb.Transaction[bytes],
    db: lmdb._Database,
    meta_db: lmdb._Database,
    applied: int,
    after: int,
    top: int,
    max_bytes: int,
) -> HistoryRead:
    """The changes of revisions after `after` up to `top`, whole records, stopping after the
    record that takes them past `max_bytes` (held_size). Below `first` nothing is read (the
    caller sees `after + 1 < first`)."""
    m = read_meta(txn, meta_db, applied)
    if after + 1 < m.first:
        return HistoryRead(m.first, (), after)
    out: list[Change] = []
    size = 0
    through = top
    for first, raw in _records_from(txn.cursor(db=db), after):
        if first > top:
            break
        batch_bytes, span = decode_header(raw)[1:]
        out.extend(c for c in decode_batch(first, raw) if after < c.revision <= top)
        size += batch_bytes
        if size >= max_bytes:
            through = min(first + span, top)
            break
    return HistoryRead(m.first, tuple(out), max(through, after))


def _records_from(cur: lmdb.Cursor[bytes], after: int) -> Iterator[tuple[int, bytes]]:
    """The records that hold revisions after `after`, in order: the one starting at or before
    it, if it reaches past it, then every later one."""
    start = _KEY.pack(after + 1)
    at = cur.set_range(start)
    if not (at and cur.key() == start):
        back = cur.prev() if at else cur.last()
        if back:
            first = _KEY.unpack(cur.key())[0]
            if first + decode_header(cur.value())[2] > after:
                yield first, cur.value()
        at = cur.set_range(start)
    while at:
        yield _KEY.unpack(cur.key())[0], cur.value()
        at = cur.next()
