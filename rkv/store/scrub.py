"""Reading a whole state-machine generation: scrub passes and the from-scratch state hash.

Owns: `rebuild_state_hash` (the state hash of a generation computed from its records, and its
upload sums rewritten: schema upgrades, installs of a snapshot staged before schema 3),
`read_chunk` (one bounded piece of a scrub pass: every record's seal checked, a staged
chunk's data read and checked wherever it is kept, each counted record hashed) and the
consistency of a pass read in many short transactions (`Tracker`, `PassState`).
Must not: open or commit transactions, or pace itself (env.py runs each piece in one read
transaction; the node's scrub task decides the rate).

Why many short transactions: while an LMDB read transaction is open, no page freed after it
began can be reused, so a pass held open for minutes under writes would grow the data file
by everything written meanwhile. A pass therefore reads in pieces of at most a few hundred
records, each in its own read transaction, resuming after the last key read. Its hash is
still exact: it is the sum of what each piece read (at that piece's applied index) plus
every change applied since to a record the pass had already read. The store hands each
apply transaction's changes (state_hash.Delta, in commit order, with their index) to the
pass's `Tracker` while a pass is open; before using a piece read at applied index A, the
pass adds the changes of indexes up to A to records at or before its previous position.
At the end, the sum is the hash of the state as of the last piece's transaction, compared
with the running hash stored in that same transaction. A snapshot install (the state is
replaced) or a drop of an upload whose staged chunks straddle the pass position makes the
pass's hash unusable: the pass goes on checking seals and reports its hash "skipped".
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from rkv.codec import SNAP_FILES, SNAP_KV, SNAP_SESSIONS
from rkv.store import state_hash as sh
from rkv.store.errors import CorruptionError, IntegrityError
from rkv.store.kv import (
    Dbs,
    decode_staged_any,
    decode_upload_sum,
    staged_data,
    upload_sum_key,
)
from rkv.store.seal import FILES, KV, SEAL_BYTES, SESSIONS, describe, seal, unseal

if TYPE_CHECKING:
    import lmdb

Position = tuple[int, bytes]
"""(database code, key) of the last record read; START is before every record."""
START: Position = (-1, b"")
_NAMES = {SNAP_KV: KV, SNAP_FILES: FILES, SNAP_SESSIONS: SESSIONS}
DELIVERY_WAIT = 10.0
"""Longest a piece waits for the changes of an apply that committed before it was read."""


def _dbs(d: Dbs) -> tuple[tuple[int, lmdb._Database], ...]:
    return ((SNAP_KV, d.kv), (SNAP_FILES, d.files), (SNAP_SESSIONS, d.sessions))


def _records(
    txn: lmdb.Transaction[bytes], d: Dbs, after: Position
) -> Iterator[tuple[int, bytes, bytes]]:
    """(db code, key, stored value) of every record after `after`, in pass order."""
    for code, db in _dbs(d):
        if code < after[0]:
            continue
        cur = txn.cursor(db=db)
        if code == after[0] and after[1]:
            found = cur.set_range(after[1])
            if found and cur.key() == after[1]:
                found = cur.next()
        else:
            found = cur.first()
        while found:
            k, v = cur.item()
            yield code, k, v
            found = cur.next()


def rebuild_state_hash(txn: lmdb.Transaction[bytes], d: Dbs) -> int:
    """The state hash of generation `d` from its records, rewriting its upload sums.

    Records are taken as stored, seals unchecked (a damaged record is counted as it is:
    the hash then differs from the other replicas', which is the truth; reads and the scrub
    still refuse it), so that an upgrade is never refused for a damaged record."""
    cur = txn.cursor(db=d.files)
    if cur.set_range(b"h"):
        while cur.key()[:1] == b"h":
            if not cur.delete():
                break
    total = 0
    sums: dict[bytes, int] = {}
    for code, k, v in _records(txn, d, START):
        if not sh.counted(code, k):
            continue
        payload = v[SEAL_BYTES:]
        if code == SNAP_FILES and k[:1] == b"s":
            key, ref = decode_staged_any(payload)
            data = ref if isinstance(ref, bytes) else _raw_tail(txn, d, *ref)
            c = sh.contribution(code, k, sh.staged_form(key, data))
            upload = k[2 : 2 + k[1]]
            sums[upload] = sums.get(upload, 0) + c
        else:
            c = sh.contribution(code, k, payload)
        total += c
    for upload, s in sums.items():
        hkey = upload_sum_key(upload)
        txn.put(hkey, seal(hkey, sh.to_bytes(s & sh.MASK)), db=d.files)
    return total & sh.MASK


def _raw_tail(txn: lmdb.Transaction[bytes], d: Dbs, index: int, n: int) -> bytes:
    raw = txn.get(index.to_bytes(8, "big"), db=d.log)
    if raw is None or len(raw) < n:
        raise CorruptionError(f"staged chunk: pinned log record {index} is missing or short")
    return raw[len(raw) - n :]


@dataclass(slots=True)
class Chunk:
    """What one piece of a pass read."""

    records: int = 0
    bytes: int = 0
    sum: int = 0
    end: Position = START
    done: bool = False
    damaged: list[IntegrityError] = field(default_factory=list)


def read_chunk(
    txn: lmdb.Transaction[bytes], d: Dbs, after: Position, max_records: int, max_bytes: int
) -> Chunk:
    """Read, check and hash the records after `after`: at most `max_records` of them and
    about `max_bytes` bytes (at least one record). A record that fails its check (its seal,
    a pinned chunk's entry crc, or its layout) is listed in `damaged` and not hashed."""
    out = Chunk(end=after)
    for code, k, v in _records(txn, d, after):
        out.records += 1
        out.bytes += len(k) + len(v)
        out.end = (code, k)
        try:
            payload = unseal(_NAMES[code], k, v)
            if code == SNAP_FILES and k[:1] == b"s":
                key, data = staged_data(txn, d.log, payload)
                out.bytes += len(data)
                if sh.counted(code, k):
                    out.sum += sh.contribution(code, k, sh.staged_form(key, data))
            elif code == SNAP_FILES and k[:1] == b"h":
                decode_upload_sum(payload)
            elif sh.counted(code, k):
                out.sum += sh.contribution(code, k, payload)
        except IntegrityError as e:
            out.damaged.append(e)
        except CorruptionError as e:  # sealed right, yet not a record of its layout
            name = _NAMES[code]
            out.damaged.append(IntegrityError(name, k, f"{describe(name, k)} ({e})"))
        if out.records >= max_records or out.bytes >= max_bytes:
            return out
    out.done = True
    return out


class Tracker:
    """The changes applied while a pass is open, handed over by the store after each
    commit (`deliver`, any thread) and taken by the pass (`take`). Thread-safe."""

    def __init__(self, applied: int) -> None:
        self._cond = threading.Condition()
        self._pending: list[tuple[int, list[sh.Delta] | None]] = []
        self.delivered = applied
        """The applied index of the last transaction whose changes were handed over."""

    def deliver(self, index: int, deltas: list[sh.Delta] | None) -> None:
        """The transaction that ended at applied index `index` committed; `deltas` its
        changes (None: the state was replaced or its hash corrected)."""
        with self._cond:
            self._pending.append((index, deltas))
            self.delivered = max(self.delivered, index)
            self._cond.notify_all()

    def take(self, upto: int) -> list[list[sh.Delta] | None] | None:
        """The changes of the transactions up to applied index `upto`, waiting (bounded)
        for those that committed but were not handed over yet; None if they did not come."""
        with self._cond:
            if not self._cond.wait_for(lambda: self.delivered >= upto, DELIVERY_WAIT):
                return None
            out = [ds for i, ds in self._pending if i <= upto]
            self._pending = [(i, ds) for i, ds in self._pending if i > upto]
            return out


@dataclass(slots=True)
class PassState:
    """One scrub pass so far: where it is, the hash of what it read (kept current as
    changes arrive), and whether that hash can still be compared (`usable`)."""

    gen: int | None = None
    position: Position = START
    sum: int = 0
    usable: bool = True
    records: int = 0
    damaged: int = 0

    def absorb(self, changes: list[list[sh.Delta] | None] | None) -> None:
        """Add the changes to records already read (those at or before `position`)."""
        if changes is None:
            self.usable = False
            return
        pos = self.position
        for deltas in changes:
            if deltas is None:
                self.usable = False
                continue
            for db, key, d, prefix in deltas:
                if (db, key) > pos:
                    continue  # not read yet: the pass reads it as it is then
                if prefix and db == pos[0] and pos[1].startswith(key):
                    self.usable = False  # the range straddles the position
                    continue
                self.sum += d

    def add(self, chunk: Chunk) -> None:
        self.sum += chunk.sum
        self.position = chunk.end
        self.records += chunk.records
        self.damaged += len(chunk.damaged)


def stage_record(txn: lmdb.Transaction[bytes], d: Dbs, code: int, k: bytes, payload: bytes) -> int:
    """A record received for a snapshot being staged into generation `d` (already written):
    its contribution to the staged state's hash, and its staged chunk's share of its upload
    sum (written)."""
    if not sh.counted(code, k):
        return 0
    if code == SNAP_FILES and k[:1] == b"s":
        key, data = decode_staged_any(payload)
        if not isinstance(data, bytes):  # pragma: no cover - refused by the receiver first
            raise CorruptionError(f"snapshot files record {k!r}: a chunk by reference")
        c = sh.contribution(code, k, sh.staged_form(key, data))
        hkey = upload_sum_key(k[2 : 2 + k[1]])
        raw = txn.get(hkey, db=d.files)
        total = 0 if raw is None else decode_upload_sum(unseal(FILES, hkey, raw))
        txn.put(hkey, seal(hkey, sh.to_bytes((total + c) & sh.MASK)), db=d.files)
        return c
    return sh.contribution(code, k, payload)


class Source(Protocol):
    """The store side of a pass (LmdbStore)."""

    def scrub_read(
        self, after: Position, max_records: int, max_bytes: int
    ) -> tuple[int, int, int, Chunk]:
        """One piece in one read transaction: (live generation, applied index, stored
        state hash, what was read)."""
        ...

    def scrub_close(self, tracker: Tracker) -> None: ...


@dataclass(frozen=True, slots=True)
class Verdict:
    """The end of a pass: the state as of applied index `index` hashed to `computed`; the
    running hash stored at that index is `stored`. `status`: "ok" (equal), "mismatch",
    "damaged" (records failed their check: the hash was not compared) or "skipped" (the
    state was replaced during the pass: not compared)."""

    status: str
    index: int
    stored: int
    computed: int
    records: int
    damaged: int


class ScrubPass:
    """One pass over the live state, piece by piece (`step`, blocking: run it in a worker
    thread, never two at once). Close it when done (it stops the store's change tracking)."""

    def __init__(self, source: Source, tracker: Tracker) -> None:
        self._source = source
        self._tracker = tracker
        self.state = PassState()
        self.restarts = 0
        """Times the pass started over because the live state was replaced (an install)."""

    def step(self, max_records: int, max_bytes: int) -> tuple[Chunk, Verdict | None]:
        """Read the next piece; the verdict once the pass is complete."""
        st = self.state
        gen, applied, stored, chunk = self._source.scrub_read(st.position, max_records, max_bytes)
        changes = self._tracker.take(applied)
        if st.gen is not None and gen != st.gen:
            # The state was replaced (an install): start over on the new one. What this
            # piece found damaged is damaged (the caller reports it); the rest is dropped.
            self.restarts += 1
            self.state = PassState(gen=gen)
            return chunk, None
        st.gen = gen
        st.absorb(changes)
        st.add(chunk)
        if not chunk.done:
            return chunk, None
        if st.damaged:
            status = "damaged"
        elif not st.usable:
            status = "skipped"
        else:
            status = "ok" if st.sum & sh.MASK == stored else "mismatch"
        return chunk, Verdict(status, applied, stored, st.sum & sh.MASK, st.records, st.damaged)

    def close(self) -> None:
        self._source.scrub_close(self._tracker)

    def __enter__(self) -> ScrubPass:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
