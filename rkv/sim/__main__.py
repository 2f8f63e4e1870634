"""`python -m rkv.sim`: the simulator's command line without the rkv CLI (same options).

Owns: argument parsing only; everything else is rkv.sim.command.run_sim_command. Must not:
grow options the `rkv sim` command lacks (a replay command is always `rkv sim ...`).
"""

from __future__ import annotations

import argparse
import sys

from rkv.sim.command import run_sim_command


def build_parser() -> argparse.ArgumentParser:
    """The options; `rkv sim` (rkv/cli/sim_cmds.py) has the same ones."""
    ap = argparse.ArgumentParser(prog="python -m rkv.sim", description=__doc__)
    ap.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="how many seeds to run (default 100 without --duration)",
    )
    ap.add_argument(
        "--first-seed",
        type=int,
        default=None,
        help="first seed of the range (default 1; with --duration a random one, printed)",
    )
    ap.add_argument("--nodes", type=int, default=3, help="cluster size (3, 5, 7, ...)")
    ap.add_argument("--ticks", type=int, default=None, help="length of the faulty phase")
    ap.add_argument(
        "--compact-every",
        type=int,
        default=0,
        help="compact each node's log every N applied entries (snapshots; 0: never)",
    )
    ap.add_argument(
        "--membership",
        action="store_true",
        help="random membership changes (join as learner, promote, remove) among the faults",
    )
    ap.add_argument(
        "--disk-replace",
        action="store_true",
        help="replaced disks among the faults: a node restarts with empty storage",
    )
    ap.add_argument(
        "-j",
        "--jobs",
        type=int,
        default=1,
        help="worker processes to shard the seeds over (default 1)",
    )
    ap.add_argument(
        "--duration",
        type=float,
        default=None,
        help="soak: run fresh seeds for this many seconds (with --seeds: whichever ends first)",
    )
    ap.add_argument("--raw-node-factory", default=None, help=argparse.SUPPRESS)  # test hook
    ap.add_argument("--json", action="store_true", help="end with one JSON summary line")
    ap.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="a line per seed; with --seeds 1 the full event trace",
    )
    return ap


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    return run_sim_command(
        a.seeds,
        a.first_seed,
        a.nodes,
        a.json,
        a.verbose,
        ticks=a.ticks,
        compact_every=a.compact_every,
        membership=a.membership,
        disk_replace=a.disk_replace,
        jobs=a.jobs,
        duration=a.duration,
        raw_node_factory=a.raw_node_factory,
    )


if __name__ == "__main__":
    sys.exit(main())
