"""Watch fan-out (issue 16): many watchers on one prefix of a fresh 3-node rkv cluster, a
steady write rate on that prefix, event delivery latency from each write's ack to each
watcher's receipt of its event, and what the servers spend per event delivered.

Owns: the run's two phases on one cluster (first the writes alone at the rate, for the
servers' CPU without watchers; then the watchers, spread over `procs` watcher processes
(bench.watchers) and over the nodes, and the same writes), the writer (rkv's client in this
process, open loop: write i starts at t0 + i / rate whatever the earlier ones do, at most
`MAX_IN_FLIGHT` at once), the CPU readings (servers, each watcher process, the writer) over
the measured window, the nodes' watch counters from /metrics, and the results file. Must
not: watch (bench.watchers) or summarize latencies other than by merging the processes'
histograms (bench.stats).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import trio

from bench.common import envelope, fresh_cluster, host_info, series_meta, stamp, write_json
from bench.drivers import Driver
from bench.nodewatch import scrape
from bench.procs import pids_cpu
from bench.stats import GENERATOR_BOUND_CORES, Histogram, cores, generator_bound, per_op_us

PREFIX = "wf/"
MAX_IN_FLIGHT = 256
"""Writes in flight at once: past it the writer falls behind its schedule (reported)."""
PER_CLIENT = 50
"""Watches per rkv.Client (one connection per node): below a node's per-connection limit (64)."""
READY_TIMEOUT = 120.0
WATCH_METRICS = ("rkv_watch_events_delivered_total", "rkv_watch_polls_total")


def split(total: int, parts: int) -> list[int]:
    """`total` watchers over `parts` processes, as even as can be (none empty)."""
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def key_of(seq: int) -> bytes:
    return f"{PREFIX}{seq:08d}".encode()


@dataclass(slots=True)
class Writes:
    """One writer phase: the ack time of each write (None: it failed), and the CPU seconds
    of the servers and of the other given processes over its measured window."""

    acks: list[float | None]
    first_measured: int
    window_s: float = 0.0
    behind_s: float = 0.0
    """How late the last write started compared with its schedule."""
    cpu_start: dict[str, float] = field(default_factory=dict)
    writer_cpu_s: float = 0.0


async def write_at_rate(
    addrs: list[str],
    *,
    rate: float,
    count: int,
    first_measured: int,
    value_size: int,
    seq0: int,
    watched: list[tuple[str, int]],
) -> Writes:
    """`count` puts of keys seq0.. at `rate` per second; the CPU of `watched` is read when
    write `first_measured` is due (the window's start)."""
    import rkv

    out = Writes([None] * count, first_measured)
    value = b"x" * value_size
    slots = trio.Semaphore(MAX_IN_FLIGHT)
    async with rkv.connect(addrs, timeout=30) as c, trio.open_nursery() as n:

        async def put(i: int) -> None:
            try:
                await c.put(key_of(seq0 + i), value)
                out.acks[i] = time.monotonic()
            except rkv.RkvError:
                pass
            finally:
                slots.release()

        t0 = trio.current_time() + 0.1
        window_t0 = t0
        for i in range(count):
            due = t0 + i / rate
            await trio.sleep_until(due)
            if i == first_measured:
                out.cpu_start = pids_cpu(watched)
                out.writer_cpu_s = time.process_time()
                window_t0 = trio.current_time()
            await slots.acquire()
            out.behind_s = max(out.behind_s, trio.current_time() - due)
            n.start_soon(put, i)
    out.window_s = trio.current_time() - window_t0
    out.writer_cpu_s = time.process_time() - out.writer_cpu_s
    return out


@dataclass(frozen=True, slots=True)
class Plan:
    """The writes of each phase: `writes` puts at `rate`, the first `warm_writes` unmeasured."""

    addrs: list[str]
    rate: float
    writes: int
    warm_writes: int
    value_size: int

    def run(self, seq0: int, watched: list[tuple[str, int]]) -> Writes:
        """One phase's writes, keys from `seq0`, the CPU of `watched` read at the window."""
        return trio.run(
            lambda: write_at_rate(
                self.addrs,
                rate=self.rate,
                count=self.writes,
                first_measured=self.warm_writes,
                value_size=self.value_size,
                seq0=seq0,
                watched=watched,
            )
        )


