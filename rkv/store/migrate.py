"""Upgrades of a data dir's records to the current store schema, in place.

Owns: what each schema change does to records already stored. Schema 1 -> 2: every value
of the kv, files and sessions databases of both state-machine generations (the live state
and a snapshot being staged) gets its seal (seal.py); the Raft log and meta are unchanged.
Must not: open environments, begin or commit transactions: env.py runs `upgrade` in the
write transaction that also sets the new schema version, so a crash (or a failure, or a
full disk) leaves the data dir wholly at the old version or wholly at the new one.

Cost: one rewrite of every state-machine record; LMDB copies each page it changes, so the
transaction needs free space (the map grows) of about the size of the state machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rkv.store.errors import StoreIdentityError
from rkv.store.seal import seal

if TYPE_CHECKING:
    import lmdb

    from rkv.store.kv import Dbs

UPGRADABLE = (1,)
"""Schema versions `upgrade` brings to the current one."""


def upgrade(txn: lmdb.Transaction[bytes], gens: Sequence[Dbs], version: int) -> int:
    """Rewrite the records of a store at schema `version` (one of UPGRADABLE) in the current
    layout; returns how many records were rewritten."""
    if version not in UPGRADABLE:
        raise StoreIdentityError(f"no upgrade from store schema {version}")
    return seal_all(txn, gens)


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
