"""Bounded nemesis runs against real `python -m rkv serve` processes (3 and 5 nodes), every
fault kind, asserting a clean verdict with real work done; the real history, with one stale
read injected, must then fail the same checking step; a cluster with a planted stale-read
bug must fail a run; `python -m rkv.nemesis --json`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rkv.nemesis import FAULT_KINDS, NemesisConfig, Report, check_histories, run_nemesis
from rkv.sim.linearizability import Operation, OpKind

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


def _assert_clean_and_busy(report: Report) -> None:
    assert report.clean, report.summary() + "\n" + "\n".join(report.events)
    for kind in FAULT_KINDS:
        assert report.faults.get(kind, 0) > 0, f"{kind} never injected: {report.faults}"
    assert report.leader_faults > 0
    for kind in ("get", "put", "cas", "delete"):
        assert report.operations[kind].get("ok", 0) > 0, report.operations
    assert report.histories_checked >= 5
    assert report.checked_operations > 100


def _written(op: Operation) -> tuple[bool, object]:
    """(acknowledged write?, the value it left: None for a delete)."""
    if op.return_time is None:
        return False, None
    if op.kind is OpKind.PUT:
        return True, op.input
    if op.kind is OpKind.CAS and op.output is True:
        return True, op.input[1]
    if op.kind is OpKind.DELETE:
        return True, None
    return False, None


def _inject_stale_read(ops: list[Operation]) -> Operation:
    """A get returning w1's value just after an acknowledged w2, invoked after w1 returned,
    replaced it: values are unique, so nothing can explain it. The earliest such pair is
    used, where few unknown outcomes are pending and the checker refutes it quickly (late
    in a long history it may run out of budget: inconclusive, never a pass)."""
    by_call = sorted(ops, key=lambda o: o.call_time)
    for i, w1 in enumerate(by_call):
        acked1, v1 = _written(w1)
        if not acked1 or v1 is None:
            continue
        for w2 in by_call[i + 1 :]:
            acked2, v2 = _written(w2)
            if w2.key != w1.key or not acked2 or v2 == v1:
                continue
            assert w1.return_time is not None and w2.return_time is not None
            if w2.call_time > w1.return_time:
                t = w2.return_time + 1e-6
                return Operation("intruder", OpKind.GET, w1.key, None, v1, t, t + 1e-6)
    raise AssertionError("no acknowledged, overwritten write in the history")


@pytest.mark.parametrize(("nodes", "seed"), [(3, 1001), (5, 1002)])
async def test_nemesis_run_is_clean_and_its_check_has_teeth(
    tmp_path: Path, nodes: int, seed: int
) -> None:
    cfg = NemesisConfig(
        duration=30.0,
        min_rounds=1,
        nodes=nodes,
        clients=8,
        seed=seed,
        fault_hold=(1.0, 2.5),
        quiet=(0.3, 1.0),
        workdir=tmp_path / "run",
    )
    report = await run_nemesis(cfg)
    _assert_clean_and_busy(report)
    assert (tmp_path / "run" / "history.jsonl").exists()
    # The very step that judged the run must reject the same history plus one stale read.
    stale = _inject_stale_read(report.history)
    hc = check_histories([*report.history, stale])
    assert len(hc.violations) == 1, hc.violations
    assert repr(stale.key) in hc.violations[0]


async def test_nemesis_catches_a_node_that_serves_stale_reads(tmp_path: Path) -> None:
    """End to end: nodes whose linearizable reads skip ReadIndex (tests/nemesis/
    broken_node.py) must fail the run once partitions cut a node off."""
    cfg = NemesisConfig(
        duration=20.0,
        nodes=3,
        clients=8,
        seed=3,
        faults=("isolate_leader", "partition"),
        fault_hold=(2.0, 3.0),
        quiet=(0.3, 0.6),
        node_command=(sys.executable, str(Path(__file__).with_name("broken_node.py"))),
        workdir=tmp_path / "broken",
    )
    report = await run_nemesis(cfg)
    assert report.verdict == "violation", report.summary()
    assert report.violations, report.summary()
    assert sum(report.operations["get"].values()) > 0


def test_python_m_rkv_nemesis_json(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "rkv.nemesis",
            "--duration",
            "4",
            "--nodes",
            "3",
            "--faults",
            "kill,partition",
            "--seed",
            "7",
            "--json",
            "--workdir",
            str(tmp_path / "w"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1
    data = json.loads(lines[0])
    assert data["verdict"] == "clean"
    assert data["seed"] == 7
    assert data["violations"] == 0
    assert set(data["faults"]) <= {"kill", "partition"}
    assert sum(c.get("ok", 0) for c in data["operations"].values()) > 0


def test_bad_arguments_exit_2() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "rkv.nemesis", "--faults", "meteor"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "unknown fault kinds: meteor" in out.stderr
