"""Disk use under overwrites (issue 6): does a node's data dir stay bounded when the same keys
are written again and again?

Owns: one rkv cluster (3 nodes, default compaction settings unless told otherwise, /metrics
on), `--writes` puts spread over `--keys` keys by the closed-loop generator (key numbers wrap,
so every key is overwritten writes/keys times), and a sample of every node (data.mdb size,
`du` of the data dir, LMDB pages in use, log entries, snapshot index, RSS) each time the
commit index passed the next multiple of `--every` entries; then the growth of each series
after the node's first compaction. Must not open the nodes' stores (bench.nodewatch says why).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.common import envelope, fresh_cluster, host_info, series_meta, stamp, write_json
from bench.drivers import Driver
from bench.loadgen import run_fill
from bench.nodewatch import (
    RkvNodes,
    Watcher,
    fill_rates,
    growth,
    mib,
    since_first_compaction,
)

SERIES = ("data_mdb_bytes", "du_bytes", "lmdb_used_bytes", "log_entries", "rss_bytes")


def _configure(extra: list[str]) -> Any:
    def configure(driver: Driver) -> None:
        driver.metrics = True  # type: ignore[attr-defined]
        driver.extra_args = list(extra)  # type: ignore[attr-defined]

    return configure


def _line(rec: dict[str, Any]) -> str:
    cells = []
    for name, s in rec["nodes"].items():
        cells.append(
            f"{name} mdb {mib(s.get('data_mdb_bytes'))} used {mib(s.get('lmdb_used_bytes'))} "
            f"log {s.get('log_entries')} snap {s.get('snapshot_index')} "
            f"rss {mib(s.get('rss_bytes'))}"
        )
    return f"{rec['t_s']:8.1f}s {rec['entries']!s:>9} entries | " + " | ".join(cells)


def summarize(samples: list[dict[str, Any]], nodes: list[str]) -> dict[str, Any]:
    """Per node and series: growth over all samples and since the node's first compaction."""
    out: dict[str, Any] = {}
    for node in nodes:
        after = since_first_compaction(samples, node)
        allpts = [{"entries": r["entries"], **(r["nodes"].get(node) or {})} for r in samples]
        per: dict[str, Any] = {
            "first_compaction_at_entries": after[0]["entries"] if after else None
        }
        for key in SERIES:
            per[key] = {
                "all": growth([(p["entries"], p[key]) for p in allpts if p.get(key) is not None]),
                "after_first_compaction": growth(
                    [(p["entries"], p[key]) for p in after if p.get(key) is not None]
                ),
            }
        out[node] = per
    return out


def disk(
    *,
    writes: int,
    keys: int,
    value_size: int,
    clients: int,
    procs: int,
    every: int,
    seed: int,
    out_dir: Path,
    tmp_dir: Path | None,
    extra_args: list[str],
    fill_timeout: float,
) -> Path:
    out = out_dir / f"disk-{stamp()}.json"
    meta = {
        "host": host_info(tmp_dir or Path("/tmp")),
        "systems": series_meta(["rkv"]),
        "args": {
            "writes": writes,
            "keys": keys,
            "value_size": value_size,
            "clients": clients,
            "procs": procs,
            "every": every,
            "rkv_serve_extra_args": extra_args,
        },
    }
    with fresh_cluster("rkv", tmp_dir, configure=_configure(extra_args)) as driver:
        watcher = Watcher(
            RkvNodes(driver), every=every, on_sample=lambda r: print(_line(r), flush=True)
        )
        watcher.start()
        t0 = time.monotonic()
        res = run_fill(
            driver.spec(),
            server_pids=[(s.name, s.pid) for s in driver.servers],
            clients=clients,
            procs=procs,
            value_size=value_size,
            keys=keys,
            total=writes,
            seed=seed,
            timeout=fill_timeout,
        )
        load_s = time.monotonic() - t0
        watcher.stop()
        # Idle for a moment: the last compaction check runs, nothing else is written.
        time.sleep(3.0)
        settled = watcher.take()
        print(_line(settled), flush=True)
        m = res.merged
        names = [s.name for s in driver.servers]
        body: dict[str, Any] = {
            "writes": m.ops,
            "write_retries": m.errors,
            "elapsed_s": round(m.elapsed_s, 3),
            "load_wall_s": round(load_s, 3),
            "write_ops_per_s": round(m.ops / m.elapsed_s, 1) if m.elapsed_s else None,
            "write_latency_ms": m.hist.summary_ms(),
            "server_cpu_s": {k: round(v, 2) for k, v in res.server_cpu_s.items()},
            "watch_errors": watcher.errors,
            "rates": fill_rates(watcher.samples),
            "samples": watcher.samples,
            "summary": summarize(watcher.samples, names),
        }
    write_json(out, envelope("disk", meta, results=body))
    for node, per in body["summary"].items():
        d = per["data_mdb_bytes"]["after_first_compaction"]
        print(
            f"{node}: data.mdb after first compaction min {mib(d['min'])} max {mib(d['max'])} "
            f"last {mib(d['last'])} MiB, slope {d['slope_per_100k']} B/100k writes"
        )
    print(f"{m.ops} writes at {body['write_ops_per_s']} ops/s; results: {out}")
    return out
