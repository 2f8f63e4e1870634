"""Seeding a new single-node LMDB store from a backup copy (LmdbStore.write_backup's output).

Owns: adopt_backup_copy, which rewrites the copy's identity, voters, hard state and
snapshot marker (the meta records of rkv.store.meta) and drops what a new cluster must not
inherit (the log beyond pinned records, a staged snapshot, the non-live generation).
Must not: run on a data dir a process holds, or touch client sessions or the applied state.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import lmdb

from rkv.codec import CodecError, decode_hard_state, encode_hard_state, pack, snapshot_meta_to_list
from rkv.raft.types import NONE, HardState, NodeId, SnapshotMeta
from rkv.store import kv as kvdb
from rkv.store import migrate
from rkv.store import raft_store as logdb
from rkv.store.errors import CorruptionError
from rkv.store.lmdb_base import DEFAULT_MAP_SIZE, open_env
from rkv.store.meta import (
    GEN_SUFFIXES,
    K_CLUSTER,
    K_HARD_STATE,
    K_NODE,
    K_SCHEMA,
    K_SNAPSHOT,
    K_SNAPSHOT_DATA,
    K_VOTERS,
    SCHEMA_VERSION,
    U32,
    need,
)


def adopt_backup_copy(
    path: str | os.PathLike[str], *, index: int, term: int, cluster_id: str, node_id: NodeId
) -> None:
    """Turn `path`/data.mdb, a copy made by `LmdbStore.write_backup` at applied index
    `index` (of term `term`), into the store of a new single-node cluster: `node_id` of
    `cluster_id` its only voter, the applied state standing in for the log as a snapshot at
    `index`. The log is dropped (entries after `index` were never applied there), except
    records that staged upload chunks pin (file data, see rkv.store.kv); so is a snapshot
    staged from a leader and the non-live generation. Client sessions are kept. Must run
    on a data dir no process holds. Raises CorruptionError when the copy is not a usable
    store of this schema (or one open_store upgrades) at `index`."""
    d = os.fspath(path)
    size = os.stat(os.path.join(d, "data.mdb")).st_size
    env = open_env(d, max(DEFAULT_MAP_SIZE, 2 * size))
    try:
        with env.begin(write=True) as txn:
            _adopt(txn, env, d, index=index, term=term, cluster_id=cluster_id, node_id=node_id)
        env.sync(True)
    except (lmdb.Error, CodecError) as e:
        raise CorruptionError(f"{d} is not a usable rkv store: {e}") from e
    finally:
        env.close()
    with contextlib.suppress(OSError):
        Path(d, "lock.mdb").unlink()


def _adopt(
    txn: lmdb.Transaction[bytes],
    env: lmdb.Environment,
    d: str,
    *,
    index: int,
    term: int,
    cluster_id: str,
    node_id: NodeId,
) -> None:
    meta = env.open_db(b"meta", txn=txn, create=False)
    log = env.open_db(b"log", txn=txn, create=False)
    schema = txn.get(K_SCHEMA, db=meta)
    known = (SCHEMA_VERSION, *migrate.UPGRADABLE)  # an older copy is upgraded when opened
    if schema is None or len(schema) != 4 or U32.unpack(schema)[0] not in known:
        raise CorruptionError(f"{d} has store schema {schema!r}, not {SCHEMA_VERSION}")
    applied = kvdb.decode_u64("applied index", txn.get(kvdb.APPLIED_KEY, db=meta))
    if applied != index:
        raise CorruptionError(f"{d} has applied index {applied}, expected {index}")
    old = decode_hard_state(need(txn.get(K_HARD_STATE, db=meta), "hard state"))
    voters = (node_id,)
    txn.put(K_CLUSTER, cluster_id.encode(), db=meta)
    txn.put(K_NODE, node_id.encode(), db=meta)
    txn.put(K_VOTERS, pack(list(voters)), db=meta)
    hs = HardState(term=max(old.term, term), vote=NONE, commit=index)
    txn.put(K_HARD_STATE, encode_hard_state(hs), db=meta)
    snap = SnapshotMeta(index=index, term=term, voters=voters)
    txn.put(K_SNAPSHOT, pack(snapshot_meta_to_list(snap)), db=meta)
    txn.put(K_SNAPSHOT_DATA, b"", db=meta)
    gen = txn.get(kvdb.GEN_KEY, db=meta) or b"\x00"
    if gen not in (b"\x00", b"\x01"):
        raise CorruptionError(f"{d} has a bad state machine generation")
    live_files = env.open_db(b"files" + GEN_SUFFIXES[gen[0]], txn=txn)
    logdb.delete_from(txn, log, 0, kvdb.pinned_keys(txn, live_files, 0, index))
    txn.delete(kvdb.STAGING_KEY, db=meta)
    other = GEN_SUFFIXES[1 - gen[0]]
    for name in (b"kv", b"files", b"sessions"):
        txn.drop(env.open_db(name + other, txn=txn), delete=False)
