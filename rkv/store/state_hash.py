"""The state hash: one 128-bit number that stands for a node's applied state.

Owns: what is hashed and how (`contribution`, `staged_form`), the running hash a write
transaction updates (`Running`), the from-scratch hash over a snapshot stream's records
(`hash_records`), applying a batch with the hash recorded at checkpoint indexes
(`apply_with_checkpoints`) and the bounded history of (applied index, hash) pairs a node
keeps for replica comparison (`History`).
Must not: open transactions, know LMDB (kv.py and env.py do the LMDB side, memory.py the
twin's), or look at anything but the records themselves (two replicas must compute the same
value from the same applied entries).

Definition. The state hash is the sum, modulo 2^128, of one keyed blake2b-128 per record of
the state a snapshot stream carries (snapshot.py): every record of the `kv` database (its
payload: value, create and mod index, version), of `files` (manifests, committed-upload
and upload-activity records, chunks of the oldest layout, staged and committed upload chunks)
and of `sessions` (each client's last request and result). A record counts as its database,
its key and its payload (the bytes a snapshot stream carries: kv.py layouts), except:
- a staged chunk counts as `staged_form(file key, sha256 of its data)`, whether its data is
  stored by copy or kept in its log record (the storage form depends on timing: compaction,
  a snapshot install; the data does not);
- not counted: what is derived or a storage detail: pins (`p`) and upload sums (`h`) in
  `files`, the session LRU index (`i`) in `sessions`, and meta (applied index, conf).
So two correct replicas at the same applied index agree: every counted record depends only
on the applied entries. Two caveats, both real differences: `max_sessions` must be the same
on every node (it decides which sessions are evicted; it is not configurable today), and a
failed request's error text, saved in its session, is the rkv version's wording (a
mixed-version cluster may disagree on a session after such a request).

A sum (not XOR) so that a record counted twice or dropped shows. Updates are O(1) per write:
h += H(new) - H(old). A staged chunk's H is kept per upload in its `h` sum record (kv.py), so
dropping an upload of any size costs O(1) hashing, not a re-read of its data.
Cost: about 0.6 us per blake2b of a small record on this project's machine; a put touches 2
records (4 hashes with a client session).
"""

from __future__ import annotations

import hashlib
import struct
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Protocol

from rkv.codec import SNAP_FILES, SNAP_KV, SNAP_SESSIONS, SnapshotRecord, pack
from rkv.raft.types import Entry
from rkv.store.commands import ApplyResult, StateTxn, apply_entries

MASK = (1 << 128) - 1
HASH_BYTES = 16
_U32 = struct.Struct(">I")
_KEY = b"rkv state hash v1"
_BASES = {
    SNAP_KV: hashlib.blake2b(digest_size=HASH_BYTES, key=_KEY, person=b"kv"),
    SNAP_FILES: hashlib.blake2b(digest_size=HASH_BYTES, key=_KEY, person=b"files"),
    SNAP_SESSIONS: hashlib.blake2b(digest_size=HASH_BYTES, key=_KEY, person=b"sessions"),
}

CHECKPOINT_EVERY = 64
"""Every applied index divisible by this gets its hash recorded (mid-batch too): all nodes
record the same indexes whatever their apply batches, so a comparison finds common ones."""
HISTORY = 256
"""Checkpoints a node keeps (in memory): CHECKPOINT_EVERY * HISTORY = 16,384 entries of
history, more than a follower lags behind under load (docs/runtime.md)."""

Delta = tuple[int, bytes, int, bool]
"""(database code, key, change of the hash, range): a change to the record at (db, key), or
with range=True to every record whose key starts with `key` (an upload's staged chunks)."""


def contribution(db: int, key: bytes, payload: bytes) -> int:
    """H(record): what one record adds to the state hash."""
    h = _BASES[db].copy()
    h.update(_U32.pack(len(key)) + key + payload)  # one update: cheaper than three
    return int.from_bytes(h.digest(), "big")


def staged_form(file_key: bytes, data: bytes) -> bytes:
    """What a staged chunk counts as (its file key and the sha256 of its data)."""
    return pack([file_key, hashlib.sha256(data).digest()])


def counted(db: int, key: bytes) -> bool:
    """Whether a record of database `db` counts (see the module docstring)."""
    if db == SNAP_FILES:
        return key[:1] not in (b"p", b"h")
    if db == SNAP_SESSIONS:
        return key[:1] != b"i"
    return True


