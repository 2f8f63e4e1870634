"""`rkv sim --jobs N` and `--duration S` (rkv.sim.command): the merged summary of the worker
processes is the sum of sequential runs, a seed failing in a worker is reported with its replay
command, a worker that dies or raises outside a seed fails the run, soak runs stop in time
from a printed random first seed, and Ctrl+C stops the workers.

Broken cores reach the workers through the hidden `--raw-node-factory module:attribute` test
hook: the factories below are imported by name in each spawned worker (this module's
directory is on the sys.path the workers inherit).
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from rkv.raft.config import Config
from rkv.raft.log import RaftLog
from rkv.raft.rawnode import RawNode
from rkv.sim.command import run_sim_command

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
TIMING_KEYS = {"elapsed_s", "seeds_per_s", "jobs"}
MAX_KEYS = {"max_ticks_to_elect", "max_ticks_to_converge"}


# -- test-only cores, handed to workers by name ------------------------------------------------


class _AnyVoteLog(RaftLog):
    __slots__ = ()

    def is_up_to_date(self, index: int, term: int) -> bool:
        return True  # voters skip the up-to-date check (§5.4.1)


def grant_any_vote(config: Config, storage: Any, rng: random.Random) -> RawNode:
    raw = RawNode(config, storage, rng)
    raw.raft.log.__class__ = _AnyVoteLog
    return raw


class HarnessBug(BaseException):
    """Escapes run_seed (which turns Exceptions from the core into failed seeds)."""


def raise_outside_the_seed(config: Config, storage: Any, rng: random.Random) -> RawNode:
    raise HarnessBug("the harness broke")


def kill_the_worker(config: Config, storage: Any, rng: random.Random) -> RawNode:
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("unreachable")


def _spec(factory: Any) -> str:
    return f"{__name__}:{factory.__name__}"


# -- helpers -------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _workers_without_coverage(monkeypatch: pytest.MonkeyPatch) -> None:
    """Spawned workers inherit the environment: keep pytest-cov out of them (as the sweep does)."""
    for key in [k for k in os.environ if k.startswith("COV_CORE")]:
        monkeypatch.delenv(key)


@contextmanager
def _bounded(seconds: float) -> Iterator[None]:
    """Fail (instead of hanging the suite) if a run ignores its deadline."""

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"the run went on past {seconds}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _run(*args: Any, **kw: Any) -> tuple[int, str, dict[str, Any]]:
    out = io.StringIO()
    with _bounded(120):
        rc = run_sim_command(*args, out=out, **kw)
    text = out.getvalue()
    return rc, text, json.loads(text.strip().splitlines()[-1])


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two summaries of adjacent ranges, as one summary of both."""
    merged = dict(a)
    for key, value in b.items():
        if key in TIMING_KEYS or key in {"first_seed", "nodes"}:
            continue
        if key in MAX_KEYS or key == "last_seed":
            merged[key] = max(a[key], value)
        elif isinstance(value, list):
            merged[key] = sorted(a[key] + value)
        else:
            merged[key] = a[key] + value
    return merged


def _no_timing(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if k not in TIMING_KEYS}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COV_CORE")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HERE), env.get("PYTHONPATH", "")])
    return env


# -- merged summaries ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nodes", "jobs", "options"),
    [
        (3, 2, {}),
        (3, 3, {"membership": True, "compact_every": 4}),
    ],
)
def test_jobs_summary_is_the_sum_of_sequential_runs(
    nodes: int, jobs: int, options: dict[str, Any]
) -> None:
    first, half = 41, 7
    rc1, _, left = _run(half, first, nodes, True, ticks=60, **options)
    rc2, _, right = _run(half, first + half, nodes, True, ticks=60, **options)
    rc, _, merged = _run(2 * half, first, nodes, True, ticks=60, jobs=jobs, **options)
    assert rc == rc1 == rc2 == 0
    assert merged["jobs"] == jobs and left["jobs"] == 1
    assert merged["seeds"] == 2 * half and merged["last_seed"] == first + 2 * half - 1
    assert _no_timing(merged) == _no_timing(_merge(left, right))
    assert merged["committed_entries"] > 0 and merged["seeds_per_s"] > 0
    if options.get("membership"):
        assert merged["members_joined"] > 0


def test_a_seed_failing_in_a_worker_is_reported_with_its_replay_command() -> None:
    spec = _spec(grant_any_vote)
    rc, text, summary = _run(30, 1, 3, True, ticks=150, jobs=2, raw_node_factory=spec)
    assert rc == 1
    failed = summary["failed_seeds"]
    assert summary["failures"] == len(failed) > 0 and failed == sorted(failed)
    for seed in failed:
        assert f"FAILED seed {seed} (3 nodes)" in text
        assert f"replay: rkv sim --seeds 1 --first-seed {seed} --nodes 3 --ticks 150\n" in text
    assert summary["worker_errors"] == []
    # the same seeds fail, with the same reports, in this process
    rc1, text1, sequential = _run(30, 1, 3, True, ticks=150, raw_node_factory=spec)
    assert rc1 == 1 and sequential["failed_seeds"] == failed
    assert _no_timing(sequential) == _no_timing(summary)
    reports = sorted(re.findall(r"^FAILED seed \d+ .*?replay: .*?$", text, re.M | re.S))
    assert reports == sorted(re.findall(r"^FAILED seed \d+ .*?replay: .*?$", text1, re.M | re.S))


