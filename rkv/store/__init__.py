"""rkv.store: the node's durable state (LMDB) and its in-memory twin.

Blocking code, no trio. See docs/contracts.md (rkv.store) for the API; env.py (LmdbStore,
open_store, adopt_backup_copy), memory.py (MemoryStore), commands.py (the state machine's
semantics), snapshot.py (snapshot streams, BackupCopy), seal.py (the checksum on every stored
record), migrate.py (schema upgrades), history.py (the durable watch history the apply writes),
errors.py (StoreError and subclasses).
"""

from __future__ import annotations

from rkv.store.commands import ApplyResult, Manifest, Record, Session
from rkv.store.env import SCHEMA_VERSION, LmdbStore, adopt_backup_copy, open_store
from rkv.store.errors import (
    CorruptionError,
    IntegrityError,
    NotFoundError,
    SnapshotError,
    StoreError,
    StoreFullError,
    StoreIdentityError,
)
from rkv.store.memory import MemoryStore
from rkv.store.snapshot import DEFAULT_CHUNK_BYTES, BackupCopy, SnapshotSource

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "SCHEMA_VERSION",
    "ApplyResult",
    "BackupCopy",
    "CorruptionError",
    "IntegrityError",
    "LmdbStore",
    "Manifest",
    "MemoryStore",
    "NotFoundError",
    "Record",
    "Session",
    "SnapshotError",
    "SnapshotSource",
    "StoreError",
    "StoreFullError",
    "StoreIdentityError",
    "adopt_backup_copy",
    "open_store",
]
