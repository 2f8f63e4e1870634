"""A transaction's effect on the state machine (rkv.txn.Txn), for commands.execute.

Owns: evaluating the compares against the state before the txn, running the chosen branch's
ops in order over an overlay (a get sees the writes before it), and writing the overlay only
when every op succeeded, so a txn whose op fails (incr of a non-integer, gets that would
return too much) changes nothing. Every written key gets the txn's index as its mod revision
(and as its create revision when new), so the whole txn is one revision.
Must not: do I/O or know about LMDB (it runs over commands.StateTxn, in both stores).
"""

from __future__ import annotations

from rkv.codec import pack
from rkv.store.commands import LEASE_NOT_FOUND, ApplyResult, KeyTxn, Record, set_key
from rkv.txn import (
    MAX_TXN_BYTES,
    KeyValue,
    Op,
    OpAppend,
    OpDelete,
    OpDeletePrefix,
    OpGet,
    OpIncr,
    OpIncrFloat,
    OpPut,
    OpResult,
    Txn,
    TxnError,
    TxnResult,
    add_decimal,
    add_int,
)


class _Overlay:
    def __init__(self, txn: KeyTxn, index: int) -> None:
        self.txn = txn
        self.index = index
        self.base: dict[bytes, Record | None] = {}
        """key -> its record before the txn (read once)."""
        self.pending: dict[bytes, Record | None] = {}

    def _base(self, key: bytes) -> Record | None:
        if key not in self.base:
            self.base[key] = self.txn.get(key)
        return self.base[key]

    def get(self, key: bytes) -> Record | None:
        if key in self.pending:
            return self.pending[key]
        return self._base(key)

    def put(self, key: bytes, value: bytes, lease: int = 0) -> None:
        """A write without a lease detaches the key from its lease (etcd's semantics)."""
        if lease and self.txn.lease(lease) is None:
            raise TxnError(LEASE_NOT_FOUND)
        old = self._base(key)  # a key is written at most once per txn (rkv.txn checks)
        create = self.index if old is None else old.create_index
        version = 1 if old is None else old.version + 1
        self.pending[key] = Record(value, create, self.index, version, lease)

    def delete(self, key: bytes) -> int:
        existed = self.get(key) is not None
        self.pending[key] = None
        return int(existed)

    def delete_prefix(self, prefix: bytes) -> int:
        keys = set(self.txn.keys(prefix))
        keys.update(k for k, r in self.pending.items() if r is not None and k.startswith(prefix))
        return sum(self.delete(k) for k in sorted(keys))

    def write(self) -> None:
        for key in sorted(self.pending):
            set_key(self.txn, key, self.pending[key], self._base(key))


def _run(view: _Overlay, op: Op) -> OpResult:
    if isinstance(op, OpGet):
        r = view.get(op.key)
        return (
            None
            if r is None
            else KeyValue(r.value, r.create_index, r.mod_index, r.version, r.lease)
        )
    if isinstance(op, OpPut):
        view.put(op.key, op.value, op.lease)
        return None
    if isinstance(op, OpDelete):
        return view.delete(op.key)
    if isinstance(op, OpDeletePrefix):
        return view.delete_prefix(op.prefix)
    # the read-modify-write ops change a value in place: the key keeps its lease (Redis: INCR
    # and APPEND keep a key's TTL), unlike a put, which states the key's whole new record
    cur = view.get(op.key)
    old = None if cur is None else cur.value
    lease = 0 if cur is None else cur.lease
    if isinstance(op, OpIncr):
        n = add_int(old, op.delta)
        view.put(op.key, str(n).encode(), lease)
        return n
    if isinstance(op, OpIncrFloat):
        v = add_decimal(old, op.delta)
        view.put(op.key, v, lease)
        return v
    assert isinstance(op, OpAppend)
    v = (old or b"") + op.value
    if len(v) > MAX_TXN_BYTES:
        raise TxnError(f"append would make the value {len(v)} bytes, more than {MAX_TXN_BYTES}")
    view.put(op.key, v, lease)
    return len(v)


def execute_txn(txn: KeyTxn, t: Txn, index: int) -> ApplyResult:
    """The txn's effect at log index `index`: value = the packed TxnResult wire form (bytes,
    so a client session keeps it as any result); an error result (nothing written) when an
    op fails."""
    view = _Overlay(txn, index)
    succeeded = True
    for c in t.compares:
        r = view.get(c.key)
        if r is None:
            held = c.holds(None, 0, 0, 0)
        else:
            held = c.holds(r.value, r.version, r.create_index, r.mod_index)
        if not held:
            succeeded = False
            break
    results: list[OpResult] = []
    returned = 0
    try:
        for op in t.success if succeeded else t.failure:
            res = _run(view, op)
            if isinstance(res, KeyValue):
                returned += len(res.value)
                if returned > MAX_TXN_BYTES:
                    raise TxnError(f"the txn's gets would return more than {MAX_TXN_BYTES} bytes")
            results.append(res)
    except TxnError as e:
        return ApplyResult(ok=False, error=str(e))
    view.write()
    return ApplyResult(value=pack(TxnResult(succeeded, index, tuple(results)).to_wire()))
