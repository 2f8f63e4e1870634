"""`python -m rkv.nemesis` and `rkv nemesis`: arguments, exit code, summary or JSON line.

Owns: the command line (`main(argv) -> exit code`): 0 for a clean verdict; 1 for a
violation, an inconclusive check or a harness failure (one line on stderr); 2 for bad
arguments; 3 when `--netns` cannot run on this machine (not root, no `ip netns`); 130 after
Ctrl+C. Must not: run or judge anything itself (rkv.nemesis.runner).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from rkv.nemesis.faults import FAULT_KINDS
from rkv.nemesis.netns import NetnsUnavailable, check_available
from rkv.nemesis.runner import NemesisConfig, run

EXIT_NO_NETNS = 3
"""`--netns` on a machine that cannot run it."""


def _range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX seconds, got {text!r}") from None
    if not 0 <= lo <= hi:
        raise argparse.ArgumentTypeError(f"expected 0 <= MIN <= MAX, got {text!r}")
    return lo, hi


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m rkv.nemesis",
        description="Jepsen-style fault injection against real rkv processes, then a "
        "linearizability and convergence check. Exit code 0 only for a clean verdict.",
    )
    p.add_argument("--duration", type=float, default=60.0, help="seconds of load under faults")
    p.add_argument("--nodes", type=int, default=3, help="cluster size (3 or 5 are typical)")
    p.add_argument("--clients", type=int, default=8, help="concurrent client tasks")
    p.add_argument("--keys", type=int, default=5, help="keys per epoch")
    p.add_argument("--key-epoch", type=float, default=20.0, help="seconds per key set")
    p.add_argument("--seed", type=int, default=None, help="seed of the fault/workload schedule")
    p.add_argument(
        "--faults",
        default=None,
        help=f"comma separated fault kinds (default: all of {','.join(FAULT_KINDS)}; "
        "with --netns also slow_link)",
    )
    p.add_argument(
        "--netns",
        action="store_true",
        help="run every node in its own network namespace and make partitions and slow "
        "links in the kernel, without fault hooks in the nodes (needs root)",
    )
    p.add_argument(
        "--slow-delay",
        type=_range,
        default=(0.05, 0.5),
        help="delay of a slow link MIN,MAX seconds (--netns)",
    )
    p.add_argument(
        "--min-rounds",
        type=int,
        default=0,
        help="keep injecting past --duration until N rounds (every kind once) are done",
    )
    p.add_argument(
        "--hold", type=_range, default=(1.0, 3.0), help="fault duration range MIN,MAX seconds"
    )
    p.add_argument(
        "--quiet", type=_range, default=(0.5, 1.5), help="pause between faults MIN,MAX seconds"
    )
    p.add_argument(
        "--snapshot-entries",
        type=int,
        default=None,
        help="make nodes compact their log every N entries (exercises snapshot shipping)",
    )
    p.add_argument(
        "--watchers", type=int, default=0, help="watchers of the workload's keys (0: none)"
    )
    p.add_argument("--locks", type=int, default=0, help="tasks taking one lock in turns (0: none)")
    p.add_argument("--lock-ttl", type=float, default=1.0, help="the locks' lease TTL seconds")
    p.add_argument(
        "--watch-history",
        type=int,
        default=None,
        help="changes each node keeps for watches (small: watchers get Compacted)",
    )
    p.add_argument("--workdir", type=Path, default=None, help="keep data and logs here")
    p.add_argument("--keep", action="store_true", help="keep the work dir after a clean run")
    p.add_argument("--json", action="store_true", help="print one JSON line instead")
    p.add_argument("--events", action="store_true", help="also print the fault timeline")
    return p


def _interrupted(exc: BaseException) -> bool:
    """Ctrl+C (trio may deliver it inside an exception group)."""
    if isinstance(exc, KeyboardInterrupt):
        return True
    return isinstance(exc, BaseExceptionGroup) and exc.subgroup(KeyboardInterrupt) is not None


def _harness_failure(exc: BaseException) -> BaseException | None:
    if isinstance(exc, RuntimeError | OSError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        match, rest = exc.split((RuntimeError, OSError))
        if rest is None and match is not None:
            leaf: BaseException = match
            while isinstance(leaf, BaseExceptionGroup):
                leaf = leaf.exceptions[0]
            return leaf
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        cfg = NemesisConfig(
            duration=args.duration,
            nodes=args.nodes,
            clients=args.clients,
            keys=args.keys,
            key_epoch=args.key_epoch,
            seed=args.seed,
            faults=None
            if args.faults is None
            else tuple(f.strip() for f in args.faults.split(",") if f.strip()),
            min_rounds=args.min_rounds,
            fault_hold=args.hold,
            quiet=args.quiet,
            netns=args.netns,
            slow_delay=args.slow_delay,
            snapshot_entries=args.snapshot_entries,
            workdir=args.workdir,
            keep=args.keep,
            watchers=args.watchers,
            locks=args.locks,
            lock_ttl=args.lock_ttl,
            watch_history=args.watch_history,
        )
    except ValueError as e:
        print(f"rkv nemesis: error: {e}", file=sys.stderr)
        return 2
    try:
        if cfg.netns:
            check_available(slow_links="slow_link" in cfg.fault_kinds)
        report = run(cfg)
    except NetnsUnavailable as e:
        print(f"rkv nemesis: {e}", file=sys.stderr)
        return EXIT_NO_NETNS
    except (KeyboardInterrupt, RuntimeError, OSError, BaseExceptionGroup) as exc:
        if _interrupted(exc):
            cleaned = "nodes stopped, namespaces removed" if cfg.netns else "nodes stopped"
            print(f"rkv nemesis: interrupted ({cleaned})", file=sys.stderr)
            return 130
        # The harness itself failed (a node that would not restart, no free ports, ...):
        # one line, not a traceback. Anything else is a harness bug and propagates.
        leaf = _harness_failure(exc)
        if leaf is None:
            raise
        print(f"rkv nemesis: error: {' '.join(str(leaf).split())[:500]}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report.to_json(), separators=(",", ":")))
    else:
        if args.events:
            print("\n".join(report.events))
        print(report.summary())
    return 0 if report.clean else 1
