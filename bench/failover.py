"""Failover time: kill -9 the leader, measure until the first successful write after the kill.

Owns: one trial (fresh cluster; writes probed at a fixed rate to the surviving nodes; SIGKILL
of the leader; the time from the kill to the first acknowledged write that *started* after the
kill, and to the first moment a survivor names a new leader) and the median/max over trials.
Probes come from a pool of clients per surviving node, so a probe stuck on a node that has no
leader yet does not delay the next probe. Must not tune the systems' election timeouts.
"""

from __future__ import annotations

import contextlib
import math
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
from bench.drivers import KV, Driver
from bench.stats import median_max

CLIENTS_PER_NODE = 64
PROBE_TIMEOUT = 3.0
STEADY_S = 1.0


async def _trial(driver: Driver, probe_interval: float, timeout: float) -> dict[str, Any]:
    leader = None
    with trio.move_on_after(10):
        while leader is None:
            leader = await driver.leader()
            if leader is None:
                await trio.sleep(0.05)
    if leader is None:
        raise RuntimeError("no leader before the kill")
    survivors = [i for i in range(driver.nodes) if i != leader]
    spec = driver.spec()
    # All clients are opened here, in this task, and closed here in reverse order: a client
    # may hold a nursery of the task that opened it (rkv's does). Connections are lazy.
    all_clients: list[KV] = []
    idle: dict[int, list[KV]] = {}
    for i in survivors:
        idle[i] = []
        for _ in range(CLIENTS_PER_NODE):
            kv = await type(driver).connect(spec, i)
            all_clients.append(kv)
            idle[i].append(kv)
    st: dict[str, Any] = {
        "t_kill": None,
        "first_write": None,
        "new_leader": None,
        "ok_before": 0,
        "errors_after": 0,
        "seq": 0,
    }
    done = trio.Event()

    async def probe(node: int) -> None:
        if not idle[node]:
            return  # every client of this node is waiting on a probe: skip this tick
        kv = idle[node].pop()
        st["seq"] += 1
        key = b"bench/failover/%d" % st["seq"]
        t0 = trio.current_time()
        try:
            with trio.fail_after(PROBE_TIMEOUT):
                await kv.put(key, b"x" * 100)
        except Exception:  # expected while there is no leader
            if st["t_kill"] is not None:
                st["errors_after"] += 1
            await trio.sleep(0)
        else:
            if st["t_kill"] is None:
                st["ok_before"] += 1
            elif t0 >= st["t_kill"] and st["first_write"] is None:
                st["first_write"] = trio.current_time() - st["t_kill"]
                done.set()
        idle[node].append(kv)

    async def fire(nursery: trio.Nursery) -> None:
        k = 0
        while True:
            nursery.start_soon(probe, survivors[k % len(survivors)])
            k += 1
            await trio.sleep(probe_interval)

    async def watch_leader() -> None:
        while st["t_kill"] is None:
            await trio.sleep(0.01)
        while True:
            new = await driver.leader()
            if new is not None and new != leader:
                st["new_leader"] = trio.current_time() - st["t_kill"]
                return
            await trio.sleep(0.02)

    try:
        async with trio.open_nursery() as n:
            n.start_soon(fire, n)
            n.start_soon(watch_leader)
            await trio.sleep(STEADY_S)
            if st["ok_before"] == 0:
                raise RuntimeError("no probe write succeeded before the kill")
            st["t_kill"] = trio.current_time()
            driver.kill_node(leader)
            with trio.move_on_after(timeout):
                await done.wait()
                # Give the leader watcher a moment if the write came first.
                with trio.move_on_after(2):
                    while st["new_leader"] is None:
                        await trio.sleep(0.01)
            n.cancel_scope.cancel()
    finally:
        for kv in reversed(all_clients):
            with trio.move_on_after(1):
                # Closing clients of a dead node may fail; that is fine.
                with contextlib.suppress(Exception):
                    await kv.aclose()
    return {
        "killed_node": leader,
        "first_write_s": st["first_write"],
        "new_leader_seen_s": st["new_leader"],
        "probe_errors_after_kill": st["errors_after"],
        "timed_out": st["first_write"] is None,
    }


def failover(
    *,
    series: list[str],
    trials: int,
    probe_interval: float,
    timeout: float,
    out_dir: Path,
    tmp_dir: Path | None,
) -> Path:
    out = out_dir / f"failover-{stamp()}.json"
    meta = {
        "host": host_info(tmp_dir or Path("/tmp")),
        "systems": series_meta(series),
        "args": {"trials": trials, "probe_interval_s": probe_interval, "timeout_s": timeout},
    }
    results: dict[str, Any] = {}
    for t in range(1, trials + 1):
        for s in series:
            entry = results.setdefault(s, {"trials": []})
            try:
                with fresh_cluster(s, tmp_dir) as driver:
                    r = trio.run(_trial, driver, probe_interval, timeout)
            except Exception as e:  # recorded; the other trials go on
                r = {"error": describe_error(e)}
            entry["trials"].append(r)
            fw = r.get("first_write_s")
            print(
                f"{s:20s} trial {t}: first write after "
                f"{'-' if fw is None else f'{fw:.3f}'} s, new leader seen after "
                f"{_fmt(r.get('new_leader_seen_s'))} s {r.get('error', '')}",
                flush=True,
            )
            for agg in results.values():
                ok = [
                    x["first_write_s"] for x in agg["trials"] if x.get("first_write_s") is not None
                ]
                agg["first_write_s"] = median_max(ok)
                agg["failed_trials"] = len(agg["trials"]) - len(ok)
            write_json(out, envelope("failover", meta, results=results))
    for s, agg in results.items():
        print(
            f"{s:20s} failover median {_fmt(agg['first_write_s']['median'])} s, max "
            f"{_fmt(agg['first_write_s']['max'])} s, failed trials {agg['failed_trials']}"
        )
    print(f"results: {out}")
    return out


def _fmt(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"
