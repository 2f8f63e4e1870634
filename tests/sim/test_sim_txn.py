"""Transactions in the simulator (SimParams.txn_fraction, `rkv sim --txn-fraction`): clients
run two-key txns among their writes, through elections, crashes and partitions, and the
history check and the multi-key linearizability check cover them; a txn semantics broken in
the state machine (which the history model shares: only the linearizability check, built
apart from the store, can see it) is caught, and the failure replays."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

import pytest

from rkv.sim.cluster import Cluster, SimParams
from rkv.sim.runner import Failure, replay_command, run_seed
from rkv.store import txn_apply
from rkv.store.commands import set_key
from rkv.txn import Compare

PARAMS = replace(SimParams(), ticks=300, txn_fraction=0.35)


def test_txns_run_and_pass() -> None:
    kinds: dict[tuple[str, bool | None], int] = {}
    for seed in range(1, 9):
        c = Cluster(seed, PARAMS)
        c.run()  # raises InvariantViolation on any failure
        for op in c.history.ops:
            if op.kind == "txn" and op.completed:
                kinds[(op.kind, op.result)] = kinds.get((op.kind, op.result), 0) + 1
    # both outcomes happen: the compares are real
    assert kinds.get(("txn", True), 0) > 10, kinds
    assert kinds.get(("txn", False), 0) > 3, kinds


def test_default_workload_has_no_txns() -> None:
    c = Cluster(3, replace(SimParams(), ticks=200))
    c.run()
    assert all(op.kind != "txn" for op in c.history.ops)


def test_replay_command_carries_the_fraction() -> None:
    assert "--ticks 300 --txn-fraction 0.35" in replay_command(5, PARAMS)
    assert "not exact" not in replay_command(5, PARAMS)


def first_failure(seeds: Iterable[int], params: SimParams) -> Failure:
    for seed in seeds:
        res = run_seed(seed, params.nodes, params=params)
        if res.failure is not None:
            return res.failure
    pytest.fail(f"no seed failed in {seeds}: the simulator missed the injected bug")


def test_catches_a_txn_that_ignores_its_compare(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Compare, "holds", lambda self, *a: True)
    f = first_failure(range(1, 40), PARAMS)
    assert f.invariant == "linearizability", f.report()
    again = run_seed(f.seed, PARAMS.nodes, params=PARAMS).failure
    assert again is not None and again.report() == f.report()


def test_catches_a_txn_that_writes_one_key(monkeypatch: pytest.MonkeyPatch) -> None:
    def first_key_only(self: txn_apply._Overlay) -> None:
        # deterministic, so every replica (and the history model) agrees on the damage
        # (through set_key, as every write: the store records the change it made, so the
        # stream of changes for watchers agrees with the state and the watch checks pass)
        for key in sorted(self.pending)[:1]:
            rec = self.pending[key]
            if rec is not None:
                set_key(self.txn, key, rec, self._base(key))

    monkeypatch.setattr(txn_apply._Overlay, "write", first_key_only)
    f = first_failure(range(1, 40), PARAMS)
    # the history model takes a txn's writes from its command, so it sees the loss too
    assert f.invariant in ("client-read-value", "linearizability"), f.report()
    # and the linearizability check alone, too (it knows nothing of the store)
    f = first_failure(range(1, 40), replace(PARAMS, history_check=False))
    assert f.invariant == "linearizability", f.report()
