"""The lease commands' effect on the state machine (grant, renew, revoke, checkpoint, expire).

Owns: what each lease command does to the stored leases and the keys attached to them, and
the events it tells the Lessor (rkv.store.leases.LeaseEvent). Deterministic: no clocks; a
lease's remaining TTL only changes by a renewal (back to its TTL) or a checkpoint (down to
what the leader measured); expiry is a command like any other, which deletes a lease only
if it was proposed in the entry's own term and the lease was not renewed since (its `gen`,
the index of the grant or last renewal, still matches). See rkv.lease for why that is safe.
Must not: do I/O, know about LMDB (it runs over commands.StateTxn, in both stores).
"""

from __future__ import annotations

from rkv.codec import LeaseCheckpoint, LeaseCommand, LeaseExpire, LeaseGrant, LeaseRenew
from rkv.store.commands import LEASE_NOT_FOUND, ApplyResult, StateTxn, set_key
from rkv.store.leases import Lease, LeaseEvent

LEASE_EXISTS = "lease already exists"
TOO_MANY_LEASES = "too many leases"


def revoke(txn: StateTxn, lease_id: int, why: str = "gone") -> bool:
    """Delete the lease and every key attached to it; whether it existed. `why`: the event's
    kind ("gone": revoked, "expired")."""
    if txn.lease(lease_id) is None:
        return False
    for key in txn.lease_keys(lease_id):
        set_key(txn, key, None, txn.get(key))
    txn.delete_lease(lease_id)
    txn.lease_event(LeaseEvent(why, lease_id))
    return True


def execute_lease(txn: StateTxn, cmd: LeaseCommand, index: int, term: int) -> ApplyResult:
    """One lease command's effect at log index `index` of term `term`."""
    if isinstance(cmd, LeaseGrant):
        lid = cmd.lease_id or index
        if txn.lease(lid) is not None:
            return ApplyResult(ok=False, error=LEASE_EXISTS)
        if txn.lease_count() >= txn.lease_limit():
            return ApplyResult(ok=False, error=TOO_MANY_LEASES)
        txn.put_lease(lid, Lease(cmd.ttl_ms, index, cmd.ttl_ms))
        txn.lease_event(LeaseEvent("set", lid, index, cmd.ttl_ms))
        return ApplyResult(value=lid)
    if isinstance(cmd, LeaseRenew):
        old = txn.lease(cmd.lease_id)
        if old is None:
            return ApplyResult(ok=False, error=LEASE_NOT_FOUND)
        txn.put_lease(cmd.lease_id, Lease(old.ttl_ms, index, old.ttl_ms))
        txn.lease_event(LeaseEvent("set", cmd.lease_id, index, old.ttl_ms))
        return ApplyResult(value=old.ttl_ms)
    if isinstance(cmd, LeaseCheckpoint):
        for lid, gen, remaining in cmd.items:
            cur = txn.lease(lid)
            if cur is not None and cur.gen == gen and remaining < cur.remaining_ms:
                txn.put_lease(lid, Lease(cur.ttl_ms, cur.gen, remaining))
                txn.lease_event(LeaseEvent("checkpoint", lid, gen, remaining))
        return ApplyResult()
    if isinstance(cmd, LeaseExpire):
        if cmd.term != term:
            return ApplyResult(value=0)  # a deposed leader's expiry carried into a later term
        n = 0
        for lid, gen in cmd.items:
            cur = txn.lease(lid)
            if cur is not None and cur.gen == gen:
                n += revoke(txn, lid, "expired")
        return ApplyResult(value=n)
    return ApplyResult(value=revoke(txn, cmd.lease_id))
