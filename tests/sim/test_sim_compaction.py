"""Log compaction and snapshot install under the simulator's faults: nodes compact their log
every few entries, so crashed and partitioned followers come back through SNAPSHOT messages;
every run must keep all safety checks, and broken snapshots must be caught."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from rkv.codec import SNAP_KV, SNAP_SESSIONS
from rkv.replica import Replica
from rkv.sim.cluster import Cluster
from rkv.sim.runner import DEFAULT, run_seed
from rkv.store import MemoryStore
from rkv.store import memory as memory_mod

PARAMS = replace(DEFAULT, ticks=300, compact_every=5)


@pytest.mark.parametrize(("nodes", "seeds"), [(3, 40), (5, 20)])
def test_fault_runs_with_compaction_pass(nodes: int, seeds: int) -> None:
    installs = compactions = 0
    for seed in range(1, seeds + 1):
        r = run_seed(seed, nodes, params=PARAMS)
        assert r.failure is None, f"{r.failure.invariant}: {r.failure.detail}\n{r.failure.replay}"
        installs += r.stats.snapshots_installed
        compactions += r.stats.compactions
    assert compactions > seeds  # compaction ran...
    assert installs > 0  # ...and followers came back through snapshots


def forgets_sessions(monkeypatch: pytest.MonkeyPatch) -> None:
    """The snapshot stream leaves out the client sessions: retried writes apply twice."""
    real = memory_mod._records

    def records(st: Any) -> list[Any]:
        return [r for r in real(st) if r[0] != SNAP_SESSIONS]

    monkeypatch.setattr(memory_mod, "_records", records)


def stale_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stream claims the applied index but lacks the most recent write (its key's
    record is left out): the follower loses an applied write."""
    real = memory_mod._records

    def records(st: Any) -> list[Any]:
        recs = real(st)
        newest = max(st.kv.items(), key=lambda kv: kv[1].mod_index, default=None)
        if newest is None:
            return recs
        return [r for r in recs if not (r[0] == SNAP_KV and r[1] == newest[0])]

    monkeypatch.setattr(memory_mod, "_records", records)


def install_drops_sessions(monkeypatch: pytest.MonkeyPatch) -> None:
    """A follower's install of a (correct) stream loses the client sessions."""
    real = MemoryStore.finish_snapshot_staging

    def finish(self: MemoryStore, chunks: int, records: int) -> Any:
        meta = real(self, chunks, records)
        staged = self._st.staged_state
        assert staged is not None
        staged.sessions.clear()
        return meta

    monkeypatch.setattr(MemoryStore, "finish_snapshot_staging", finish)


def test_nodes_run_the_real_replica_over_the_real_store() -> None:
    c = Cluster(1, PARAMS)
    c.start()
    c.run_until(50 * c.p.tick_interval)
    assert all(isinstance(n.store, MemoryStore) for n in c.nodes.values())
    assert all(isinstance(n.replica, Replica) for n in c.nodes.values() if n.up)
    assert c.write_kinds == ("put", "cas", "delete", "txn")  # txns only with txn_fraction


@pytest.mark.parametrize(
    ("broken", "caught"),
    [
        # the replicas' states differ at one applied index: the state-hash check names it first
        (
            forgets_sessions,
            {"state-hash", "applied-twice", "client-write-result", "linearizability"},
        ),
        (
            stale_snapshot,
            {"state-hash", "client-read-value", "linearizability", "client-write-result"},
        ),
        (
            install_drops_sessions,
            {"state-hash", "applied-twice", "client-write-result", "linearizability"},
        ),
    ],
)
def test_broken_snapshots_are_caught(
    monkeypatch: pytest.MonkeyPatch, broken: Callable[[pytest.MonkeyPatch], None], caught: set[str]
) -> None:
    broken(monkeypatch)
    for seed in range(1, 81):
        r = run_seed(seed, 3, params=PARAMS)
        if r.failure is not None:
            assert r.failure.invariant in caught, r.failure.report()
            return
    pytest.fail(f"no seed caught {broken.__name__}")


def test_replay_command_carries_compaction() -> None:
    from rkv.sim.runner import replay_command

    cmd = replay_command(7, replace(PARAMS, nodes=5))
    assert cmd == "rkv sim --seeds 1 --first-seed 7 --nodes 5 --ticks 300 --compact-every 5"
    from rkv.sim.__main__ import main

    assert main(["--seeds", "2", "--nodes", "3", "--ticks", "200", "--compact-every", "4"]) == 0
