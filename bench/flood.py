"""Writes during a connection flood on the leader (issue 19): the same closed-loop put load on
a fresh 3-node rkv cluster, once without a flood and once while N connections to the leader
never get through their handshake (a 4-byte header promising 4 KiB, then nothing).

Owns: the two phases (each on its own fresh cluster, flood phase second), the flood process
(`python -m bench flooder ...`: rkv.testing.flood for a fixed time, its own process so that
it does not share the generator's loop), the leader's connection counters (/metrics) and RSS
after each phase, and the results file. Must not: change how the load is generated
(bench.loadgen) or summarized (bench.stats): both phases are the `load` points of those.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import trio

from bench.common import envelope, fresh_cluster, host_info, series_meta, stamp, write_json
from bench.drivers import Driver
from bench.loadgen import REQUEST_TIMEOUT, run_load
from bench.procs import cpu_seconds, rss_bytes
from bench.stats import load_point

FLOOD_READY_TIMEOUT = 60.0
CONNECTION_METRICS = (
    "rkv_connections",
    "rkv_connections_accepted_total",
    "rkv_connections_shed_total",
    "rkv_connections_refused_total",
    "rkv_connections_closed_total",
)


def _configure(extra: list[str]) -> Any:
    def configure(driver: Driver) -> None:
        driver.metrics = True  # type: ignore[attr-defined]
        driver.extra_args = list(extra)  # type: ignore[attr-defined]

    return configure


def connection_metrics(text: str) -> dict[str, float]:
    """The connection samples of a /metrics page, labels kept: {"name{label=...}": value}."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].split("{", 1)[0] in CONNECTION_METRICS:
            try:
                out[parts[0]] = float(parts[1])
            except ValueError:
                continue
    return out


def _scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return connection_metrics(r.read().decode())


def _phase(
    driver: Driver,
    *,
    flood_connections: int,
    reopen_after: float,
    clients: int,
    procs: int,
    value_size: int,
    keys: int,
    duration: float,
    warmup: float,
    seed: int,
) -> dict[str, Any]:
    leader = trio.run(driver.leader)
    if leader is None:
        raise RuntimeError("no leader")
    port = int(driver.addrs()[leader].rsplit(":", 1)[1])
    http_port = driver.http_ports[leader]  # type: ignore[attr-defined]
    leader_pid = driver.servers[leader].pid
    rss_before = rss_bytes(leader_pid)
    flooder: subprocess.Popen[bytes] | None = None
    flood_stats: dict[str, Any] | None = None
    if flood_connections:
        seconds = warmup + duration + REQUEST_TIMEOUT + 30
        argv = [
            sys.executable, "-m", "bench", "flooder",
            "--port", str(port),
            "--connections", str(flood_connections),
            "--reopen-after", str(reopen_after),
            "--seconds", str(seconds),
        ]  # fmt: skip
        flooder = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            cwd=Path(__file__).resolve().parents[1],
        )
        assert flooder.stdout is not None
        line = flooder.stdout.readline().decode().strip()  # "started" once all are open
        if line != "started":
            flooder.kill()
            raise RuntimeError(f"the flooder did not start: {line!r}")
    flooder_cpu = cpu_seconds(flooder.pid) if flooder is not None else None
    flooder_t0 = time.monotonic()
    flooder_cores: float | None = None
    try:
        during = _scrape(http_port) if flooder is not None else {}
        res = run_load(
            driver.spec(),
            server_pids=[(s.name, s.pid) for s in driver.servers],
            clients=clients,
            procs=procs,
            workload="put",
            value_size=value_size,
            keys=keys,
            duration=duration,
            warmup=warmup,
            seed=seed,
        )
        rss_during = rss_bytes(leader_pid)
        after = _scrape(http_port)
        if flooder is not None and flooder_cpu is not None:
            now_cpu = cpu_seconds(flooder.pid)
            flooder_cpu = None if now_cpu is None else now_cpu - flooder_cpu
            if flooder_cpu is not None:
                flooder_cores = flooder_cpu / (time.monotonic() - flooder_t0)
    finally:
        if flooder is not None:
            flooder.send_signal(signal.SIGINT)  # prints its statistics and exits
            out, _ = flooder.communicate(timeout=30)
            text = out.decode().strip().splitlines()
            flood_stats = json.loads(text[-1]) if text else None
    new_leader = trio.run(driver.leader)
    point = load_point(
        system=driver.system,
        config=driver.config,
        version=driver.version(),
        workload="put",
        value_size=value_size,
        clients=clients,
        procs=procs,
        duration_s=duration,
        run=1,
        merged=res.merged,
        server_cpu_s=res.server_cpu_s,
        worker_cpu_s=[w.cpu_s for w in res.workers],
        generator=driver.generator(),
    )
    return {
        "flood_connections": flood_connections,
        "reopen_after_s": reopen_after,
        "leader": driver.addrs()[leader],
        "same_leader_after": new_leader == leader,
        "leader_rss_bytes": {"before": rss_before, "end_of_load": rss_during},
        "leader_connections": {"flood_running": during, "end_of_load": after},
        "flood": flood_stats,
        # The flood process's CPU over the whole load phase (generator start, warmup and
        # window), and per second of it: what the attacker takes from the same cores.
        "flooder_cpu_s": None if flooder_cpu is None else round(flooder_cpu, 3),
        "flooder_cores": None if flooder_cores is None else round(flooder_cores, 3),
        "point": point,
    }


