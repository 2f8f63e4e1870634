"""Bounded nemesis runs against real `python -m rkv serve` processes (3 and 5 nodes), every
fault kind, asserting a clean verdict with real work done; the real history, with one stale
read injected, must then fail the same checking step; `python -m rkv.nemesis --json`."""

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


def _inject_stale_read(ops: list[Operation]) -> Operation:
    """A get, after a key's final linearizable read, returning an older acknowledged value."""
    for fin in ops:
        if fin.client != "final" or fin.return_time is None:
            continue
        for w in ops:
            acked = w.return_time is not None and (
                w.kind is OpKind.PUT or (w.kind is OpKind.CAS and w.output is True)
            )
            value = w.input if w.kind is OpKind.PUT else (w.input[1] if acked else None)
            if (
                acked
                and w.key == fin.key
                and value != fin.output
                and w.return_time is not None
                and w.return_time < fin.call_time
            ):
                t = fin.return_time + 1.0
                return Operation("intruder", OpKind.GET, w.key, None, value, t, t + 0.1)
    raise AssertionError("no acknowledged, overwritten write in the history")


@pytest.mark.parametrize(("nodes", "seed"), [(3, 1001), (5, 1002)])
async def test_nemesis_run_is_clean_and_its_check_has_teeth(
    tmp_path: Path, nodes: int, seed: int
) -> None:
    cfg = NemesisConfig(
        duration=40.0,
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
