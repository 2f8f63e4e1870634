"""Leases in the state machine: their values, layouts and the hooks a store offers for them.

Owns: the stored lease (`Lease`), what a store lists (`LeaseState`), what an apply tells the
Lessor (`LeaseEvent`, buffered by `LeaseEventLog`), the `LeaseTxn` protocol (the lease part
of commands.StateTxn) and the record layouts in the `files` database:
- b"L" + u64 lease id -> [ttl_ms, gen, remaining_ms]
- b"K" + u64 lease id + key -> b"": `key` is attached to the lease (its kv record names the
  lease too; this index finds a lease's keys in key order without a scan).
Both are counted by the state hash, streamed in snapshots, sealed, verified and scrubbed as
every other `files` record is.
Why `files` and not a database of their own: every tool that walks the state machine (seal,
verify, scrub, the snapshot stream, the state hash, backups) handles any tag of it already,
and nothing counts its entries (the `sessions` database counts its entries for the session
limit), so leases need no new database per generation nor a new snapshot stream code that
an older rkv would refuse to decode.
Must not: decide semantics (lease_apply.py does), open transactions, or look at clocks.
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from rkv.codec import CodecError, pack, unpack
from rkv.store.errors import CorruptionError
from rkv.store.seal import FILES, unseal

if TYPE_CHECKING:
    import lmdb

_U64 = struct.Struct(">Q")
DEFAULT_MAX_LEASES = 100_000
"""Most leases at once (a grant beyond it fails); must be the same on every node."""
MAX_LEASE_EVENTS = 65_536
"""Events a store buffers for its Lessor; past that they are dropped and the Lessor is told
to reset from `leases()` (a store nobody drains stays bounded)."""
LEASE_TAG = b"L"
ATTACH_TAG = b"K"


@dataclass(frozen=True, slots=True)
class Lease:
    """A stored lease: its TTL, its generation (the log index of its grant or last renewal)
    and the remaining TTL as of that entry or the last checkpoint (never above ttl_ms)."""

    ttl_ms: int
    gen: int
    remaining_ms: int


@dataclass(frozen=True, slots=True)
class LeaseState:
    """A lease as a store lists it (for the Lessor's reset and for clients)."""

    id: int
    ttl_ms: int
    gen: int
    remaining_ms: int
    keys: int


@dataclass(frozen=True, slots=True)
class LeaseEvent:
    """What one applied entry did to a lease: "set" (granted or renewed: `ms` is its TTL,
    `gen` the entry's index), "checkpoint" (`ms`: the stored remaining), "gone" (revoked)
    or "expired" (deleted by a LeaseExpire)."""

    kind: str
    id: int
    gen: int = 0
    ms: int = 0


@dataclass(frozen=True, slots=True)
class LeaseEvents:
    """What `take_lease_events` returns: the events since the last call, and whether the
    Lessor must reset from `leases()` first (a snapshot was installed, or events were dropped
    past MAX_LEASE_EVENTS)."""

    events: list[LeaseEvent]
    reset: bool = False


class LeaseEventLog:
    """The bounded, thread-safe buffer of committed applies' lease events (applies may run
    in a worker thread)."""

    def __init__(self, limit: int = MAX_LEASE_EVENTS) -> None:
        self._lock = threading.Lock()
        self._limit = limit
        self._events: list[LeaseEvent] = []
        self._reset = False

    def extend(self, events: list[LeaseEvent]) -> None:
        if not events:
            return
        with self._lock:
            if self._reset:
                return  # the Lessor resets from the store: these are in it
            self._events.extend(events)
            if len(self._events) > self._limit:
                self._events = []
                self._reset = True

    def reset(self) -> None:
        with self._lock:
            self._events = []
            self._reset = True

    def take(self) -> LeaseEvents:
        with self._lock:
            out = LeaseEvents(self._events, self._reset)
            self._events, self._reset = [], False
        return out


class LeaseTxn(Protocol):
    """The lease part of a state-machine write transaction (commands.StateTxn)."""

    def lease(self, lease_id: int) -> Lease | None: ...
    def put_lease(self, lease_id: int, lease: Lease) -> None: ...
    def delete_lease(self, lease_id: int) -> None: ...
    def lease_count(self) -> int: ...
    def lease_limit(self) -> int:
        """max_leases of the store (the same on every node)."""
        ...

    def attach(self, lease_id: int, key: bytes) -> None: ...
    def detach(self, lease_id: int, key: bytes) -> None: ...
    def lease_keys(self, lease_id: int) -> list[bytes]:
        """The keys attached to a lease, in key order."""
        ...

    def lease_event(self, event: LeaseEvent) -> None:
        """Record what this entry did (delivered to the Lessor once the apply commits)."""
        ...


# --- layouts ----------------------------------------------------------------------------------


def lease_key(lease_id: int) -> bytes:
    return LEASE_TAG + _U64.pack(lease_id)


def attach_prefix(lease_id: int) -> bytes:
    return ATTACH_TAG + _U64.pack(lease_id)


def attach_key(lease_id: int, key: bytes) -> bytes:
    return ATTACH_TAG + _U64.pack(lease_id) + key


def encode_lease(lease: Lease) -> bytes:
    return pack([lease.ttl_ms, lease.gen, lease.remaining_ms])


def decode_lease(raw: bytes) -> Lease:
    try:
        f = unpack(raw)
    except CodecError as e:
        raise CorruptionError(f"lease: {e}") from e
    if type(f) is not list or len(f) != 3 or any(type(x) is not int for x in f):
        raise CorruptionError("lease: unexpected shape")
    return Lease(f[0], f[1], f[2])


def parse_lease_key(k: bytes) -> int | None:
    """The lease id of a lease record's key (None: not one)."""
    if len(k) == 9 and k[:1] == LEASE_TAG:
        return int(_U64.unpack_from(k, 1)[0])
    return None


def parse_attach_key(k: bytes) -> tuple[int, bytes] | None:
    """(lease id, key) of an attachment record's key (None: not one)."""
    if len(k) > 9 and k[:1] == ATTACH_TAG:
        return int(_U64.unpack_from(k, 1)[0]), k[9:]
    return None


def describe(key: bytes) -> str | None:
    """A lease record's key for people (seal.describe), None if it is not one."""
    lid = parse_lease_key(key)
    if lid is not None:
        return f"lease {lid}"
    att = parse_attach_key(key)
    if att is not None:
        return f"attachment of key {att[1]!r} to lease {att[0]}"
    return None


# --- LMDB reads (the `files` database of one generation; values sealed) -----------------------


def _prefixed(
    txn: lmdb.Transaction[bytes], files: lmdb._Database, prefix: bytes
) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = []
    cur = txn.cursor(db=files)
    if cur.set_range(prefix):
        for k, v in cur.iternext():
            if not k.startswith(prefix):
                break
            out.append((k, v))
    return out


def read_leases(txn: lmdb.Transaction[bytes], files: lmdb._Database) -> list[LeaseState]:
    """Every lease, by id, with its count of attached keys."""
    counts: dict[int, int] = {}
    for k, _ in _prefixed(txn, files, ATTACH_TAG):
        att = parse_attach_key(k)
        if att is not None:
            counts[att[0]] = counts.get(att[0], 0) + 1
    out = []
    for k, v in _prefixed(txn, files, LEASE_TAG):
        lid = parse_lease_key(k)
        if lid is None:
            continue
        lease = decode_lease(unseal(FILES, k, v))
        out.append(LeaseState(lid, lease.ttl_ms, lease.gen, lease.remaining_ms, counts.get(lid, 0)))
    return out


def read_lease_keys(
    txn: lmdb.Transaction[bytes], files: lmdb._Database, lease_id: int
) -> list[bytes]:
    return [k[9:] for k, _ in _prefixed(txn, files, attach_prefix(lease_id))]


def count_leases(txn: lmdb.Transaction[bytes], files: lmdb._Database) -> int:
    n = 0
    cur = txn.cursor(db=files)
    if cur.set_range(LEASE_TAG):
        for k in cur.iternext(keys=True, values=False):
            if k[:1] != LEASE_TAG:
                break
            n += 1
    return n


def read_lease(
    txn: lmdb.Transaction[bytes], files: lmdb._Database, lease_id: int
) -> LeaseState | None:
    k = lease_key(lease_id)
    raw = txn.get(k, db=files)
    if raw is None:
        return None
    lease = decode_lease(unseal(FILES, k, raw))
    keys = len(_prefixed(txn, files, attach_prefix(lease_id)))
    return LeaseState(lease_id, lease.ttl_ms, lease.gen, lease.remaining_ms, keys)
