"""Log compaction and snapshot install under the simulator's faults: nodes compact their log
every few entries, so crashed and partitioned followers come back through SNAPSHOT messages;
every run must keep all safety checks, and broken snapshots must be caught."""

from __future__ import annotations

from dataclasses import replace

import pytest

from rkv.raft.types import Entry
from rkv.sim.runner import DEFAULT, run_seed
from rkv.sim.statemachine import ApplyResult, KVStateMachine, StoreStateMachine

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


class ForgetsSessions(KVStateMachine):
    """A snapshot that loses the client sessions: retried writes apply twice."""

    def snapshot(self) -> bytes:
        saved, self.sessions = self.sessions, {}
        try:
            return super().snapshot()
        finally:
            self.sessions = saved


class StaleSnapshot(KVStateMachine):
    """A snapshot taken from an older state than the index it claims (loses recent writes)."""

    __slots__ = ("_old",)

    def __init__(self) -> None:
        super().__init__()
        self._old: dict[str, str] = {}

    def apply(self, entry: Entry) -> ApplyResult:
        self._old = dict(self.data)
        return super().apply(entry)

    def snapshot(self) -> bytes:
        saved, self.data = self.data, self._old
        try:
            return super().snapshot()
        finally:
            self.data = saved


class StoreInstallDropsSessions(StoreStateMachine):
    """The real store, but a follower's snapshot install loses the client sessions."""

    __slots__ = ()

    def restore(self, blob: bytes) -> None:
        super().restore(blob)
        self.store._st.sessions.clear()


def test_the_default_state_machine_is_the_real_store() -> None:
    from rkv.sim.cluster import Cluster

    c = Cluster(1, PARAMS)
    assert all(isinstance(n.sm, StoreStateMachine) for n in c.nodes.values())
    assert c.write_kinds == ("put", "cas", "delete")


@pytest.mark.parametrize("broken", [ForgetsSessions, StaleSnapshot, StoreInstallDropsSessions])
def test_broken_snapshots_are_caught(broken: type[KVStateMachine]) -> None:
    for seed in range(1, 61):
        r = run_seed(seed, 3, params=PARAMS, state_machine_factory=broken)
        if r.failure is not None:
            return
    pytest.fail(f"no seed caught {broken.__name__}")


def test_replay_command_carries_compaction() -> None:
    from rkv.sim.runner import replay_command

    cmd = replay_command(7, replace(PARAMS, nodes=5))
    assert (
        cmd == "rkv sim --seeds 1 --first-seed 7 --nodes 5 --ticks 300 --compact-every 5"
    )
    from rkv.sim.__main__ import main

    assert main(["--seeds", "2", "--nodes", "3", "--ticks", "200", "--compact-every", "4"]) == 0
