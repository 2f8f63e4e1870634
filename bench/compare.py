"""The side-by-side comparison: every series x workload x value size x client count x run.

Owns: the measurement plan (a fresh cluster for every point; runs interleave the systems and
rotate their order so that drift of the machine hits all of them alike), prefilling keys for
read workloads, and the results file + chart. Must not hold measurement code (loadgen does).
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Any

from bench.chart import plot_compare
from bench.common import (
    describe_error,
    envelope,
    fresh_cluster,
    host_info,
    series_meta,
    stamp,
    warn_if_tmpfs,
    write_json,
)
from bench.loadgen import run_load, run_prefill
from bench.stats import GENERATOR_BOUND_CORES, format_table, load_point, summarize

PREFILL_TIMEOUT = 120.0


class PrefillFailed(Exception):
    """The key space of a read workload could not be written in time."""


DEFAULT_SERIES = ("rkv", "etcd", "pysyncobj", "pysyncobj:nobatch")


def measure_point(
    series: str,
    *,
    workload: str,
    value_size: int,
    clients: int,
    procs: int,
    duration: float,
    warmup: float,
    keys: int,
    run: int,
    seed: int,
    tmp_dir: Path | None,
) -> dict[str, Any]:
    with fresh_cluster(series, tmp_dir) as driver:
        pids = [(s.name, s.pid) for s in driver.servers]
        if workload in ("get", "mixed"):
            try:
                run_prefill(
                    driver.spec(),
                    server_pids=pids,
                    value_size=value_size,
                    keys=keys,
                    seed=seed,
                    timeout=PREFILL_TIMEOUT,
                )
            except Exception as e:
                raise PrefillFailed(f"prefill of {keys} keys: {describe_error(e)}") from e
        res = run_load(
            driver.spec(),
            server_pids=pids,
            clients=clients,
            procs=procs,
            workload=workload,
            value_size=value_size,
            keys=keys,
            duration=duration,
            warmup=warmup,
            seed=seed + run,
        )
        return load_point(
            system=driver.system,
            config=driver.config,
            version=driver.version(),
            workload=workload,
            value_size=value_size,
            clients=clients,
            procs=min(procs, clients),
            duration_s=duration,
            run=run,
            merged=res.merged,
            server_cpu_s=res.server_cpu_s,
            worker_cpu_s=[w.cpu_s for w in res.workers],
            generator=driver.generator(),
        )


def compare(
    *,
    series: list[str],
    clients: list[int],
    workloads: list[str],
    sizes: list[int],
    duration: float,
    warmup: float,
    runs: int,
    procs: int,
    keys: int,
    seed: int,
    out_dir: Path,
    tmp_dir: Path | None,
    chart: bool = True,
) -> Path:
    if tmp_dir is not None:
        warn_if_tmpfs(tmp_dir)
    name = f"compare-{stamp()}"
    out = out_dir / f"{name}.json"
    meta = {
        "host": host_info(tmp_dir or Path("/tmp")),
        "systems": series_meta(series),
        "args": {
            "series": series,
            "clients": clients,
            "workloads": workloads,
            "value_sizes": sizes,
            "duration_s": duration,
            "warmup_s": warmup,
            "runs": runs,
            "procs": procs,
            "keys": keys,
            "seed": seed,
        },
    }
    for label, m in meta["systems"].items():
        print(f"{label}: {m.get('client', m.get('version'))}", flush=True)
    points: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    # A system that cannot prefill a value size once will not in the next points either:
    # skip its read points of that size rather than wait out every prefill timeout.
    no_prefill: set[tuple[str, int]] = set()
    for run in range(1, runs + 1):
        order = series[run - 1 :] + series[: run - 1] if series else series
        for workload in workloads:
            for size in sizes:
                for c in clients:
                    for s in order:
                        try:
                            if workload != "put" and (s, size) in no_prefill:
                                raise PrefillFailed("skipped: an earlier prefill failed")
                            p = measure_point(
                                s,
                                workload=workload,
                                value_size=size,
                                clients=c,
                                procs=procs,
                                duration=duration,
                                warmup=warmup,
                                keys=keys,
                                run=run,
                                seed=seed,
                                tmp_dir=tmp_dir,
                            )
                        except Exception as e:  # one broken point must not lose the others
                            if isinstance(e, PrefillFailed):
                                no_prefill.add((s, size))
                            failures.append(
                                {
                                    "series": s,
                                    "workload": workload,
                                    "value_size": size,
                                    "clients": c,
                                    "run": run,
                                    "error": describe_error(e),
                                }
                            )
                            traceback.print_exc(file=sys.stderr)
                            print(f"FAILED {s} {workload} {size}B c={c} run={run}: {e}")
                        else:
                            points.append(p)
                            print(_line(p), flush=True)
                        write_json(
                            out,
                            envelope(
                                "compare",
                                meta,
                                summary=summarize(points),
                                failures=failures,
                                points=points,
                            ),
                        )
    summary = summarize(points)
    if summary:
        print(format_table(summary))
    if chart and summary:
        png = plot_compare(summary, out.with_suffix(".png"), title=f"{name} ({runs} runs)")
        print(f"chart: {png}")
    print(f"results: {out}")
    print(json.dumps({"failures": len(failures), "points": len(points)}))
    return out


def _line(p: dict[str, Any]) -> str:
    lat = p["latency_ms"]
    label = p["system"] if p["config"] == "default" else f"{p['system']}:{p['config']}"
    per_op = p["cpu_us_per_op"]
    bound = (
        f"  GEN-BOUND (a generator process above {GENERATOR_BOUND_CORES} of a core)"
        if p["generator_bound"]
        else ""
    )
    return (
        f"{label:20s} {p['workload']:5s} {p['value_size']:>6d}B c={p['clients']:<3d} "
        f"run={p['run']} {p['ops_per_s']:>9.1f} ops/s  p50={lat['p50']} p99={lat['p99']} "
        f"p999={lat['p999']} ms  err={p['errors']} stalled={p['stalled_at_end']}  "
        f"cores gen={p['cpu_cores']['generator']} srv={p['cpu_cores']['servers']}  "
        f"us/op gen={per_op['generator']} srv={per_op['servers']}{bound}"
    )
