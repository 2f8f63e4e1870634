"""The store test harness: opens and reopens (restarts) either kind of store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
