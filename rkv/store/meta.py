"""The meta database's record keys and encodings of the LMDB store (rkv.store.env).

Owns: the schema version, the keys of the meta records the store itself keeps (schema,
identity, voters, hard state, snapshot marker), the generation name suffixes, and the check
that a meta record is present.
Must not: open environments or run transactions; the records kv.py owns (applied index,
state hash, generation, staging, conf) are named there.
"""

from __future__ import annotations

import struct

from rkv.store.errors import CorruptionError

SCHEMA_VERSION = 3
"""1: records without checksums; 2: every state-machine record sealed (seal.py); 3: the
state hash (state_hash.py) kept with the applied index, and upload sums (kv.py)."""

K_SCHEMA = b"schema"
K_CLUSTER = b"cluster_id"
K_NODE = b"node_id"
K_VOTERS = b"voters"
K_HARD_STATE = b"hard_state"
K_SNAPSHOT = b"snapshot"
K_SNAPSHOT_DATA = b"snapshot_data"
GEN_SUFFIXES = (b"", b".1")
"""Name suffixes of the two state-machine generations' databases (kv, files, sessions)."""
U32 = struct.Struct(">I")
U64 = struct.Struct(">Q")


def need(raw: bytes | None, what: str) -> bytes:
    if raw is None:
        raise CorruptionError(f"meta record {what} is missing")
    return raw
