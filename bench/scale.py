"""Scale: write N keys (1M x 100 B by default), then RSS per node, then restart-to-serving.

Owns: the fill (every key written once by the closed-loop generator, write throughput over
the whole fill), resident memory (total, anonymous and file-backed) and data-dir size of each
node afterwards, a full-cluster restart (SIGTERM all, start all on the same data dirs) timed
until a linearizable get of a written key answers with its value, and a sample of keys read
back to show what survived (PySyncObj's in-memory configs lose everything;
"pysyncobj:journal" keeps it, without fsync).
"""

from __future__ import annotations

import contextlib
import random
import time
from pathlib import Path
from typing import Any

import trio

from bench.common import (
    describe_error,
    envelope,
    fresh_cluster,
    host_info,
    series_meta,
    stamp,
    write_json,
)
from bench.drivers import Driver
from bench.loadgen import key_of, run_fill
from bench.nodewatch import rss_parts
from bench.procs import rss_bytes
from bench.stats import cores, generator_bound, per_op_us

SAMPLE = 200


def dir_bytes(path: Path) -> int:
    total = 0
    for p in path.rglob("*"):
        with contextlib.suppress(OSError):
            if p.is_file():
                total += p.stat().st_size
    return total


async def _first_read(driver: Driver, key: bytes, timeout: float) -> tuple[float, bool]:
    """Seconds until a get of `key` answers (value or None), and whether it had a value."""
    t0 = trio.current_time()
    with trio.move_on_after(timeout):
        while True:
            kv = await type(driver).connect({**driver.spec(), "probe": True}, 0)
            try:
                with trio.fail_after(2):
                    v = await kv.get(key)
                return trio.current_time() - t0, v is not None
            except Exception:  # not serving yet
                await trio.sleep(0.02)
            finally:
                with contextlib.suppress(Exception):
                    await kv.aclose()
    raise TimeoutError(f"not serving {timeout}s after restart")


async def _sample(driver: Driver, keys: int, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    kv = await type(driver).connect(driver.spec(), 1)
    found = 0
    try:
        for _ in range(SAMPLE):
            with trio.fail_after(10):
                if await kv.get(key_of(rng.randrange(keys))) is not None:
                    found += 1
    finally:
        with contextlib.suppress(Exception):
            await kv.aclose()
    return {"sampled": SAMPLE, "found": found}


def _one(
    series: str,
    *,
    keys: int,
    value_size: int,
    clients: int,
    procs: int,
    seed: int,
    tmp_dir: Path | None,
    fill_timeout: float,
) -> dict[str, Any]:
    with fresh_cluster(series, tmp_dir) as driver:
        pids = [(s.name, s.pid) for s in driver.servers]
        res = run_fill(
            driver.spec(),
            server_pids=pids,
            clients=clients,
            procs=procs,
            value_size=value_size,
            keys=keys,
            total=keys,
            seed=seed,
            timeout=fill_timeout,
        )
        m = res.merged
        out: dict[str, Any] = {
            "keys": keys,
            "value_size": value_size,
            "clients": clients,
            "fill_s": round(m.elapsed_s, 3),
            "write_ops_per_s": round(m.ops / m.elapsed_s, 1) if m.elapsed_s else None,
            "write_latency_ms": m.hist.summary_ms(),
            "write_retries": m.errors,
            "server_cpu_s": {k: round(v, 2) for k, v in res.server_cpu_s.items()},
            "generator_cpu_s": round(m.cpu_s, 2),
            "generator": driver.generator(),
            "cpu_us_per_op": {
                "generator": per_op_us(m.cpu_s, m.ops),
                "servers": per_op_us(sum(res.server_cpu_s.values()), m.ops),
            },
            "generator_cores_procs": [cores(w.cpu_s, w.elapsed_s) for w in res.workers],
            "generator_bound": generator_bound(cores(w.cpu_s, w.elapsed_s) for w in res.workers),
            "rss_bytes": {s.name: rss_bytes(s.pid) for s in driver.servers},
            # RssFile is mostly mapped store pages (LMDB): page cache the kernel can take back.
            "rss_detail": {s.name: rss_parts(s.pid) for s in driver.servers},
        }
        assert driver.workdir is not None
        # Each node's files live under workdir/<node name> (the drivers name them so).
        out["data_bytes"] = {
            s.name: dir_bytes(driver.workdir / s.name) if (driver.workdir / s.name).exists()
            else None
            for s in driver.servers
        }  # fmt: skip
        for i in range(driver.nodes):
            driver.stop_node(i)
        t0 = time.monotonic()
        restart_wall = time.time()
        for i in range(driver.nodes):
            driver.restart_node(i)
        _, had_value = trio.run(_first_read, driver, key_of(keys - 1), 600.0)
        # From starting the processes to the first answered linearizable get.
        out["restart_to_serving_s"] = round(time.monotonic() - t0, 3)
        out["last_key_survived"] = had_value
        # Where the restart's time goes: the nodes' own timestamps ("serving on", elections).
        out["restarted_at"] = time.strftime("%H:%M:%S", time.localtime(restart_wall)) + (
            f".{int(restart_wall % 1 * 1000):03d}"
        )
        out["restart_log_tails"] = {s.name: s.log_tail(8).splitlines() for s in driver.servers}
        out["after_restart"] = trio.run(_sample, driver, keys, seed)
        out["rss_bytes_after_restart"] = {s.name: rss_bytes(s.pid) for s in driver.servers}
        out["rss_detail_after_restart"] = {s.name: rss_parts(s.pid) for s in driver.servers}
        return out


def scale(
    *,
    series: list[str],
    keys: int,
    value_size: int,
    clients: int,
    procs: int,
    seed: int,
    out_dir: Path,
    tmp_dir: Path | None,
    fill_timeout: float = 7200.0,
) -> Path:
    out = out_dir / f"scale-{stamp()}.json"
    meta = {
        "host": host_info(tmp_dir or Path("/tmp")),
        "systems": series_meta(series),
        "args": {
            "keys": keys,
            "value_size": value_size,
            "clients": clients,
            "procs": procs,
            "fill_timeout_s": fill_timeout,
        },
    }
    results: dict[str, Any] = {}
    for s in series:
        try:
            r = _one(
                s,
                keys=keys,
                value_size=value_size,
                clients=clients,
                procs=procs,
                seed=seed,
                tmp_dir=tmp_dir,
                fill_timeout=fill_timeout,
            )
        except Exception as e:  # recorded; the other systems go on
            r = {"error": describe_error(e)}
        results[s] = r
        rss = r.get("rss_bytes") or {}
        print(
            f"{s:20s} fill {r.get('write_ops_per_s', '-')} ops/s, RSS/node MiB "
            f"{[round(v / 2**20) for v in rss.values() if v]}, restart-to-serving "
            f"{r.get('restart_to_serving_s', '-')} s, survived {r.get('after_restart', '-')} "
            f"{r.get('error', '')}",
            flush=True,
        )
        write_json(out, envelope("scale", meta, results=results))
    print(f"results: {out}")
    return out
