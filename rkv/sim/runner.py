"""Running seeds: one seed to a SeedResult, failures to a readable, replayable report.

Owns: `run_seed` (build a Cluster for one seed, run it, catch the first InvariantViolation or
unexpected exception from the core, and package stats, trace and the replay command),
`replay_command` (the `rkv sim` command line that stands for a seed and its SimParams),
`SeedResult` and `Failure`. Must not: print (rkv.sim.command does), or read a clock inside a run
(the caller times runs from outside).
"""

from __future__ import annotations

import random
import traceback
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

from rkv.raft.config import Config
from rkv.sim.cluster import Cluster, SimParams, Stats
from rkv.sim.invariants import InvariantViolation

DEFAULT = SimParams()


# SimParams fields the replay command carries as options, and those that only change how much
# of the trace is kept (not what the run does)
_COVERED = frozenset(
    {
        "nodes",
        "ticks",
        "compact_every",
        "membership",
        "disk_replace",
        "txn_fraction",
        "lease_fraction",
        "trace_len",
        "full_trace",
    }
)


def replay_command(seed: int, params: SimParams) -> str:
    """The one command that replays `seed` with `params` exactly: `rkv sim` with the options
    (--ticks, --compact-every, --membership) that differ from the defaults. Run-affecting
    SimParams fields the command line cannot set (tests build such params) are named after a
    shell comment, so the command still runs but says it is not the whole story."""
    cmd = f"rkv sim --seeds 1 --first-seed {seed} --nodes {params.nodes}"
    if params.ticks != DEFAULT.ticks:
        cmd += f" --ticks {params.ticks}"
    if params.compact_every != DEFAULT.compact_every:
        cmd += f" --compact-every {params.compact_every}"
    if params.membership:
        cmd += " --membership"
    if params.disk_replace:
        cmd += " --disk-replace"
    if params.txn_fraction:
        cmd += f" --txn-fraction {params.txn_fraction:g}"
    if params.lease_fraction:
        cmd += f" --lease-fraction {params.lease_fraction:g}"
    other = [
        f"{f.name}={getattr(params, f.name)!r}"
        for f in fields(params)
        if f.name not in _COVERED and getattr(params, f.name) != getattr(DEFAULT, f.name)
    ]
    if other:
        cmd += f"  # not exact: also SimParams({', '.join(other)}), which no option sets"
    return cmd


@dataclass(frozen=True, slots=True)
class Failure:
    seed: int
    nodes: int
    invariant: str
    detail: str
    time: int
    trace: tuple[str, ...]
    replay: str

    def report(self) -> str:
        lines = [
            f"FAILED seed {self.seed} ({self.nodes} nodes) at t={self.time}: {self.invariant}",
            f"  {self.detail}",
            f"  last {len(self.trace)} events:",
        ]
        lines += [f"    {line}" for line in self.trace]
        lines.append(f"  replay: {self.replay}")
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class SeedResult:
    seed: int
    nodes: int
    stats: Stats
    failure: Failure | None = None
    trace: tuple[str, ...] = ()
    """The full trace when params.full_trace was set (else empty)."""

    @property
    def ok(self) -> bool:
        return self.failure is None

    def summary(self) -> str:
        s = self.stats
        return (
            f"seed {self.seed} n={self.nodes} {'ok' if self.ok else 'FAIL'} "
            f"t={s.virtual_time} events={s.events} msgs={s.messages} leaders={s.leader_changes} "
            f"crashes={s.crashes} partitions={s.partitions} committed={s.committed_entries} "
            f"ops={s.ops_completed}/{s.ops_invoked} elect={s.ticks_to_elect} "
            f"converge={s.ticks_to_converge}"
        )


RawNodeFactory = Callable[[Config, Any, random.Random], Any]


def run_seed(
    seed: int,
    nodes: int = 3,
    *,
    params: SimParams | None = None,
    raw_node_factory: RawNodeFactory | None = None,
) -> SeedResult:
    """Run one seed. `params` (its `nodes` is overridden by `nodes`) and `raw_node_factory` (a
    RawNode stand-in, e.g. a deliberately broken subclass in tests) default to the real ones.
    The nodes always apply through the real store; tests break it by patching."""
    p = replace(params or DEFAULT, nodes=nodes)
    cluster = Cluster(seed, p, raw_node_factory=raw_node_factory)
    failure = None
    try:
        cluster.run()
    except InvariantViolation as v:
        failure = _failure(cluster, p, v.invariant, v.detail)
    except Exception as exc:  # an exception out of the core is a failed seed, not a crash
        tb = traceback.format_exception(exc)
        where = "".join(tb[-3:]).strip().replace("\n", " | ")
        failure = _failure(cluster, p, "exception", f"{type(exc).__name__}: {exc} [{where}]")
    stats = cluster.stats
    if failure is not None:
        stats.virtual_time = cluster.now
        stats.leader_changes = cluster.checker.leader_changes
        stats.committed_entries = cluster.checker.committed_index
        stats.messages = cluster.net.sent
    full = tuple(cluster.trace_lines()) if p.full_trace else ()
    return SeedResult(seed, nodes, stats, failure, full)


def _failure(cluster: Cluster, p: SimParams, invariant: str, detail: str) -> Failure:
    lines = cluster.trace_lines()[-p.trace_len :]
    return Failure(
        seed=cluster.seed,
        nodes=p.nodes,
        invariant=invariant,
        detail=detail,
        time=cluster.now,
        trace=tuple(lines),
        replay=replay_command(cluster.seed, p),
    )
