"""`client-cpu`: what rkv's client library costs in CPU per operation (issue 18).

Owns: the plan of one measurement: ONE 3-node rkv cluster for the whole run (prefilled for
gets), and on it, for every run x workload x client count, three series measured one after
another in an order that rotates with the run (so drift of the machine hits all alike):

- `client`: N trio tasks sharing ONE `rkv.Client` (what an application does);
- `rkv`: the `compare` series: N tasks, each with a Client of its own;
- `rkv:raw`: bench/rawgen.py writing rkv's frames directly, the cheapest generator we have
  (the floor a Python client could reach).

Each point is one loadgen worker process; its CPU (time.process_time over the window) per
completed op is the figure. Prints the points, then per series/workload/clients the medians;
writes the results JSON. Must not hold measurement code (loadgen does).
"""

from __future__ import annotations

import statistics
import sys
import traceback
from pathlib import Path
from typing import Any

from bench.common import describe_error, envelope, fresh_cluster, host_info, stamp, write_json
from bench.compare import PREFILL_TIMEOUT
from bench.loadgen import run_load, run_prefill

SERIES = ("client", "rkv", "rkv:raw")


def _spec(base: dict[str, Any], series: str) -> dict[str, Any]:
    if series == "client":
        return {**base, "one_client": True}
    if series == "rkv":
        return dict(base)
    if series == "rkv:raw":
        return {**base, "config": "raw", "generator": "raw"}
    raise ValueError(f"unknown series {series!r} (one of {', '.join(SERIES)})")


def client_cpu(
    *,
    series: list[str],
    clients: list[int],
    workloads: list[str],
    value_size: int,
    duration: float,
    warmup: float,
    runs: int,
    keys: int,
    seed: int,
    out_dir: Path,
    tmp_dir: Path | None,
) -> Path:
    for s in series:
        _spec({}, s)  # unknown names fail before the cluster starts
    out = out_dir / f"client-cpu-{stamp()}.json"
    meta = {
        "host": host_info(tmp_dir),
        "args": {
            "series": series,
            "clients": clients,
            "workloads": workloads,
            "value_size": value_size,
            "duration_s": duration,
            "warmup_s": warmup,
            "runs": runs,
            "keys": keys,
            "seed": seed,
        },
    }
    points: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    with fresh_cluster("rkv", tmp_dir) as driver:
        pids = [(s.name, s.pid) for s in driver.servers]
        base = driver.spec()
        if any(w != "put" for w in workloads):
            run_prefill(
                _spec(base, "rkv:raw"),
                server_pids=pids,
                value_size=value_size,
                keys=keys,
                seed=seed,
                timeout=PREFILL_TIMEOUT,
            )
        for run in range(1, runs + 1):
            k = (run - 1) % len(series)
            order = series[k:] + series[:k]
            for workload in workloads:
                for c in clients:
                    for s in order:
                        try:
                            res = run_load(
                                _spec(base, s),
                                server_pids=pids,
                                clients=c,
                                procs=1,
                                workload=workload,
                                value_size=value_size,
                                keys=keys,
                                duration=duration,
                                warmup=warmup,
                                seed=seed + run,
                            )
                        except Exception as e:  # one broken point must not lose the others
                            traceback.print_exc(file=sys.stderr)
                            failures.append(
                                {"series": s, "workload": workload, "clients": c, "run": run}
                                | {"error": describe_error(e)}
                            )
                            continue
                        m = res.merged
                        ops = max(m.ops, 1)
                        p = {
                            "series": s,
                            "workload": workload,
                            "clients": c,
                            "run": run,
                            "ops": m.ops,
                            "errors": m.errors,
                            "ops_per_s": round(m.ops / duration, 1),
                            "client_us_per_op": round(m.cpu_s * 1e6 / ops, 1),
                            "servers_us_per_op": round(
                                sum(res.server_cpu_s.values()) * 1e6 / ops, 1
                            ),
                        }
                        points.append(p)
                        print(
                            f"{s:8s} {workload:4s} c={c:<3d} run={run} "
                            f"{p['ops_per_s']:>8.1f} ops/s  client {p['client_us_per_op']:>6.1f} "
                            f"us/op  servers {p['servers_us_per_op']:>6.1f} us/op  "
                            f"err={m.errors}",
                            flush=True,
                        )
                        write_json(out, envelope("client-cpu", meta, points=points))
    summary = summarize(points)
    write_json(out, envelope("client-cpu", meta, summary=summary, failures=failures, points=points))
    print(format_summary(summary))
    print(f"results: {out}")
    return out


def summarize(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Medians over the runs, per series, workload and client count."""
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for p in points:
        groups.setdefault((p["series"], p["workload"], p["clients"]), []).append(p)
    rows = []
    for (s, w, c), ps in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])):
        rows.append(
            {
                "series": s,
                "workload": w,
                "clients": c,
                "runs": len(ps),
                "ops_per_s": statistics.median(p["ops_per_s"] for p in ps),
                "client_us_per_op": statistics.median(p["client_us_per_op"] for p in ps),
                "servers_us_per_op": statistics.median(p["servers_us_per_op"] for p in ps),
            }
        )
    return rows


def format_summary(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| workload | clients | series | runs | ops/s | client us/op | servers us/op |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['workload']} | {r['clients']} | {r['series']} | {r['runs']} | "
            f"{r['ops_per_s']:.0f} | {r['client_us_per_op']:.1f} | {r['servers_us_per_op']:.1f} |"
        )
    return "\n".join(lines)