def _readline(stream: IO[bytes], what: str) -> str:
    line = stream.readline().decode().strip()
    if not line:
        raise RuntimeError(f"{what}: the watcher process ended")
    return line


def _phase_cpu(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: round(after[k] - before[k], 3) for k in before if k in after}


def watch_fanout(
    *,
    watchers: int,
    procs: int,
    rate: float,
    duration: float,
    warmup: float,
    value_size: int,
    out_dir: Path,
    tmp_dir: Path | None,
) -> Path:
    if watchers < 1 or procs < 1 or rate <= 0 or duration <= 0 or warmup < 0:
        raise ValueError("watchers, procs, rate and duration must be positive, warmup >= 0")
    out = out_dir / f"watch-fanout-{stamp()}.json"
    warm_writes = math.ceil(rate * warmup)
    writes = warm_writes + max(1, math.ceil(rate * duration))
    args = {
        "watchers": watchers,
        "procs": procs,
        "rate_per_s": rate,
        "duration_s": duration,
        "warmup_s": warmup,
        "value_size": value_size,
        "writes_per_phase": writes,
    }
    meta = {
        "host": host_info(tmp_dir or Path("/tmp")),
        "systems": series_meta(["rkv"]),
        "args": args,
    }

    def configure(driver: Driver) -> None:
        driver.metrics = True  # type: ignore[attr-defined]

    with fresh_cluster("rkv", tmp_dir, configure=configure) as driver:
        plan = Plan(driver.addrs(), rate, writes, warm_writes, value_size)
        servers = [(s.name, s.pid) for s in driver.servers]
        base = plan.run(0, servers)
        base_cpu = _phase_cpu(base.cpu_start, pids_cpu(servers))
        result = _fanout_phase(driver, plan, servers, watchers, procs)
    base_servers = sum(base_cpu.values())
    fan = result["servers_cpu_s"]
    events = result["events_measured"]
    extra = fan - base_servers * (result["window_s"] / base.window_s) if base.window_s else math.nan
    summary = {
        **{k: v for k, v in result.items() if k != "processes"},
        "baseline": {
            "servers_cpu_s": base_cpu,
            "window_s": round(base.window_s, 3),
            "servers_cores": cores(base_servers, base.window_s),
            "failed_writes": sum(a is None for a in base.acks),
        },
        "servers_cpu_us_per_event": per_op_us(fan, events),
        "servers_extra_cpu_us_per_event": per_op_us(extra, events),
        "processes": result["processes"],
    }
    write_json(out, envelope("watch_fanout", meta, result=summary))
    for line in report_lines(summary):
        print(line, flush=True)
    print(out)
    return out


