"""`python -m rkv.sim`: the simulator's command line without the rkv CLI (same options).

Owns: argument parsing only; everything else is rkv.sim.command.run_sim_command.
"""

from __future__ import annotations

import argparse
import sys

from rkv.sim.command import run_sim_command


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rkv.sim", description=__doc__)
    ap.add_argument("--seeds", type=int, default=100, help="how many seeds to run")
    ap.add_argument("--first-seed", type=int, default=1, help="first seed of the range")
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
    ap.add_argument("--json", action="store_true", help="end with one JSON summary line")
    ap.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="a line per seed; with --seeds 1 the full event trace",
    )
    a = ap.parse_args(argv)
    return run_sim_command(
        a.seeds,
        a.first_seed,
        a.nodes,
        a.json,
        a.verbose,
        ticks=a.ticks,
        compact_every=a.compact_every,
        membership=a.membership,
    )


if __name__ == "__main__":
    sys.exit(main())