def to_bytes(h: int) -> bytes:
    return h.to_bytes(HASH_BYTES, "big")


def from_bytes(b: bytes) -> int:
    return int.from_bytes(b, "big")


def hex_of(h: int) -> str:
    return to_bytes(h).hex()


class Running:
    """The running hash of one write transaction, and (while a scrub tracks changes) the
    list of changes it made (`deltas`, see rkv.store.scrub)."""

    __slots__ = ("deltas", "value")

    def __init__(self, value: int, track: bool = False) -> None:
        self.value = value
        self.deltas: list[Delta] | None = [] if track else None

    def change(self, db: int, key: bytes, old: bytes | None, new: bytes | None) -> int:
        """The record (db, key) goes from payload `old` to `new` (None: absent). Returns
        the change of the hash."""
        d = 0
        if old is not None:
            d -= contribution(db, key, old)
        if new is not None:
            d += contribution(db, key, new)
        self.add(db, key, d)
        return d

    def add(self, db: int, key: bytes, d: int, *, prefix: bool = False) -> None:
        self.value = (self.value + d) & MASK
        if self.deltas is not None and d:
            self.deltas.append((db, key, d, prefix))


def hash_records(records: Iterable[SnapshotRecord]) -> int:
    """The state hash of a snapshot stream's records (payloads; staged chunks by copy)."""
    from rkv.store.kv import decode_staged  # layouts live in kv.py, which imports us

    h = 0
    for db, k, v in records:
        if not counted(db, k):
            continue
        if db == SNAP_FILES and k[:1] == b"s":
            key, data = decode_staged(v)
            v = staged_form(key, data)
        h += contribution(db, k, v)
    return h & MASK


class HashedTxn(StateTxn, Protocol):
    """A StateTxn that also keeps the running state hash (both stores' transactions)."""

    running: Running


def apply_with_checkpoints(
    txn: HashedTxn, entries: Sequence[Entry], max_sessions: int
) -> tuple[list[ApplyResult], list[tuple[int, int]]]:
    """apply_entries, split at the checkpoint indexes; returns the results and the
    (index, hash) of each checkpoint crossed."""
    results: list[ApplyResult] = []
    marks: list[tuple[int, int]] = []
    start = 0
    for i, e in enumerate(entries):
        if e.index % CHECKPOINT_EVERY == 0:
            results += apply_entries(txn, entries[start : i + 1], max_sessions)
            marks.append((e.index, txn.running.value))
            start = i + 1
    if start < len(entries):
        results += apply_entries(txn, entries[start:], max_sessions)
    return results, marks


class History:
    """The (applied index, hash) pairs a node can be compared at: the checkpoints of the last
    HISTORY * CHECKPOINT_EVERY entries, and the current one. In memory only: after a restart
    it holds the stored current pair. Thread-safe (applies may run in a worker thread)."""

    def __init__(self, index: int, value: int, size: int = HISTORY) -> None:
        self._lock = threading.Lock()
        self._marks: deque[tuple[int, int]] = deque(maxlen=size)
        self._current = (index, value)

    def applied(self, marks: Iterable[tuple[int, int]], index: int, value: int) -> None:
        """A committed apply crossed checkpoints `marks` and ended at (index, value)."""
        with self._lock:
            self._marks.extend(marks)
            self._current = (index, value)

    def reset(self, index: int, value: int) -> None:
        """The state was replaced (a snapshot install) or its hash corrected."""
        with self._lock:
            self._marks.clear()
            self._current = (index, value)

    def shift(self, delta: int) -> None:
        """The hash was corrected by `delta` (env.LmdbStore.correct_state_hash): every pair
        held moves with it, so none keeps standing for records the node does not hold."""
        with self._lock:
            self._marks = deque(
                ((i, (h + delta) & MASK) for i, h in self._marks), self._marks.maxlen
            )
            i, h = self._current
            self._current = (i, (h + delta) & MASK)

    def current(self) -> tuple[int, int]:
        with self._lock:
            return self._current

    def pairs(self) -> list[tuple[int, int]]:
        """Every pair held, oldest first; the current one last (it wins over a checkpoint
        at the same index: a correction is newer)."""
        with self._lock:
            out = dict(self._marks)
            out.pop(self._current[0], None)
            out[self._current[0]] = self._current[1]
            return sorted(out.items())