def _fanout_phase(
    driver: Driver, plan: Plan, servers: list[tuple[str, int]], watchers: int, procs: int
) -> dict[str, Any]:
    """Start the watcher processes from the revision after the baseline's writes, wait until
    every watch is live, write, collect."""
    import rkv

    addrs, writes, warm_writes = plan.addrs, plan.writes, plan.warm_writes

    async def revision() -> int:
        async with rkv.connect(addrs, timeout=30) as c:
            _, rev = await c.get_revision(key_of(writes - 1))
        if rev is None:
            raise RuntimeError("the cluster answers no revisions")
        return rev

    start = trio.run(revision) + 1
    deadline = READY_TIMEOUT + writes / plan.rate + 60
    children: list[subprocess.Popen[bytes]] = []
    try:
        for p, n in enumerate(split(watchers, procs)):
            spec = {
                "addrs": addrs,
                "index": p,
                "prefix": PREFIX,
                "start_revision": start,
                "watchers": n,
                "per_client": PER_CLIENT,
                "writes": writes,
                "seq0": writes,
                "deadline_s": deadline,
            }
            argv = [sys.executable, "-m", "bench", "watcher", "--args", json.dumps(spec)]
            children.append(
                subprocess.Popen(
                    argv,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    cwd=Path(__file__).resolve().parents[1],
                )
            )
        for ch in children:
            assert ch.stdout is not None
            line = _readline(ch.stdout, "ready")
            if line != "ready":
                raise RuntimeError(f"a watcher process did not get ready: {line!r}")
        procs_named = [(f"watcher{i}", ch.pid) for i, ch in enumerate(children)]
        w = plan.run(writes, servers + procs_named)
        t_acked = time.monotonic()
        for ch in children:
            assert ch.stdout is not None
            if _readline(ch.stdout, "done") != "done":
                raise RuntimeError("a watcher process did not finish")
        drained_s = time.monotonic() - t_acked
        cpu_end = pids_cpu(servers + procs_named)
        cpu = _phase_cpu(w.cpu_start, cpu_end)
        window_s = w.window_s + drained_s
        metrics = [scrape(driver.metrics_url(i)) for i in range(len(addrs))]  # type: ignore[attr-defined]
        acks = json.dumps({"acks": w.acks, "first": warm_writes}).encode() + b"\n"
        results = []
        for ch in children:
            assert ch.stdin is not None and ch.stdout is not None
            ch.stdin.write(acks)
            ch.stdin.flush()
            results.append(json.loads(_readline(ch.stdout, "result")))
    finally:
        for ch in children:
            if ch.poll() is None:
                ch.kill()
            ch.wait(10)
    h = Histogram()
    for r in results:
        h.merge(Histogram.from_json(r["latency"]))
    servers_cpu = {k: v for k, v in cpu.items() if k.startswith("rkv")}
    watcher_cpu = {k: v for k, v in cpu.items() if k.startswith("watcher")}
    watcher_cores = {k: cores(v, window_s) for k, v in watcher_cpu.items()}
    writer_cores = cores(w.writer_cpu_s, w.window_s)
    return {
        "window_s": round(window_s, 3),
        "drain_after_last_ack_s": round(drained_s, 3),
        "writer_behind_s": round(w.behind_s, 3),
        "failed_writes": sum(a is None for a in w.acks),
        "events_measured": h.count,
        "events_missing": sum(r["missing"] for r in results),
        "events_before_ack": sum(r["before_ack"] for r in results),
        "watch_errors": sum(r["errors"] for r in results),
        "latency_ms": h.summary_ms(),
        "servers_cpu_s": round(sum(servers_cpu.values()), 3),
        "servers_cpu_by_node_s": servers_cpu,
        "generator_cores": {"writer": writer_cores, **watcher_cores},
        "generator_cpu_s": {"writer": round(w.writer_cpu_s, 3), **watcher_cpu},
        "generator_bound": generator_bound([writer_cores, *watcher_cores.values()]),
        "nodes_watch_metrics": [{k: m.get(k) for k in WATCH_METRICS} for m in metrics],
        "processes": results,
    }


def report_lines(s: dict[str, Any]) -> list[str]:
    lat = s["latency_ms"]
    gen = ", ".join(f"{k} {v}" for k, v in s["generator_cores"].items())
    bound = f" (a generator above {GENERATOR_BOUND_CORES} cores)" if s["generator_bound"] else ""
    return [
        f"delivery (write ack -> event): p50 {lat['p50']} ms  p99 {lat['p99']} ms  "
        f"max {lat['max']} ms over {s['events_measured']} events; missing "
        f"{s['events_missing']}, before the ack {s['events_before_ack']}, watch errors "
        f"{s['watch_errors']}, failed writes {s['failed_writes']}",
        f"servers: {s['servers_cpu_s']} CPU s over {s['window_s']} s "
        f"({s['servers_cpu_us_per_event']} us per event; above the writes alone "
        f"{s['servers_extra_cpu_us_per_event']} us per event); writes alone "
        f"{s['baseline']['servers_cores']} cores",
        f"generator cores: {gen}{bound}; writer behind schedule by {s['writer_behind_s']} s",
    ]
