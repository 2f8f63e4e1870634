"""rkv.store: the node's durable state (LMDB) and its in-memory twin.

Blocking code, no trio. See docs/contracts.md (rkv.store) for the API; env.py (LmdbStore,
open_store), memory.py (MemoryStore), commands.py (the state machine's semantics),
errors.py (StoreError and subclasses).
"""

from __future__ import annotations

from rkv.store.commands import ApplyResult, Manifest, Record, Session
from rkv.store.env import SCHEMA_VERSION, LmdbStore, open_store
from rkv.store.errors import (
    CorruptionError,
    NotFoundError,
    StoreError,
    StoreFullError,
    StoreIdentityError,
)
from rkv.store.memory import MemoryStore

__all__ = [
    "SCHEMA_VERSION",
    "ApplyResult",
    "CorruptionError",
    "LmdbStore",
    "Manifest",
    "MemoryStore",
    "NotFoundError",
    "Record",
    "Session",
    "StoreError",
    "StoreFullError",
    "StoreIdentityError",
    "open_store",
]
