"""`run_sim_command` (behind `rkv sim` and `python -m rkv.sim`): exit code, progress, the JSON
summary as the last line, and the failure report with its replay command."""

from __future__ import annotations

import io
import json

import pytest

from rkv.raft.log import RaftLog
from rkv.sim.__main__ import main
from rkv.sim.command import run_sim_command


def test_passing_seeds_exit_0_with_a_json_summary() -> None:
    out = io.StringIO()
    rc = run_sim_command(3, 21, 3, True, ticks=60, out=out)
    assert rc == 0
    summary = json.loads(out.getvalue().strip().splitlines()[-1])
    assert summary["seeds"] == 3 and summary["failures"] == 0 and summary["failed_seeds"] == []
    for key in (
        "leader_changes",
        "crashes",
        "partitions",
        "committed_entries",
        "max_ticks_to_elect",
    ):
        assert isinstance(summary[key], int)
    assert summary["committed_entries"] > 0 and summary["leader_changes"] > 0
    assert summary["elapsed_s"] >= 0


def test_human_summary_line() -> None:
    out = io.StringIO()
    assert run_sim_command(2, 1, 3, False, ticks=60, out=out) == 0
    last = out.getvalue().strip().splitlines()[-1]
    assert last.startswith("sim: 2 seeds x 3 nodes from 1: all passed")


def test_verbose_single_seed_prints_the_trace() -> None:
    out = io.StringIO()
    assert run_sim_command(1, 5, 3, False, verbose=True, ticks=60, out=out) == 0
    lines = out.getvalue().splitlines()
    assert len(lines) > 50
    assert any("Ready(" in line for line in lines) and any(" send " in line for line in lines)


def test_failures_exit_1_with_report_and_replay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RaftLog, "is_up_to_date", lambda self, index, term: True)
    out = io.StringIO()
    rc = run_sim_command(30, 1, 3, True, ticks=150, out=out)
    text = out.getvalue()
    summary = json.loads(text.strip().splitlines()[-1])
    assert rc == 1
    assert summary["failures"] == len(summary["failed_seeds"]) > 0
    first = summary["failed_seeds"][0]
    assert f"FAILED seed {first} (3 nodes)" in text
    assert f"replay: rkv sim --seeds 1 --first-seed {first} --nodes 3 --ticks 150" in text
    assert "last 60 events:" in text


def test_bad_arguments_exit_2() -> None:
    out = io.StringIO()
    assert run_sim_command(0, 1, 3, False, out=out) == 2


def test_module_entry_point(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seeds", "2", "--nodes", "3", "--ticks", "60", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["seeds"] == 2
