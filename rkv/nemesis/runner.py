"""The nemesis run: a real cluster, concurrent clients, scheduled faults, then the verdict.

Owns: `NemesisConfig`, the run's phases (start, load under faults, heal and restart
everything, final linearizable reads, quiescence, replica comparison, history check) and,
with `netns`, the network namespaces' lifetime: built before the nodes start, removed after
they stop, whatever happens (exceptions, Ctrl+C, SIGTERM / SIGHUP). Must not: talk Raft,
choose faults (rkv.nemesis.faults), build namespaces (rkv.nemesis.netns), or judge anything
itself (rkv.nemesis.check does).

`python -m rkv.nemesis` and `rkv nemesis` are rkv.nemesis.command.main.
"""

from __future__ import annotations

import random
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
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
    WATCH_HISTORY_ENV,
    ProcessCluster,
)
from rkv.nemesis.coord import Coordination
from rkv.nemesis.faults import FAULT_KINDS, NETNS_FAULT_KINDS, Nemesis
from rkv.nemesis.netns import Network, check_available
from rkv.nemesis.report import Report, write_artifacts
from rkv.nemesis.workload import (
    KINDS,
    KeySchedule,
    Recorder,
    WorkerOptions,
    client_worker,
    raw_worker,
)
from rkv.net.rpc import RpcClient
from rkv.protocol import GetRequest
from rkv.sim.linearizability import OpKind

_SNAPSHOT_SENT = re.compile(r"snapshot at \d+ sent to")
"""The node's log line for a snapshot streamed to a follower (counted for the report)."""


class Stopped(RuntimeError):
    """A --netns run ended by SIGTERM or SIGHUP (after its namespaces were removed)."""


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
    faults: tuple[str, ...] | None = None
    """Fault kinds to inject; None: all (FAULT_KINDS, or NETNS_FAULT_KINDS with netns)."""
    min_rounds: int = 0
    """Keep injecting past `duration` until this many full rounds (every kind once) are
    done: tests use 1 so that every kind is injected however slow the machine is."""
    fault_hold: tuple[float, float] = (1.0, 3.0)
    """How long a fault lasts (uniform in this range, seconds)."""
    quiet: tuple[float, float] = (0.5, 1.5)
    """Pause between a heal and the next fault."""
    netns: bool = False
    """Every node in its own network namespace, partitions and slow links made in the kernel
    (rkv.nemesis.netns; needs root), nodes without fault injection."""
    slow_delay: tuple[float, float] = (0.05, 0.5)
    """Delay of a slow link, each way it applies (uniform in this range, seconds)."""
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
    watchers: int = 0
    """Watchers of the workload's keys across the faults (rkv.nemesis.coord); 0: none."""
    locks: int = 0
    """Tasks taking one rkv.Lock in turns and writing to a fenced store; 0: none."""
    lock_ttl: float = 1.0
    """The locks' lease TTL (short, so that faults make some holders lose their lock)."""
    watch_history: int | None = None
    """Changes each node keeps for watches (small: lagging watchers get Compacted); None
    keeps the node default."""

    @property
    def fault_kinds(self) -> tuple[str, ...]:
        if self.faults is not None:
            return self.faults
        return NETNS_FAULT_KINDS if self.netns else FAULT_KINDS

    def __post_init__(self) -> None:
        if not self.duration > 0:
            raise ValueError("duration must be > 0")
        if not 1 <= self.nodes <= 9:
            raise ValueError("nodes must be in 1..9")
        if self.snapshot_entries is not None and self.snapshot_entries < 4:
            raise ValueError("snapshot_entries must be >= 4")
        if self.watch_history is not None and self.watch_history < 1:
            raise ValueError("watch_history must be >= 1")
        if self.clients < 1 or self.keys < 1:
            raise ValueError("clients and keys must be >= 1")
        if not (0 <= self.watchers <= 64 and 0 <= self.locks <= 64):
            raise ValueError("watchers and locks must be in 0..64")
        if not 0.2 <= self.lock_ttl <= 60:
            raise ValueError("lock_ttl must be in 0.2..60 seconds")
        for name, (lo, hi) in (
            ("fault_hold", self.fault_hold),
            ("quiet", self.quiet),
            ("slow_delay", self.slow_delay),
        ):
            if not 0 <= lo <= hi:
                raise ValueError(f"{name} must be (min, max) with 0 <= min <= max")
        bad = set(self.fault_kinds) - set(NETNS_FAULT_KINDS)
        if bad:
            raise ValueError(f"unknown fault kinds: {', '.join(sorted(bad))}")
        if not self.fault_kinds:
            raise ValueError("at least one fault kind is needed")
        if "slow_link" in self.fault_kinds and not self.netns:
            raise ValueError("slow_link needs --netns (the nodes' fault hooks cannot delay)")


