"""Seed sweeps: thousands of randomized runs across 3, 5 and 7 nodes must all pass.

Each shard is one `python -m rkv.sim ... --json` process (the same entry point a person uses),
two at a time so both CI cores work. A failing seed prints its report (invariant, trace,
replay command) into the shard's output, which the assertion message carries.
Coverage tracing is not propagated into the shards: they check the system, the core's unit
tests measure its coverage, and tracing would triple the sweep's time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from rkv.sim.runner import DEFAULT, run_seed

ROOT = Path(__file__).resolve().parents[2]
TICKS = 100
# (nodes, first seed, seeds): 2,000 seeds in all, weighted toward the cheaper small clusters
SWEEPS = [(3, 1, 1000), (5, 1, 600), (7, 1, 400)]
PARALLEL = 2


def _shards() -> list[tuple[int, int, int]]:
    out = []
    for nodes, first, count in SWEEPS:
        half = count // 2
        out += [(nodes, first, half), (nodes, first + half, count - half)]
    return out


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COV_CORE")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _run_shard(shard: tuple[int, int, int]) -> tuple[tuple[int, int, int], int, str]:
    nodes, first, count = shard
    cmd = [
        sys.executable, "-m", "rkv.sim", "--json",
        "--seeds", str(count), "--first-seed", str(first),
        "--nodes", str(nodes), "--ticks", str(TICKS),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), text=True, capture_output=True, timeout=900)
    return shard, proc.returncode, proc.stdout + proc.stderr[-3000:]


def test_seed_sweeps_pass_across_3_5_and_7_nodes() -> None:
    # the most expensive shards first, so the two workers finish together
    shards = sorted(_shards(), key=lambda s: -s[0] * s[2])
    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        results = list(pool.map(_run_shard, shards))

    seeds = 0
    totals = {"leader_changes": 0, "crashes": 0, "partitions": 0, "committed_entries": 0}
    problems = []
    for (nodes, first, count), code, out in results:
        lines = [line for line in out.strip().splitlines() if line.startswith("{")]
        assert lines, f"shard {nodes} nodes from {first} printed no summary:\n{out[-3000:]}"
        summary = json.loads(lines[-1])
        assert summary["seeds"] == count and summary["nodes"] == nodes
        seeds += summary["seeds"]
        for k in totals:
            totals[k] += summary[k]
        if code != 0 or summary["failures"]:
            at = out.find("FAILED seed")
            report = out[at : at + 8000] if at >= 0 else out[-3000:]
            problems.append(
                f"--- {nodes} nodes, seeds {first}..{first + count - 1}: "
                f"failed {summary['failed_seeds']}\n{report}"
            )
    assert not problems, "\n".join(problems)
    assert seeds >= 2000
    # the sweep really exercised faults and made progress
    assert all(v > seeds for v in totals.values()), totals


def test_in_process_seeds_pass_and_do_work() -> None:
    for nodes in (3, 5, 7):
        res = run_seed(nodes * 1000, nodes, params=replace(DEFAULT, ticks=400))
        assert res.ok, res.failure.report() if res.failure else ""
        s = res.stats
        assert s.committed_entries > 10 and s.ops_completed > 10
        assert s.crashes + s.partitions > 5
        assert s.leader_changes >= 1