def _line(name: str, p: dict[str, Any]) -> str:
    pt = p["point"]
    lat = pt["latency_ms"]
    rss = p["leader_rss_bytes"]["end_of_load"]
    return (
        f"{name:>9}: {pt['ops_per_s']:8.1f} puts/s  p50 {lat['p50']:.1f} ms  "
        f"p99 {lat['p99']:.1f} ms  errors {pt['errors']}  "
        f"leader RSS {rss / 2**20 if rss else 0:.0f} MiB  same leader {p['same_leader_after']}"
    )


def flood(
    *,
    connections: int,
    reopen_after: float,
    clients: int,
    procs: int,
    value_size: int,
    keys: int,
    duration: float,
    warmup: float,
    seed: int,
    out_dir: Path,
    tmp_dir: Path | None,
    extra_args: list[str],
) -> Path:
    out = out_dir / f"flood-{stamp()}.json"
    meta = {
        "host": host_info(tmp_dir or Path("/tmp")),
        "systems": series_meta(["rkv"]),
        "args": {
            "connections": connections,
            "reopen_after_s": reopen_after,
            "clients": clients,
            "procs": procs,
            "value_size": value_size,
            "keys": keys,
            "duration_s": duration,
            "warmup_s": warmup,
            "rkv_serve_extra_args": extra_args,
        },
    }
    phases: dict[str, Any] = {}
    for name, n in (("no flood", 0), ("flood", connections)):
        with fresh_cluster("rkv", tmp_dir, configure=_configure(extra_args)) as driver:
            phases[name] = _phase(
                driver,
                flood_connections=n,
                reopen_after=reopen_after,
                clients=clients,
                procs=procs,
                value_size=value_size,
                keys=keys,
                duration=duration,
                warmup=warmup,
                seed=seed,
            )
        print(_line(name, phases[name]), flush=True)
        ph = phases[name]
        cpu = ph["point"]["cpu_s"]["servers"]
        leader_name = f"rkv{driver.addrs().index(ph['leader'])}"
        print(
            f"{'':>9}  CPU seconds: leader {cpu.get(leader_name)}, all nodes "
            f"{sum(cpu.values()):.2f}, generator {ph['point']['cpu_s']['generator']}, "
            f"flooder {ph['flooder_cpu_s']} ({ph['flooder_cores']} cores)",
            flush=True,
        )
        if n:
            f = ph["flood"] or {}
            print(
                f"{'':>9}  flood: {f.get('opened')} opened, {f.get('closed_by_server')} closed "
                f"by the leader, longest open {f.get('longest', 0):.2f} s, goodbyes "
                f"{f.get('goodbyes')}; leader {ph['leader_connections']['end_of_load']}",
                flush=True,
            )
    base, fl = (phases[k]["point"] for k in ("no flood", "flood"))
    ratio = {
        "throughput": round(fl["ops_per_s"] / base["ops_per_s"], 3) if base["ops_per_s"] else None,
        "p99": round(fl["latency_ms"]["p99"] / base["latency_ms"]["p99"], 3)
        if base["latency_ms"]["p99"]
        else None,
    }
    print(f"flood / no flood: throughput x{ratio['throughput']}, p99 x{ratio['p99']}", flush=True)
    write_json(out, envelope("flood", meta, phases=phases, flood_over_no_flood=ratio))
    print(out)
    return out


# -- the flood process -----------------------------------------------------------------------


def flooder_main(port: int, connections: int, reopen_after: float, seconds: float) -> int:
    """`python -m bench flooder`: hold the flood on 127.0.0.1:port for `seconds` (or until
    SIGINT); print "started" once every connection was opened once, and the flood's
    statistics as one JSON line at the end."""
    from rkv.testing import FloodStats
    from rkv.testing import flood as run_flood

    stats = FloodStats()

    async def main() -> None:
        with (
            trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals,
            trio.move_on_after(seconds),
        ):
            async with trio.open_nursery() as nursery:
                await nursery.start(
                    lambda task_status: run_flood(
                        "127.0.0.1",
                        port,
                        connections=connections,
                        reopen_after=reopen_after,
                        stats=stats,
                        task_status=task_status,
                    )
                )
                print("started", flush=True)
                async for _ in signals:
                    break
                nursery.cancel_scope.cancel()

    trio.run(main)
    print(
        json.dumps(
            {
                "opened": stats.opened,
                "open_at_end": stats.open,
                "connect_failures": stats.connect_failures,
                "closed_by_server": stats.closed_by_server,
                "goodbyes": dict(stats.goodbyes),
                "longest_closed": round(stats.longest_closed, 3),
                "longest_open_at_end": round(stats.longest_open, 3),
                "longest": round(stats.longest, 3),
                "pid": os.getpid(),
                "time": time.time(),
            }
        ),
        flush=True,
    )
    return 0
