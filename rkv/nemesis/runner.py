"""The nemesis run: a real cluster, concurrent clients, scheduled faults, then the verdict.

Owns: `NemesisConfig`, the fault schedule (SIGKILL and restart, SIGSTOP/SIGCONT pauses,
symmetric / one-way partitions, isolating the leader, heals), the run's phases (start, load
under faults, heal and restart everything, final linearizable reads, quiescence, replica
comparison, history check), the `Report` and `main(argv)` for `python -m rkv.nemesis`.
Must not: talk Raft, or judge anything itself (rkv.nemesis.check does).

The CLI can wire `rkv nemesis ...` to `main(argv)` or to `run(cfg) -> Report`.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

import rkv
from rkv.config import parse_address
from rkv.nemesis.check import (
    check_histories,
    compare_replicas,
    lost_acknowledged_writes,
)
from rkv.nemesis.cluster import (
    RPC_ERRORS,
    SNAPSHOT_ENTRIES_ENV,
    SNAPSHOT_KEEP_ENV,
    ProcessCluster,
)
from rkv.nemesis.workload import (
    KINDS,
    KeySchedule,
    Recorder,
    WorkerOptions,
    client_worker,
    raw_worker,
)
from rkv.net.rpc import RpcClient
from rkv.sim.linearizability import Operation, OpKind

_SNAPSHOT_SENT = re.compile(r"snapshot at \d+ sent to")
"""The node's log line for a snapshot streamed to a follower (counted for the report)."""

FAULT_KINDS = (
    "kill",
    "pause",
    "partition",
    "partition_oneway",
    "isolate_leader",
    "partition_crash",
)


@dataclass(frozen=True, slots=True)
class NemesisConfig:
    duration: float = 60.0
    """Seconds of load under faults (the heal, final reads and check come after)."""
    nodes: int = 3
    clients: int = 8
    """Concurrent workers: half use the rkv client, half send raw single-attempt requests."""
    keys: int = 5
    key_epoch: float = 20.0
    """Seconds before the workers move to a fresh key set (bounds each key's history)."""
    seed: int | None = None
    faults: tuple[str, ...] = FAULT_KINDS
    min_rounds: int = 0
    """Keep injecting past `duration` until this many full rounds (every kind once) are
    done: tests use 1 so that every kind is injected however slow the machine is."""
    fault_hold: tuple[float, float] = (1.0, 3.0)
    """How long a fault lasts (uniform in this range, seconds)."""
    quiet: tuple[float, float] = (0.5, 1.5)
    """Pause between a heal and the next fault."""
    op_timeout: float = 4.0
    check_timeout: float = 60.0
    """Search budget per key for the linearizability checker (seconds)."""
    converge_timeout: float = 30.0
    snapshot_entries: int | None = None
    """Make nodes compact after this many entries (keeping a tenth of them), so snapshots
    are shipped to lagging nodes during the run; None keeps the node defaults."""
    node_command: tuple[str, ...] = ()
    """argv that runs the rkv CLI, before "serve" (default: this Python's `-m rkv`)."""
    workdir: Path | None = None
    keep: bool = False
    """Keep the work dir (data dirs and node logs) even after a clean run."""

    def __post_init__(self) -> None:
        if not self.duration > 0:
            raise ValueError("duration must be > 0")
        if not 1 <= self.nodes <= 9:
            raise ValueError("nodes must be in 1..9")
        if self.snapshot_entries is not None and self.snapshot_entries < 4:
            raise ValueError("snapshot_entries must be >= 4")
        if self.clients < 1 or self.keys < 1:
            raise ValueError("clients and keys must be >= 1")
        for name, (lo, hi) in (("fault_hold", self.fault_hold), ("quiet", self.quiet)):
            if not 0 <= lo <= hi:
                raise ValueError(f"{name} must be (min, max) with 0 <= min <= max")
        bad = set(self.faults) - set(FAULT_KINDS)
        if bad:
            raise ValueError(f"unknown fault kinds: {', '.join(sorted(bad))}")


