"""The nemesis run's report: what was done, what went wrong, the verdict; and its artifacts.

Owns: `Report` (operations by kind and outcome, faults by kind, the checking step's findings,
the verdict, the human summary and the JSON line), the files a run leaves in its work dir
(`history.jsonl`, `nemesis-events.log`, `report.json`) and `load_history` to re-check a
history.jsonl. Must not: run anything or judge anything (rkv.nemesis.check judges).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rkv.nemesis.coord_check import FenceAttempt, WatchLog
from rkv.nemesis.workload import KINDS
from rkv.sim.linearizability import Operation


@dataclass
class Report:
    seed: int
    nodes: int
    netns: bool = False
    """Nodes in their own network namespaces, partitions made in the kernel (--netns)."""
    duration: float = 0.0
    operations: dict[str, dict[str, int]] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    leader_faults: int = 0
    """Faults aimed at the node that was leader at the time."""
    histories_checked: int = 0
    checked_operations: int = 0
    check_seconds: float = 0.0
    snapshots_sent: int = 0
    """Snapshots streamed to lagging followers (from the node logs)."""
    violations: list[str] = field(default_factory=list)
    inconclusive: list[str] = field(default_factory=list)
    lost_acknowledged_writes: list[str] = field(default_factory=list)
    replica_problems: list[str] = field(default_factory=list)
    crashes: list[str] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    """Unexpected error codes answered to clients (their operations count as unknown)."""
    setup_error: str | None = None
    watch: dict[str, int] = field(default_factory=dict)
    """--watchers: events seen, restarts, Compacted, writes checked (rkv.nemesis.coord)."""
    watch_problems: list[str] = field(default_factory=list)
    locks: dict[str, int] = field(default_factory=dict)
    """--locks: acquisitions, lock_lost, fenced writes accepted / refused / unknown."""
    lock_problems: list[str] = field(default_factory=list)
    end_revision: int = 0
    final_token: int | None = None
    watch_logs: list[WatchLog] = field(default_factory=list, repr=False)
    fence_attempts: list[FenceAttempt] = field(default_factory=list, repr=False)
    workdir: str = ""
    events: list[str] = field(default_factory=list)
    history: list[Operation] = field(default_factory=list, repr=False)

    @property
    def verdict(self) -> str:
        if self.setup_error:
            return "error"
        if (
            self.violations
            or self.lost_acknowledged_writes
            or self.replica_problems
            or self.crashes
            or self.watch_problems
            or self.lock_problems
        ):
            return "violation"
        if self.inconclusive:
            return "inconclusive"
        return "clean"

    @property
    def clean(self) -> bool:
        return self.verdict == "clean"

    def total(self, outcome: str) -> int:
        return sum(c.get(outcome, 0) for c in self.operations.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "seed": self.seed,
            "nodes": self.nodes,
            "netns": self.netns,
            "duration": round(self.duration, 1),
            "operations": self.operations,
            "faults": self.faults,
            "leader_faults": self.leader_faults,
            "histories_checked": self.histories_checked,
            "checked_operations": self.checked_operations,
            "check_seconds": round(self.check_seconds, 2),
            "snapshots_sent": self.snapshots_sent,
            "violations": len(self.violations),
            "inconclusive": len(self.inconclusive),
            "lost_acknowledged_writes": len(self.lost_acknowledged_writes),
            "replica_problems": self.replica_problems,
            "crashes": len(self.crashes),
            "errors": self.errors,
            "setup_error": self.setup_error,
            "workdir": self.workdir,
            "watch": self.watch,
            "watch_problems": len(self.watch_problems),
            "locks": self.locks,
            "lock_problems": len(self.lock_problems),
            "details": (
                self.violations
                + self.lost_acknowledged_writes
                + self.crashes
                + self.watch_problems
                + self.lock_problems
            )[:5],
        }

    def summary(self) -> str:
        lines = [
            f"rkv nemesis: {self.nodes} nodes, {self.duration:.0f} s, seed {self.seed}"
            + (", network namespaces (kernel partitions)" if self.netns else ""),
            "operations (ok / failed / unknown):",
        ]
        for kind in KINDS:
            c = self.operations.get(kind, {})
            lines.append(
                f"  {kind:<7} {c.get('ok', 0):>7} / {c.get('failed', 0):>6} / "
                f"{c.get('unknown', 0):>6}"
            )
        lines.append(
            "faults injected: "
            + (", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())) or "none")
            + f" ({self.leader_faults} aimed at the leader)"
        )
        lines.append(f"snapshots sent to lagging nodes: {self.snapshots_sent}")
        if self.errors:
            lines.append(
                "unexpected errors: " + ", ".join(f"{k} {v}" for k, v in self.errors.items())
            )
        lines.append(
            f"histories checked: {self.histories_checked} keys, "
            f"{self.checked_operations} operations ({self.check_seconds:.1f} s)"
        )
        lines.append(f"linearizability violations: {len(self.violations)}")
        lines.append(f"lost acknowledged writes: {len(self.lost_acknowledged_writes)}")
        lines.append(f"replica divergence: {len(self.replica_problems)}")
        lines.append(f"node crashes: {len(self.crashes)}")
        if self.watch:
            lines.append(
                "watchers: "
                + ", ".join(f"{k} {v}" for k, v in self.watch.items())
                + f"; problems: {len(self.watch_problems)}"
            )
        if self.locks:
            lines.append(
                "locks: "
                + ", ".join(f"{k} {v}" for k, v in self.locks.items())
                + f"; problems: {len(self.lock_problems)}"
            )
        if self.setup_error:
            lines.append(f"setup error: {self.setup_error}")
        for text in (
            self.violations
            + self.inconclusive
            + self.lost_acknowledged_writes
            + self.replica_problems
            + self.crashes
            + self.watch_problems
            + self.lock_problems
        )[:10]:
            lines.append(text)
        lines.append(f"work dir: {self.workdir}")
        lines.append(f"verdict: {self.verdict.upper()}")
        return "\n".join(lines)


def write_artifacts(workdir: Path, report: Report) -> None:
    """The fault timeline and the history, so a failing run can be examined and replayed."""
    try:
        (workdir / "nemesis-events.log").write_text("\n".join(report.events) + "\n")
        with (workdir / "history.jsonl").open("w") as f:
            for op in report.history:
                f.write(json.dumps(_op_json(op)) + "\n")
        (workdir / "report.json").write_text(json.dumps(report.to_json(), indent=1) + "\n")
    except OSError:
        pass


def _b(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, tuple):
        return [_b(x) for x in v]
    return v


def _op_json(op: Operation) -> dict[str, Any]:
    return {
        "id": op.id,
        "client": op.client,
        "kind": str(op.kind),
        "key": _b(op.key),
        "input": _b(op.input),
        "output": _b(op.output),
        "call": op.call_time,
        "return": op.return_time,
    }


def load_history(path: Path) -> list[Operation]:
    """Read a history.jsonl written by a run (keys and values as str), for re-checking."""
    ops = []
    for line in path.read_text().splitlines():
        d = json.loads(line)
        inp = d["input"]
        if d["kind"] == "cas":
            inp = (inp[0], inp[1])
        ret = d["return"]
        ops.append(
            Operation(
                d["client"],
                d["kind"],
                d["key"],
                inp,
                d["output"],
                d["call"],
                None if ret is None or (isinstance(ret, float) and math.isinf(ret)) else ret,
                id=d["id"],
            )
        )
    return ops
