"""The Raft log in LMDB: key layout, range reads, suffix replacement, compaction.

Owns: the `log` database (big-endian u64 index -> codec.encode_entry bytes) and the checks
every store (LMDB and memory) applies to a save: contiguous entries, no gap after the last
index, nothing at or below the snapshot.
Must not: open environments or transactions (env.py owns them) or know the state machine.
"""

from __future__ import annotations

import struct
from collections.abc import Container, Sequence
from typing import TYPE_CHECKING

from rkv.codec import CodecError, decode_entry, encode_entry
from rkv.raft.types import Entry, Snapshot
from rkv.store.errors import CorruptionError, StoreError

if TYPE_CHECKING:
    import lmdb

_U64 = struct.Struct(">Q")


def index_key(index: int) -> bytes:
    return _U64.pack(index)


def key_index(key: bytes) -> int:
    if len(key) != 8:
        raise CorruptionError(f"log key of {len(key)} bytes")
    return int(_U64.unpack(key)[0])


def decode_stored_entry(index: int, value: bytes) -> Entry:
    try:
        e = decode_entry(value)
    except CodecError as err:
        raise CorruptionError(f"log entry {index}: {err}") from err
    if e.index != index:
        raise CorruptionError(f"log entry stored under {index} says index {e.index}")
    return e


def read_entry(txn: lmdb.Transaction[bytes], db: lmdb._Database, index: int) -> Entry:
    value = txn.get(index_key(index), db=db)
    if value is None:
        raise CorruptionError(f"log entry {index} is missing")
    return decode_stored_entry(index, value)


def read_entries(
    txn: lmdb.Transaction[bytes],
    db: lmdb._Database,
    lo: int,
    hi: int,
    max_bytes: int | None,
) -> list[Entry]:
    """Entries [lo, hi) with a cursor; the caller checked the bounds. A hole is corruption."""
    out: list[Entry] = []
    if lo >= hi:
        return out
    size = 0
    expect = lo
    cur = txn.cursor(db=db)
    if cur.set_key(index_key(lo)):
        for k, v in cur.iternext():
            index = key_index(k)
            if index >= hi:
                break
            if index != expect:
                raise CorruptionError(f"log hole: expected entry {expect}, found {index}")
            e = decode_stored_entry(index, v)
            size += e.size()
            if out and max_bytes is not None and size > max_bytes:
                return out
            out.append(e)
            expect += 1
    if expect != hi:
        raise CorruptionError(f"log entry {expect} is missing")
    return out


def delete_from(
    txn: lmdb.Transaction[bytes],
    db: lmdb._Database,
    index: int,
    keep: Container[bytes] = frozenset(),
) -> None:
    """Delete every entry with index >= `index`, except the records whose keys are in `keep`
    (pinned: see kv.py, staged chunks kept in the log)."""
    cur = txn.cursor(db=db)
    if cur.set_range(index_key(index)):
        _delete_run(cur, None, keep)


def delete_through(
    txn: lmdb.Transaction[bytes],
    db: lmdb._Database,
    index: int,
    keep: Container[bytes] = frozenset(),
) -> None:
    """Delete every entry with index <= `index`, except the records whose keys are in `keep`."""
    cur = txn.cursor(db=db)
    if cur.first():
        _delete_run(cur, index_key(index), keep)


def _delete_run(cur: lmdb.Cursor[bytes], end: bytes | None, keep: Container[bytes]) -> None:
    """From the cursor's record on, delete each record up to key `end` (None: the last one)
    whose key is not in `keep`. A delete moves the cursor to the next record."""
    while True:
        k = cur.key()
        if not k or (end is not None and k > end):
            return
        if k in keep:
            if not cur.next():
                return
        elif not cur.delete():
            return


def append(txn: lmdb.Transaction[bytes], db: lmdb._Database, entries: Sequence[Entry]) -> None:
    """Write entries that sort after everything stored (the caller deleted the suffix)."""
    cur = txn.cursor(db=db)
    for e in entries:
        if not cur.put(index_key(e.index), encode_entry(e), append=True):
            raise StoreError(f"log append of {e.index} refused")  # pragma: no cover


# --- checks shared by both stores ------------------------------------------------------------


def check_snapshot(current: Snapshot, new: Snapshot) -> None:
    if new.meta.index < current.meta.index:
        raise StoreError(
            f"snapshot at {new.meta.index} is older than the stored one at {current.meta.index}"
        )


def check_entries(entries: Sequence[Entry], first: int, last: int) -> None:
    """entries must be contiguous, start after the snapshot and not leave a gap after `last`."""
    start = entries[0].index
    if start < first:
        raise StoreError(f"entries start at {start}, at or below the snapshot (first is {first})")
    if start > last + 1:
        raise StoreError(f"entries start at {start}, leaving a gap after last index {last}")
    for i, e in enumerate(entries):
        if e.index != start + i:
            raise StoreError(f"entries not contiguous at position {i}: index {e.index}")


def check_limit(limit: int) -> None:
    if limit < 0:
        raise ValueError(f"scan limit must be >= 0, got {limit}")
