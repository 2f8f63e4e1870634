"""A short nemesis run with watchers and lock holders (`--watchers`, `--locks`) on real
processes, leader kills and pauses, small watch windows and snapshots (a slow watcher gets
Compacted and resumes from a scan): clean, with real work done; the records of that very run, harmed once (an acknowledged event dropped from a
watcher, a stale token accepted), must then fail the same checks; bad values exit 2."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from rkv.nemesis import NemesisConfig, coord, run_nemesis
from rkv.nemesis.coord_check import (
    FenceAttempt,
    acknowledged_values,
    check_fence,
    check_watchers,
)

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


async def test_watchers_and_locks_across_faults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The slow watcher stalls more often than a default run's, so that it falls behind the
    # 30-change window in every run: since the window is durable (a watcher behind a restarted
    # node is served from the store), the default rate gave 0 Compacted about once in 9 runs.
    monkeypatch.setattr(coord, "STALL_P", 0.01)
    cfg = NemesisConfig(
        duration=25.0,
        nodes=3,
        clients=6,
        seed=1601,
        faults=("kill", "pause", "isolate_leader"),
        fault_hold=(1.0, 2.5),
        quiet=(0.3, 1.0),
        min_rounds=1,
        watchers=2,
        locks=3,
        lock_ttl=1.0,
        watch_history=30,
        snapshot_entries=300,
        workdir=tmp_path / "run",
    )
    report = await run_nemesis(cfg)
    assert report.clean, report.summary() + "\n" + "\n".join(report.events)
    assert report.watch["events"] > 100, report.watch
    assert report.watch["acknowledged_writes_checked"] > 50, report.watch
    # w1 stalls behind a 30-change window: Compacted, a scan, a gap it is excused for.
    assert report.watch["compacted"] > 0 and report.watch["skipped_in_gaps"] > 0, report.watch
    assert report.locks.get("acquisitions", 0) > 3, report.locks
    assert report.locks.get("fenced_accepted", 0) > 3, report.locks
    assert "acquisitions" in report.summary() and "events" in report.summary()

    # Teeth on the run's own records: drop one acknowledged write's event from a watcher.
    acked = acknowledged_values(report.history)
    logs = [dataclasses.replace(w, events=list(w.events)) for w in report.watch_logs]
    victim = next(
        i for i, (rev, _, _, v) in enumerate(logs[0].events) if v in acked and logs[0].covers(rev)
    )
    del logs[0].events[victim]
    v = check_watchers(report.history, logs, report.end_revision)
    assert any("missing" in p for p in v.problems), v.problems
    # ... or deliver it twice.
    logs = [dataclasses.replace(w, events=list(w.events)) for w in report.watch_logs]
    logs[1].events.insert(victim, logs[1].events[victim])
    assert check_watchers(report.history, logs, report.end_revision).problems

    # A late write of the first holder accepted after the last accepted write.
    accepted = [a for a in report.fence_attempts if a.outcome == "accepted"]
    first, last = min(accepted, key=lambda a: a.token), max(accepted, key=lambda a: a.revision)
    assert first.token < last.token
    stale = FenceAttempt(first.holder, first.token, True, "accepted", last.revision + 1)
    problems = check_fence([*report.fence_attempts, stale], report.final_token)
    assert any("stale token accepted" in p for p in problems), problems


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--watchers", "-1"], "watchers and locks must be in 0..64"),
        (["--locks", "65"], "watchers and locks must be in 0..64"),
        (["--locks", "1", "--lock-ttl", "0.1"], "lock_ttl must be in 0.2..60"),
        (["--watch-history", "0"], "watch_history must be >= 1"),
    ],
)
def test_bad_values_exit_2(args: list[str], message: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "rkv.nemesis", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2, out.stderr
    assert message in out.stderr