async def _watch_crashes(cluster: ProcessCluster, report: Report) -> None:
    """A node that exits on its own is a bug: record it, then bring the node back."""
    while True:
        await trio.sleep(0.5)
        for n in cluster.crashed():
            code = n.exit_code()
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
                        reply = await c.call(GetRequest(k, stale=True).to_frame())
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
    """Run one nemesis test and return its report (never raises for a failed verdict). With
    `netns`: NetnsUnavailable if this machine cannot build namespaces, Stopped on SIGTERM or
    SIGHUP; the namespaces are removed before it returns or raises."""
    seed = cfg.seed if cfg.seed is not None else random.SystemRandom().randrange(2**32)
    rng = random.Random(seed)
    report = Report(seed=seed, nodes=cfg.nodes, netns=cfg.netns)
    workdir = cfg.workdir or Path(tempfile.mkdtemp(prefix="rkv-nemesis-"))
    report.workdir = str(workdir)
    rec = Recorder()
    coord = Coordination([], cfg.watchers, cfg.locks, cfg.lock_ttl, cfg.op_timeout)
    if cfg.netns:
        final = await _in_namespaces(cfg, rng, report, workdir, rec, coord)
    else:
        final = await _exercise(cfg, rng, report, workdir, rec, None, coord)
    if final is None:
        return report
    ops = rec.operations()
    report.history = ops
    report.watch_logs, report.fence_attempts = coord.watch_logs, coord.fence
    if cfg.watchers or cfg.locks:
        report.watch, report.watch_problems, report.locks, report.lock_problems = coord.judge(
            ops, report.end_revision, report.final_token
        )
    # Written before the check too: a search that takes long can be examined meanwhile.
    write_artifacts(workdir, report)
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
    write_artifacts(workdir, report)
    if report.clean and not cfg.keep and cfg.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
        report.workdir += " (removed: clean run)"
    return report


async def _in_namespaces(
    cfg: NemesisConfig,
    rng: random.Random,
    report: Report,
    workdir: Path,
    rec: Recorder,
    coord: Coordination,
) -> dict[bytes, bytes | None] | None:
    """`_exercise` on a fresh set of namespaces, removed afterwards whatever happens."""
    slow = "slow_link" in cfg.fault_kinds
    check_available(slow_links=slow)
    workdir.mkdir(parents=True, exist_ok=True)
    # Built in this (the main) thread: the nodes and the delay line die with the thread
    # that started them (setpriv --pdeathsig), so not in a worker thread that may retire.
    network = Network.create(cfg.nodes, slow_links=slow, log_dir=workdir)
    try:
        async with trio.open_nursery() as nursery:
            if threading.current_thread() is threading.main_thread():
                nursery.start_soon(_stop_on_signals)
            final = await _exercise(cfg, rng, report, workdir, rec, network, coord)
            nursery.cancel_scope.cancel()
    finally:
        network.close()
    return final


async def _stop_on_signals() -> None:
    """SIGTERM and SIGHUP end a --netns run the way Ctrl+C does: through the cleanup."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGHUP) as signals:
        async for signum in signals:
            raise Stopped(f"stopped by {signal.Signals(signum).name}; namespaces removed")


async def _exercise(
    cfg: NemesisConfig,
    rng: random.Random,
    report: Report,
    workdir: Path,
    rec: Recorder,
    network: Network | None,
    coord: Coordination,
) -> dict[bytes, bytes | None] | None:
    """Start the cluster, run the load under faults, heal, read every key back and compare
    the replicas; the final linearizable values, or None if no leader was ever elected."""
    started = time.monotonic()
    command, env = cfg.node_command, dict[str, str]()
    if cfg.snapshot_entries is not None:
        env[SNAPSHOT_ENTRIES_ENV] = str(cfg.snapshot_entries)
        env[SNAPSHOT_KEEP_ENV] = str(max(1, cfg.snapshot_entries // 10))
    if cfg.watch_history is not None:
        env[WATCH_HISTORY_ENV] = str(cfg.watch_history)
    if env:
        command = command or (sys.executable, "-m", "rkv.nemesis.serve")
    async with ProcessCluster(
        workdir, cfg.nodes, command=command, env=env, network=network
    ) as cluster:
        if await _wait_leader(cluster, 30.0) is None:
            report.setup_error = "no leader elected within 30 s of starting the cluster"
            return None
        keys = KeySchedule(trio.current_time(), cfg.keys, cfg.key_epoch)
        opts = WorkerOptions(op_timeout=cfg.op_timeout)
        stop = trio.Event()
        nemesis = Nemesis(cluster, cfg, random.Random(rng.random()), report)
        coord.addrs = cluster.addrs
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_crashes, cluster, report)
            await coord.start_watchers(nursery, random.Random(rng.random()))
            async with trio.open_nursery() as workers:
                coord.start_locks(workers, random.Random(rng.random()), stop)
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
            if cfg.watchers or cfg.locks:
                rev, token, problems = await coord.end(cfg.converge_timeout)
                report.end_revision, report.final_token = rev, token
                report.replica_problems += problems
                nemesis.event("watchers caught up, fence read")
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
    return final


def run(cfg: NemesisConfig) -> Report:
    """Blocking entry point (starts its own trio loop)."""
    return trio.run(run_nemesis, cfg)
