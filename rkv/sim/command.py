"""`rkv sim`: run a range of seeds, print progress and a summary, return the exit code.

Owns: `run_sim_command`, the entry point the CLI (and `python -m rkv.sim`) calls, and the
summary it prints (a human line, or with json_output one JSON object as the last line). Must
not: parse arguments (the CLI does) or run anything but rkv.sim.runner. Elapsed time is measured
here, outside the runs, for the summary only.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from typing import TextIO

from rkv.sim.runner import DEFAULT, SeedResult, run_seed


def run_sim_command(
    seeds: int,
    first_seed: int,
    nodes: int,
    json_output: bool,
    verbose: bool = False,
    *,
    ticks: int | None = None,
    compact_every: int = 0,
    membership: bool = False,
    out: TextIO | None = None,
) -> int:
    """Run seeds first_seed .. first_seed+seeds-1 on a `nodes`-node cluster. Returns 0 only if
    every seed passed. Failures are reported (with trace and replay command) as they happen."""
    out = out if out is not None else sys.stdout
    if seeds < 1 or nodes < 1:
        print("error: --seeds and --nodes must be >= 1", file=out)
        return 2
    params = DEFAULT if ticks is None else replace(DEFAULT, ticks=ticks)
    if compact_every:
        params = replace(params, compact_every=compact_every)
    if membership:
        params = replace(params, membership=True)
    if verbose and seeds == 1:
        params = replace(params, full_trace=True)
    totals = {
        "leader_changes": 0,
        "crashes": 0,
        "restarts": 0,
        "partitions": 0,
        "committed_entries": 0,
        "max_ticks_to_elect": 0,
        "max_ticks_to_converge": 0,
        "ops_completed": 0,
        "events": 0,
        "messages": 0,
        "members_joined": 0,
        "members_removed": 0,
    }
    failed: list[int] = []
    started = time.perf_counter()
    for seed in range(first_seed, first_seed + seeds):
        res: SeedResult = run_seed(seed, nodes, params=params)
        s = res.stats
        totals["leader_changes"] += s.leader_changes
        totals["crashes"] += s.crashes
        totals["restarts"] += s.restarts
        totals["partitions"] += s.partitions
        totals["committed_entries"] += s.committed_entries
        totals["ops_completed"] += s.ops_completed
        totals["events"] += s.events
        totals["messages"] += s.messages
        totals["members_joined"] += s.members_joined
        totals["members_removed"] += s.members_removed
        totals["max_ticks_to_elect"] = max(totals["max_ticks_to_elect"], s.ticks_to_elect)
        totals["max_ticks_to_converge"] = max(totals["max_ticks_to_converge"], s.ticks_to_converge)
        if res.trace:
            for line in res.trace:
                print(line, file=out)
        if res.failure is not None:
            failed.append(seed)
            print(res.failure.report(), file=out, flush=True)
        elif verbose:
            print(res.summary(), file=out, flush=True)
        elif not json_output and seeds >= 100 and (seed - first_seed + 1) % (seeds // 10) == 0:
            done = seed - first_seed + 1
            print(f"  {done}/{seeds} seeds, {len(failed)} failed", file=out, flush=True)
    elapsed = time.perf_counter() - started
    summary = {
        "seeds": seeds,
        "first_seed": first_seed,
        "nodes": nodes,
        "failures": len(failed),
        "failed_seeds": failed,
        **totals,
        "elapsed_s": round(elapsed, 3),
        "seeds_per_s": round(seeds / elapsed, 2) if elapsed > 0 else None,
    }
    if json_output:
        print(json.dumps(summary, sort_keys=True), file=out)
    else:
        verdict = "all passed" if not failed else f"{len(failed)} FAILED: {failed[:20]}"
        print(
            f"sim: {seeds} seeds x {nodes} nodes from {first_seed}: {verdict} | "
            f"leader changes {totals['leader_changes']}, crashes {totals['crashes']}, "
            f"partitions {totals['partitions']}, committed {totals['committed_entries']}, "
            f"ops {totals['ops_completed']}, max ticks to elect {totals['max_ticks_to_elect']}"
            + (
                f", members joined {totals['members_joined']} removed {totals['members_removed']}"
                if membership
                else ""
            )
            + " | "
            f"{elapsed:.1f}s ({summary['seeds_per_s']} seeds/s)",
            file=out,
        )
    return 0 if not failed else 1
