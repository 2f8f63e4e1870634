"""The store test harness: opens and reopens (restarts) either kind of store, and damages
records of a closed LMDB store in place (a flipped bit, a record moved under another key)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lmdb

from rkv.store import LmdbStore, MemoryStore, open_store

Store = LmdbStore | MemoryStore
CLUSTER = "c1"
NODE = "n1"
VOTERS = ("n1", "n2", "n3")


class Harness:
    """Opens a fresh store and reopens it (a restart) the way its kind requires."""

    def __init__(self, kind: str, path: Path) -> None:
        self.kind = kind
        self.path = path
        self._open: list[Store] = []

    def open(self, **kw: Any) -> Store:
        self._kw = kw
        s: Store
        if self.kind == "lmdb":
            s = open_store(self.path, cluster_id=CLUSTER, node_id=NODE, voters=VOTERS, **kw)
        else:
            s = MemoryStore(CLUSTER, NODE, VOTERS, **kw)
        self._open.append(s)
        return s

    def reopen(self, s: Store) -> Store:
        if isinstance(s, MemoryStore):
            s2: Store = s.reopen()
        else:
            s.close()
            s2 = open_store(self.path, cluster_id=CLUSTER, node_id=NODE, voters=(), **self._kw)
        self._open.append(s2)
        return s2

    def close_all(self) -> None:
        for s in self._open:
            s.close()


def live_db(env: lmdb.Environment, txn: lmdb.Transaction[bytes], name: bytes) -> lmdb._Database:
    """Database `name` (kv, files, sessions; log, meta) of the live state-machine generation."""
    if name in (b"log", b"meta"):
        return env.open_db(name, txn=txn, create=False)
    gen = txn.get(b"sm_gen", db=env.open_db(b"meta", txn=txn, create=False)) or b"\x00"
    return env.open_db(name + (b".1" if gen == b"\x01" else b""), txn=txn, create=False)


def flip_bit(path: Path, db: bytes, key: bytes, at: bytes | int = -1, bit: int = 0x01) -> bytes:
    """Flip one bit of the stored value of record `key` in database `db` of the live state
    (kv, files, sessions, log) of the closed LMDB store at `path`: in the byte at offset
    `at`, or in the first byte of the first occurrence of the bytes `at` in the value (a
    value's own bytes). Returns the stored value as it was."""
    env = lmdb.open(str(path), max_dbs=12)
    try:
        with env.begin(write=True) as txn:
            d = live_db(env, txn, db)
            old = txn.get(key, db=d)
            assert old is not None, f"no record {key!r} in {db!r}"
            pos = old.find(at) if isinstance(at, bytes) else at % len(old)
            assert pos >= 0, f"{at!r} is not in record {key!r}"
            value = bytearray(old)
            value[pos] ^= bit
            txn.put(key, bytes(value), db=d)
        return bytes(old)
    finally:
        env.close()


def put_raw(path: Path, db: bytes, key: bytes, value: bytes) -> None:
    """Store `value` as is under `key` in database `db` of the live state (closed store)."""
    env = lmdb.open(str(path), max_dbs=12)
    try:
        with env.begin(write=True) as txn:
            txn.put(key, value, db=live_db(env, txn, db))
    finally:
        env.close()


def get_raw(path: Path, db: bytes, key: bytes) -> bytes | None:
    """The stored value of `key` in database `db` of the live state (closed store)."""
    env = lmdb.open(str(path), max_dbs=12, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            return txn.get(key, db=live_db(env, txn, db))
    finally:
        env.close()