@dataclass
class Report:
    seed: int
    nodes: int
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
            "details": (self.violations + self.lost_acknowledged_writes + self.crashes)[:5],
        }

    def summary(self) -> str:
        lines = [
            f"rkv nemesis: {self.nodes} nodes, {self.duration:.0f} s, seed {self.seed}",
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
        if self.setup_error:
            lines.append(f"setup error: {self.setup_error}")
        for text in (
            self.violations
            + self.inconclusive
            + self.lost_acknowledged_writes
            + self.replica_problems
            + self.crashes
        )[:10]:
            lines.append(text)
        lines.append(f"work dir: {self.workdir}")
        lines.append(f"verdict: {self.verdict.upper()}")
        return "\n".join(lines)


class _Nemesis:
    """Injects one fault at a time on a seeded schedule, healing it before the next."""

    def __init__(
        self, cluster: ProcessCluster, cfg: NemesisConfig, rng: random.Random, report: Report
    ) -> None:
        self.cluster = cluster
        self.cfg = cfg
        self.rng = rng
        self.report = report
        self.counts: Counter[str] = Counter()
        self.t0 = trio.current_time()

    def event(self, text: str) -> None:
        self.report.events.append(f"{trio.current_time() - self.t0:8.2f}s {text}")

    async def run(self, until: float) -> None:
        bag: list[str] = []
        rounds = 0
        while True:
            quiet = self.rng.uniform(*self.cfg.quiet)
            if rounds < self.cfg.min_rounds:
                await trio.sleep(quiet)
            else:
                await trio.sleep_until(min(until, trio.current_time() + quiet))
                if trio.current_time() >= until:
                    return
            if not bag:
                # Every kind once per round, in a random order: short runs see them all.
                bag = list(self.cfg.faults)
                self.rng.shuffle(bag)
            kind = bag.pop()
            hold = self.rng.uniform(*self.cfg.fault_hold)
            await getattr(self, f"_{kind}")(hold)
            self.counts[kind] += 1
            if not bag:
                rounds += 1

    async def _target(self) -> tuple[str, bool]:
        leader = await self.cluster.leader()
        if leader is not None and self.rng.random() < 0.5:
            self.report.leader_faults += 1
            return leader, True
        addr = self.rng.choice(self.cluster.addrs)
        if addr == leader:
            self.report.leader_faults += 1
        return addr, addr == leader

    async def _kill(self, hold: float) -> None:
        addr, lead = await self._target()
        self.event(f"SIGKILL {addr}{' (leader)' if lead else ''} for {hold:.1f}s")
        await self.cluster.kill(addr)
        await trio.sleep(hold)
        await self.cluster.restart(addr)
        self.event(f"restarted {addr}")

    async def _pause(self, hold: float) -> None:
        addr, lead = await self._target()
        self.event(f"SIGSTOP {addr}{' (leader)' if lead else ''} for {hold:.1f}s")
        self.cluster.pause(addr)
        await trio.sleep(hold)
        self.cluster.resume(addr)
        self.event(f"SIGCONT {addr}")

    async def _apply(self, drops: dict[str, tuple[list[str], list[str]]], hold: float) -> None:
        async with trio.open_nursery() as nursery:
            for addr, (to, frm) in drops.items():
                nursery.start_soon(self.cluster.set_fault, addr, to, frm)
        await trio.sleep(hold)
        await self.cluster.heal()
        self.event("healed")

    async def _split(self) -> tuple[list[str], list[str]]:
        """A random (minority, majority) split; the leader is in the minority half the time."""
        addrs = list(self.cluster.addrs)
        self.rng.shuffle(addrs)
        k = self.rng.randint(1, max(1, (len(addrs) - 1) // 2))
        leader = await self.cluster.leader()
        if leader is not None and self.rng.random() < 0.5:
            addrs.remove(leader)
            addrs.insert(0, leader)
            self.report.leader_faults += 1
        return addrs[:k], addrs[k:]

    @staticmethod
    def _symmetric(
        minority: list[str], majority: list[str]
    ) -> dict[str, tuple[list[str], list[str]]]:
        drops = {a: (majority, majority) for a in minority}
        drops.update({a: (minority, minority) for a in majority})
        return drops

    async def _partition(self, hold: float) -> None:
        if len(self.cluster.addrs) < 2:
            return
        minority, majority = await self._split()
        self.event(f"partition {sorted(minority)} | {sorted(majority)} for {hold:.1f}s")
        await self._apply(self._symmetric(minority, majority), hold)

    async def _partition_crash(self, hold: float) -> None:
        """Faults compose: a partition, and inside it a node killed or frozen."""
        if len(self.cluster.addrs) < 2:
            return
        minority, majority = await self._split()
        drops = self._symmetric(minority, majority)
        async with trio.open_nursery() as nursery:
            for addr, (to, frm) in drops.items():
                nursery.start_soon(self.cluster.set_fault, addr, to, frm)
        await trio.sleep(self.rng.uniform(0.0, hold / 2))
        addr, lead = await self._target()
        how = self.rng.choice(("SIGKILL", "SIGSTOP"))
        self.event(
            f"partition {sorted(minority)} | {sorted(majority)} with {how} "
            f"{addr}{' (leader)' if lead else ''} for {hold:.1f}s"
        )
        if how == "SIGKILL":
            await self.cluster.kill(addr)
        else:
            self.cluster.pause(addr)
        await trio.sleep(hold)
        if how == "SIGKILL":
            await self.cluster.restart(addr)
        else:
            self.cluster.resume(addr)
        await self.cluster.heal()
        self.event(f"{'restarted' if how == 'SIGKILL' else 'SIGCONT'} {addr}, healed")

    async def _partition_oneway(self, hold: float) -> None:
        addrs = self.cluster.addrs
        if len(addrs) < 2:
            return
        x, lead = await self._target()
        others = [a for a in addrs if a != x]
        if self.rng.random() < 0.5:
            cut = others
        else:
            cut = self.rng.sample(others, self.rng.randint(1, len(others)))
        direction = self.rng.choice(("to", "from"))
        self.event(
            f"one-way: {x}{' (leader)' if lead else ''} drops messages {direction} "
            f"{sorted(cut)} for {hold:.1f}s"
        )
        drops = {x: (cut, []) if direction == "to" else ([], cut)}
        await self._apply(drops, hold)

    async def _isolate_leader(self, hold: float) -> None:
        addrs = self.cluster.addrs
        if len(addrs) < 2:
            return
        leader = await self.cluster.leader()
        x = leader if leader is not None else self.rng.choice(addrs)
        if leader is not None:
            self.report.leader_faults += 1
        others = [a for a in addrs if a != x]
        self.event(f"isolate {'leader ' if leader else ''}{x} for {hold:.1f}s")
        drops = {x: (others, others)}
        drops.update({a: ([x], [x]) for a in others})
        await self._apply(drops, hold)


async def _watch_crashes(cluster: ProcessCluster, report: Report) -> None:
    """A node that exits on its own is a bug: record it, then bring the node back."""
    while True:
        await trio.sleep(0.5)
        for n in cluster.crashed():
            code = n.proc.returncode if n.proc is not None else None
            report.crashes.append(
                f"node {n.addr} exited on its own (code {code}); log tail:\n{n.log_tail(1500)}"
            )
            await cluster.restart(n.addr)


async def _wait_leader(cluster: ProcessCluster, timeout: float) -> str | None:
    with trio.move_on_after(timeout):
        while True:
            leader = await cluster.leader()
            if leader is not None:
                return leader
            await trio.sleep(0.1)
    return None


async def _final_reads(
    cluster: ProcessCluster, rec: Recorder, timeout: float
) -> dict[bytes, bytes | None]:
    """A linearizable read of every key, recorded into the history."""
    final: dict[bytes, bytes | None] = {}
    async with rkv.connect(cluster.addrs, timeout=timeout, attempt_timeout=2.0) as c:
        for key in sorted(rec.keys):
            op = rec.invoke("final", OpKind.GET, key)
            try:
                v = await c.get(key)
            except rkv.RkvError:
                rec.fail(op, "get")
                continue
            rec.ok(op, "get", v)
            final[key] = v
    return final


async def _quiesce(cluster: ProcessCluster, timeout: float) -> dict[str, dict[str, Any]]:
    """Wait until every node reports the same (commit, applied, last_index), applied ==
    commit; return the last statuses either way (compare_replicas reports what differs)."""
    statuses: dict[str, dict[str, Any]] = {}
    stable = 0
    with trio.move_on_after(timeout):
        while True:
            statuses = await cluster.statuses()
            idx = {
                (s.get("commit"), s.get("applied"), s.get("last_index")) for s in statuses.values()
            }
            same = len(statuses) == len(cluster.nodes) and len(idx) == 1
            if same and all(s.get("commit") == s.get("applied") for s in statuses.values()):
                stable += 1
                if stable >= 3:
                    break
            else:
                stable = 0
            await trio.sleep(0.2)
    return statuses


async def _stale_values(
    cluster: ProcessCluster, keys: Sequence[bytes]
) -> dict[str, dict[bytes, bytes | None]]:
    """Every key read with stale=true on every node (a node that fails is left out)."""
    out: dict[str, dict[bytes, bytes | None]] = {}

    async def one(addr: str) -> None:
        host, port = parse_address(addr)
        vals: dict[bytes, bytes | None] = {}
        try:
            with trio.fail_after(30.0):
                async with RpcClient(host, port, connect_timeout=2.0, timeout=2.0) as c:
                    for k in keys:
                        reply = await c.call({"t": "get", "k": k, "stale": True})
                        v = reply.get("val")
                        vals[k] = None if v is None else bytes(v)
        except RPC_ERRORS:
            return
        out[addr] = vals

    async with trio.open_nursery() as nursery:
        for addr in cluster.addrs:
            nursery.start_soon(one, addr)
    return out


async def run_nemesis(cfg: NemesisConfig) -> Report:
    """Run one nemesis test and return its report (never raises for a failed verdict)."""
    seed = cfg.seed if cfg.seed is not None else random.SystemRandom().randrange(2**32)
    rng = random.Random(seed)
    report = Report(seed=seed, nodes=cfg.nodes)
    workdir = cfg.workdir or Path(tempfile.mkdtemp(prefix="rkv-nemesis-"))
    report.workdir = str(workdir)
    rec = Recorder()
    started = time.monotonic()
    command, env = cfg.node_command, {}
    if cfg.snapshot_entries is not None:
        command = command or (sys.executable, "-m", "rkv.nemesis.serve")
        env = {
            SNAPSHOT_ENTRIES_ENV: str(cfg.snapshot_entries),
            SNAPSHOT_KEEP_ENV: str(max(1, cfg.snapshot_entries // 10)),
        }
    async with ProcessCluster(workdir, cfg.nodes, command=command, env=env) as cluster:
        if await _wait_leader(cluster, 30.0) is None:
            report.setup_error = "no leader elected within 30 s of starting the cluster"
            return report
        keys = KeySchedule(trio.current_time(), cfg.keys, cfg.key_epoch)
        opts = WorkerOptions(op_timeout=cfg.op_timeout)
        stop = trio.Event()
        nemesis = _Nemesis(cluster, cfg, random.Random(rng.random()), report)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_crashes, cluster, report)
            async with trio.open_nursery() as workers:
                for i in range(cfg.clients):
                    worker = client_worker if i % 2 == 0 else raw_worker
                    name = f"{'c' if i % 2 == 0 else 'r'}{i}"
                    workers.start_soon(
                        worker,
                        name,
                        cluster.addrs,
                        rec,
                        keys,
                        random.Random(rng.random()),
                        stop,
                        opts,
                    )
                await nemesis.run(trio.current_time() + cfg.duration)
                stop.set()
                # Workers finish the operation in hand (bounded by op_timeout); anything
                # still running after that is cancelled and stays an unknown outcome.
                workers.cancel_scope.deadline = trio.current_time() + cfg.op_timeout + 5.0
            # Heal everything: wake the frozen, restart the dead, clear the drop sets.
            for n in cluster.nodes:
                if n.paused:
                    cluster.resume(n.addr)
            for n in cluster.nodes:
                if not n.alive():
                    await cluster.restart(n.addr)
            await cluster.heal()
            nemesis.event("final heal")
            report.duration = time.monotonic() - started
            if await _wait_leader(cluster, cfg.converge_timeout) is None:
                report.replica_problems.append("no leader after the final heal")
            nemesis.event("leader after the final heal")
            final = await _final_reads(cluster, rec, cfg.converge_timeout)
            nemesis.event(f"final reads of {len(final)} keys done")
            missing = sorted(rec.keys - final.keys())
            if missing:
                report.replica_problems.append(
                    f"final linearizable reads failed for {len(missing)} keys"
                )
            statuses = await _quiesce(cluster, cfg.converge_timeout)
            nemesis.event("quiesced")
            values = await _stale_values(cluster, sorted(rec.keys))
            nemesis.event("stale reads on every node done")
            values_with_final = {**values, "linearizable final read": dict(final)}
            report.replica_problems += compare_replicas(statuses, values_with_final, cluster.addrs)
            nursery.cancel_scope.cancel()
        report.snapshots_sent = sum(
            len(_SNAPSHOT_SENT.findall(n.log_tail(1 << 30))) for n in cluster.nodes
        )
    report.faults = dict(nemesis.counts)
    report.operations = {k: dict(rec.counts[k]) for k in KINDS}
    report.errors = dict(rec.errors)
    ops = rec.operations()
    report.history = ops
    # Written before the check too: a search that takes long can be examined meanwhile.
    _write_artifacts(workdir, report)
    t_check = time.monotonic()
    hc = await trio.to_thread.run_sync(
        lambda: check_histories(ops, timeout_per_key=cfg.check_timeout)
    )
    report.check_seconds = time.monotonic() - t_check
    report.histories_checked = hc.histories
    report.checked_operations = hc.operations
    report.violations = hc.violations
    report.inconclusive = hc.inconclusive
    report.lost_acknowledged_writes = lost_acknowledged_writes(ops, final)
    _write_artifacts(workdir, report)
    if report.clean and not cfg.keep and cfg.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
        report.workdir += " (removed: clean run)"
    return report


def _write_artifacts(workdir: Path, report: Report) -> None:
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


def run(cfg: NemesisConfig) -> Report:
    """Blocking entry point (starts its own trio loop)."""
    return trio.run(run_nemesis, cfg)


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
        default=",".join(FAULT_KINDS),
        help=f"comma separated fault kinds (default: all of {','.join(FAULT_KINDS)})",
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
    p.add_argument("--workdir", type=Path, default=None, help="keep data and logs here")
    p.add_argument("--keep", action="store_true", help="keep the work dir after a clean run")
    p.add_argument("--json", action="store_true", help="print one JSON line instead")
    p.add_argument("--events", action="store_true", help="also print the fault timeline")
    return p


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
            faults=tuple(f.strip() for f in args.faults.split(",") if f.strip()),
            fault_hold=args.hold,
            quiet=args.quiet,
            snapshot_entries=args.snapshot_entries,
            workdir=args.workdir,
            keep=args.keep,
        )
    except ValueError as e:
        print(f"rkv nemesis: error: {e}", file=sys.stderr)
        return 2
    try:
        report = run(cfg)
    except (RuntimeError, OSError, BaseExceptionGroup) as exc:
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
