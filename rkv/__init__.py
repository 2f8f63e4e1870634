"""rkv: a fault-tolerant distributed key-value store (Raft over Trio, msgpack and LMDB)."""

from __future__ import annotations

__version__ = "0.1.0"