@pytest.mark.parametrize(
    ("factory", "expected"),
    [
        (raise_outside_the_seed, r"sim: worker \d raised outside a seed \(at seed \d+\):\n"),
        (kill_the_worker, r"sim: worker \d \(pid \d+\) died with exit code -9"),
    ],
)
def test_a_broken_worker_fails_the_run(factory: Any, expected: str) -> None:
    rc, text, summary = _run(20, 1, 3, True, ticks=60, jobs=2, raw_node_factory=_spec(factory))
    assert rc == 1
    assert re.search(expected, text), text[-3000:]
    assert "sim: the run is incomplete: seeds " in text
    assert summary["worker_errors"] and summary["seeds"] < 20
    if factory is raise_outside_the_seed:
        assert "HarnessBug: the harness broke" in text
    # the human summary says so too
    out = io.StringIO()
    assert (
        run_sim_command(4, 1, 3, False, ticks=60, jobs=2, raw_node_factory=_spec(factory), out=out)
        == 1
    )
    assert "RUN FAILED: 1 worker error(s)" in out.getvalue().splitlines()[-1]


def test_a_bad_factory_spec_is_a_usage_error() -> None:
    out = io.StringIO()
    assert run_sim_command(2, 1, 3, True, jobs=2, raw_node_factory="no_colon", out=out) == 2
    assert run_sim_command(2, 1, 3, True, raw_node_factory="rkv.sim:nope", out=out) == 2


# -- soak runs ------------------------------------------------------------------------------


@pytest.mark.parametrize("jobs", [1, 2])
def test_duration_stops_in_time_from_a_printed_random_first_seed(jobs: int) -> None:
    rc, text, summary = _run(None, None, 3, True, ticks=60, jobs=jobs, duration=1.5)
    assert rc == 0
    started = re.match(r"sim: soak for 1.5s from random first seed (\d+)\n", text)
    assert started, text[:200]
    first = int(started.group(1))
    assert summary["first_seed"] == first and summary["jobs"] == jobs
    assert summary["seeds"] > 5
    assert summary["last_seed"] == first + summary["seeds"] - 1  # one contiguous range
    assert 1.5 <= summary["elapsed_s"] < 6


def test_two_soak_runs_start_apart_and_a_given_first_seed_is_kept() -> None:
    firsts = {_run(None, None, 3, True, ticks=60, duration=0.2)[2]["first_seed"] for _ in range(2)}
    assert len(firsts) == 2
    _, text, summary = _run(None, 500, 3, True, ticks=60, duration=0.2)
    assert text.startswith("sim: soak for 0.2s from first seed 500\n")
    assert summary["first_seed"] == 500 and summary["last_seed"] == 499 + summary["seeds"]


@pytest.mark.parametrize("jobs", [1, 2])
def test_seeds_and_duration_stop_at_whichever_comes_first(jobs: int) -> None:
    started = time.monotonic()
    rc, _, summary = _run(6, 10, 3, True, ticks=60, jobs=jobs, duration=120)
    assert rc == 0 and summary["seeds"] == 6 and summary["last_seed"] == 15
    assert time.monotonic() - started < 60
    rc, _, summary = _run(10**9, 10, 3, True, ticks=60, jobs=jobs, duration=1)
    assert rc == 0 and 0 < summary["seeds"] < 10**9 and summary["elapsed_s"] < 6


def test_soak_through_the_cli_in_a_subprocess() -> None:
    """The `rkv sim` command itself (typer), bounded by --duration alone (a subprocess, so a
    broken deadline times out instead of hanging the suite)."""
    cmd = [sys.executable, "-m", "rkv", "sim", "--duration", "1", "--ticks", "60", "-j", "2"]
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), text=True, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert time.monotonic() - started < 20
    lines = proc.stdout.strip().splitlines()
    first = int(re.fullmatch(r"sim: soak for 1s from random first seed (\d+)", lines[0])[1])  # type: ignore[index]
    assert re.match(rf"sim: \d+ seeds x 3 nodes from {first} to \d+: all passed \|", lines[-1])
    assert lines[-1].endswith(", 2 jobs)")


# -- Ctrl+C ---------------------------------------------------------------------------------


def _workers(pid: int) -> set[int]:
    """The spawned worker processes of `pid` (not multiprocessing's resource tracker)."""
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if ppid == pid and b"spawn_main" in cmdline:
            out.add(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc for the worker pids")
def test_ctrl_c_stops_the_workers_and_prints_the_summary() -> None:
    """Ctrl+C at a terminal signals the whole process group: the workers ignore it, the parent
    stops them (none outlives it) and prints the summary of the seeds that ran."""
    cmd = [sys.executable, "-m", "rkv.sim", "--seeds", "1000000", "--nodes", "5"]
    proc = subprocess.Popen(
        [*cmd, "--jobs", "2", "--json", "--verbose"],
        cwd=ROOT,
        env=_env(),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        # Ctrl+C's default action even when this test runs in the background of a shell,
        # which starts everything with SIGINT ignored (and Python keeps it so)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    watchdog = threading.Timer(60, proc.kill)
    watchdog.start()
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # a seed has run: the workers are up
        assert re.match(r"seed \d+ n=5 ok ", first), first
        workers = _workers(proc.pid)
        assert len(workers) == 2
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
        still_running = [p for p in workers if _alive(p)]
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stdout[-2000:] + stderr[-2000:]
    assert not still_running, "a worker outlived Ctrl+C"
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = stdout.strip().splitlines()
    assert lines[-2].startswith("sim: interrupted after ")
    summary = json.loads(lines[-1])
    assert summary["seeds"] >= 1 and summary["failures"] == 0 and summary["jobs"] == 2
    assert summary["seeds"] == len(lines) - 1  # one verbose line per seed, the first read above
