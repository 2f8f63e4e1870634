"""Upgrades of a data dir's records to the current store schema, in place.

Owns: what each schema change does to records already stored. Schema 1 -> 2: every value
of the kv, files and sessions databases of both state-machine generations (the live state
and a snapshot being staged) gets its seal (seal.py); the Raft log and meta are unchanged.
Schema 2 -> 3: the live state's hash (state_hash.py) is computed from its records and
stored with the applied index, and its upload sums written (a snapshot being staged gets
them when it is installed: its staging record says its hash is unknown).
Must not: open environments, begin or commit transactions: env.py runs `upgrade` in the
write transaction that also sets the new schema version, so a crash (or a failure, or a
full disk) leaves the data dir wholly at the old version or wholly at the new one.

Cost: 1 -> 2 rewrites every state-machine record; LMDB copies each page it changes, so the
transaction needs free space (the map grows) of about the size of the state machine.
2 -> 3 reads every record of the live state once (file chunks too: a sha256 of each) and
writes one record per upload; a few seconds per GB of files.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rkv.store import kv as kvdb
from rkv.store.errors import CorruptionError, StoreIdentityError
from rkv.store.scrub import rebuild_state_hash
from rkv.store.seal import seal

if TYPE_CHECKING:
    import lmdb

    from rkv.store.kv import Dbs

UPGRADABLE = (1, 2)
"""Schema versions `upgrade` brings to the current one."""


def upgrade(txn: lmdb.Transaction[bytes], gens: Sequence[Dbs], version: int) -> int:
    """Rewrite the records of a store at schema `version` (one of UPGRADABLE) in the current
    layout; returns how many records were rewritten (sealed: 1 -> 2)."""
    if version not in UPGRADABLE:
        raise StoreIdentityError(f"no upgrade from store schema {version}")
    n = seal_all(txn, gens) if version == 1 else 0
    hash_live_state(txn, gens)
    return n


def hash_live_state(txn: lmdb.Transaction[bytes], gens: Sequence[Dbs]) -> None:
    """Schema 2 -> 3: store the live state's hash at the applied index (and write its
    upload sums)."""
    meta = gens[0].meta
    gen = txn.get(kvdb.GEN_KEY, db=meta) or b"\x00"
    if gen not in (b"\x00", b"\x01"):
        raise CorruptionError("meta: bad state machine generation")
    live = gens[gen[0]]
    value = rebuild_state_hash(txn, live)
    applied = kvdb.decode_u64("applied index", txn.get(kvdb.APPLIED_KEY, db=meta))
    txn.put(kvdb.STATE_HASH_KEY, kvdb.encode_state_hash(applied, value), db=meta)


def seal_all(txn: lmdb.Transaction[bytes], gens: Sequence[Dbs]) -> int:
    """Schema 1 -> 2: seal every value of every generation's kv, files and sessions."""
    n = 0
    for d in gens:
        for db in (d.kv, d.files, d.sessions):
            cur = txn.cursor(db=db)
            found = cur.first()
            while found:
                k, v = cur.item()
                cur.put(k, seal(k, v))  # leaves the cursor on k
                n += 1
                found = cur.next()
    return n
