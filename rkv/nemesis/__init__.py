"""Jepsen-style fault injection against real rkv processes (`python -m rkv.nemesis`).

Owns: nothing itself; re-exports the entry points the CLI can wire up as `rkv nemesis`:
`main(argv) -> exit code`, `run(NemesisConfig) -> Report` (blocking), `run_nemesis` (async),
and the checking step `check_histories` (see docs/nemesis.md). Modules: runner (the run's
phases), faults (the schedule), cluster (node processes), netns (namespaces for --netns),
delayline (slow links), workload, check, report, command (the command line). Must not: be imported by the
node, client or store (it sits at the CLI's layer).
"""

from __future__ import annotations

from rkv.nemesis.check import (
    HistoryCheck,
    check_histories,
    compare_replicas,
    lost_acknowledged_writes,
)
from rkv.nemesis.command import main
from rkv.nemesis.faults import FAULT_KINDS, NETNS_FAULT_KINDS
from rkv.nemesis.report import Report, load_history
from rkv.nemesis.runner import NemesisConfig, run, run_nemesis

__all__ = [
    "FAULT_KINDS",
    "NETNS_FAULT_KINDS",
    "HistoryCheck",
    "NemesisConfig",
    "Report",
    "check_histories",
    "compare_replicas",
    "load_history",
    "lost_acknowledged_writes",
    "main",
    "run",
    "run_nemesis",
]
