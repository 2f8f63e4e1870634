"""State-machine snapshots as a stream of bounded chunks, shared by both stores.

Owns: the `SnapshotSource` protocol (a consistent, read-only view of the applied state that
yields codec-encoded chunks of at most about `max_chunk` bytes, at least one record each),
the batching of records into chunks, and the `Staging` record that tracks a snapshot being
received (which chunk comes next, how many records arrived, whether it is complete), and
`BackupCopy`, what a store's `write_backup` copy holds.
Must not: open transactions or know a store's layout (env.py and memory.py do), or hold more
than one chunk in memory: a snapshot may be far larger than RAM.

The stream is the live state machine: every record of the kv, files (manifests, chunks,
staged upload chunks) and sessions databases, in key order, database by database, as its
payload (the LMDB store checks and strips each record's seal as it reads it, and seals what
it receives: seal.py). Applied index, its term and the voters travel beside it as the
SnapshotMeta.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol, Self

from rkv.codec import (
    CodecError,
    SnapshotRecord,
    encode_snapshot_chunk,
    pack,
    snapshot_meta_from_list,
    snapshot_meta_to_list,
    unpack,
)
from rkv.raft.types import SnapshotMeta
from rkv.store.errors import CorruptionError

DEFAULT_CHUNK_BYTES = 1 << 20
_RECORD_OVERHEAD = 16


class SnapshotSource(Protocol):
    """A consistent view of the applied state. Use as a context manager, from one thread at a
    time; `chunks()` may be iterated once."""

    meta: SnapshotMeta

    @property
    def records(self) -> int:
        """Records yielded so far (the total once `chunks()` is exhausted)."""
        ...

    @property
    def chunk_count(self) -> int: ...

    def chunks(self) -> Iterator[bytes]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...


@dataclass(frozen=True, slots=True)
class BackupCopy:
    """What a copy written by a store's `write_backup(f)` holds, read in the same transaction
    as the copy: the applied index and the term of its entry, user keys and files."""

    index: int
    term: int
    keys: int
    files: int


class ChunkCounter:
    """Counts what `batch` produced, for the source's `records` / `chunk_count`."""

    def __init__(self) -> None:
        self.records = 0
        self.chunk_count = 0


def batch(
    records: Iterable[SnapshotRecord],
    max_chunk: int,
    counter: ChunkCounter,
    between: Callable[[], None] | None = None,
) -> Iterator[bytes]:
    """Encoded chunks of about `max_chunk` bytes (a single larger record is a chunk by itself).
    `between` runs after each yielded chunk (a source's chance to abort)."""
    if max_chunk < 1:
        raise ValueError(f"max_chunk must be >= 1, got {max_chunk}")
    pending: list[SnapshotRecord] = []
    size = 0
    for rec in records:
        rsize = len(rec[1]) + len(rec[2]) + _RECORD_OVERHEAD
        if pending and size + rsize > max_chunk:
            counter.chunk_count += 1
            yield encode_snapshot_chunk(pending)
            pending, size = [], 0
            if between is not None:
                between()
        pending.append(rec)
        size += rsize
        counter.records += 1
    if pending:
        counter.chunk_count += 1
        yield encode_snapshot_chunk(pending)


@dataclass(frozen=True, slots=True)
class Staging:
    """A snapshot being received into the non-live generation (LMDB) or a side state (memory)."""

    gen: int
    meta: SnapshotMeta
    next_seq: int = 0
    records: int = 0
    done: bool = False
    state_hash: bytes | None = b"\x00" * 16
    """The state hash (state_hash.py) of the records staged so far; None when staging began
    before the store kept one (schema 2): the install computes it from the records."""

    def encode(self) -> bytes:
        m = snapshot_meta_to_list(self.meta)
        return pack([self.gen, m, self.next_seq, self.records, self.done, self.state_hash])

    @staticmethod
    def decode(raw: bytes) -> Staging:
        try:
            f = unpack(raw)
            if type(f) is not list or len(f) not in (5, 6):
                raise CodecError("unexpected shape")
            gen, meta, seq, records, done = f[:5]
            state_hash = f[5] if len(f) == 6 else None
            if gen not in (0, 1) or type(seq) is not int or type(records) is not int:
                raise CodecError("bad field types")
            if type(done) is not bool:
                raise CodecError("bad done flag")
            if state_hash is not None and (type(state_hash) is not bytes or len(state_hash) != 16):
                raise CodecError("bad state hash")
            meta_ = snapshot_meta_from_list(meta)
            return Staging(gen, meta_, seq, records, done, state_hash)
        except CodecError as e:
            raise CorruptionError(f"snapshot staging record: {e}") from e
