"""Snapshot install time (issue 6): how long a follower that fell behind the leader's
compacted log takes to be brought back by a snapshot of N keys.

Owns the whole run on one rkv cluster (/metrics on): fill `--keys` keys once each (the fill
of bench.scale, sampled every `--sample-every` entries: write rate, RSS and data size as the
store grows), then SIGTERM one follower, write `--extra-writes` more (overwrites of existing
keys) so that the leader compacts its log past the follower's last index, restart the
follower and time it: until its /metrics answer, until its applied index jumps (the
snapshot is installed) and until it has applied the leader's commit index of the moment it
was restarted (caught up). The log line "snapshot at N sent to F (C chunks, R records)" of
whichever node sent it (leadership may move meanwhile) gives the snapshot's size; the bytes
each other node wrote through write calls meanwhile (/proc/PID/io wchar: sockets, no client
writes run then) approximate its bytes on the wire.
Finally a sample of keys is read back from the follower alone (stale reads: its own state).
"""

from __future__ import annotations

import contextlib
import random
import re
import time
from pathlib import Path
from typing import Any

import trio

from bench.common import envelope, fresh_cluster, host_info, series_meta, stamp, write_json
from bench.disk import _configure, _line
from bench.drivers import Driver
from bench.loadgen import key_of, run_fill
from bench.nodewatch import RkvNodes, Watcher, fill_rates, proc_io, scrape
from bench.procs import rss_bytes

SAMPLE = 200
_SENT = re.compile(r"snapshot at (\d+) sent to (\S+) \((\d+) chunks, (\d+) records\)")


def parse_sent(log_text: str, follower_id: str) -> list[dict[str, int]]:
    """The leader's "snapshot at N sent to F (C chunks, R records)" lines for follower F."""
    out = []
    for m in _SENT.finditer(log_text):
        if m.group(2) == follower_id:
            out.append(
                {"index": int(m.group(1)), "chunks": int(m.group(3)), "records": int(m.group(4))}
            )
    return out


def _metric(driver: Any, i: int, name: str) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        v = scrape(driver.metrics_url(i), timeout=1.0).get(name)
        return None if v is None else int(v)
    return None


async def _read_back(driver: Driver, i: int, keys: int, seed: int) -> dict[str, int]:
    """Stale gets on node i alone: what its own state machine holds after the install."""
    import rkv

    rng = random.Random(seed)
    found = 0
    async with rkv.connect([driver.addrs()[i]], timeout=10.0) as db:
        for _ in range(SAMPLE):
            if await db.get(key_of(rng.randrange(keys)), stale=True) is not None:
                found += 1
    return {"sampled": SAMPLE, "found": found}


def _catch_up(driver: Any, f: int, target: int, snap: int, timeout: float) -> dict[str, Any]:
    """Poll follower f's /metrics every 50 ms from its restart until applied >= target.
    Installed = applied reached `snap`, the leader's snapshot index, which lies beyond the
    follower's own log: only a snapshot can bring it there."""
    t0 = time.monotonic()
    pid = driver.servers[f].pid
    out: dict[str, Any] = {"serving_metrics_s": None, "installed_s": None, "caught_up_s": None}
    peak_rss = 0
    while time.monotonic() - t0 < timeout:
        if not driver.servers[f].alive():
            raise RuntimeError(f"follower exited:\n{driver.servers[f].log_tail()}")
        peak_rss = max(peak_rss, rss_bytes(pid) or 0)
        applied = _metric(driver, f, "rkv_applied_index")
        now = round(time.monotonic() - t0, 3)
        if applied is not None:
            if out["serving_metrics_s"] is None:
                out["serving_metrics_s"] = now
            if out["installed_s"] is None and applied >= snap:
                out["installed_s"] = now
                out["applied_at_install"] = applied
            if applied >= target:
                out["caught_up_s"] = now
                break
        time.sleep(0.05)
    else:
        raise RuntimeError(f"follower not caught up {timeout}s after its restart")
    out["follower_peak_rss_bytes"] = peak_rss
    return out


def snapinstall(
    *,
    keys: int,
    value_size: int,
    clients: int,
    procs: int,
    extra_writes: int,
    sample_every: int,
    seed: int,
    out_dir: Path,
    tmp_dir: Path | None,
    extra_args: list[str],
    fill_timeout: float,
    catchup_timeout: float,
) -> Path:
    out = out_dir / f"snapinstall-{stamp()}.json"
    meta = {
        "host": host_info(tmp_dir or Path("/tmp")),
        "systems": series_meta(["rkv"]),
        "args": {
            "keys": keys,
            "value_size": value_size,
            "clients": clients,
            "procs": procs,
            "extra_writes": extra_writes,
            "rkv_serve_extra_args": extra_args,
        },
    }
    body: dict[str, Any] = {}

    def save() -> None:
        write_json(out, envelope("snapinstall", meta, results=body))

    with fresh_cluster("rkv", tmp_dir, configure=_configure(extra_args)) as driver:
        pids = [(s.name, s.pid) for s in driver.servers]
        nodes = RkvNodes(driver)
        watcher = Watcher(
            nodes, every=sample_every, on_sample=lambda r: print(_line(r), flush=True)
        )
        watcher.start()
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
        watcher.stop()
        m = res.merged
        body["fill"] = {
            "keys": m.ops,
            "elapsed_s": round(m.elapsed_s, 3),
            "write_ops_per_s": round(m.ops / m.elapsed_s, 1) if m.elapsed_s else None,
            "write_latency_ms": m.hist.summary_ms(),
            "write_retries": m.errors,
            "server_cpu_s": {k: round(v, 2) for k, v in res.server_cpu_s.items()},
            "rates": fill_rates(watcher.samples),
            "samples": watcher.samples,
        }
        save()

        leader = trio.run(driver.leader)
        if leader is None:
            raise RuntimeError("no leader after the fill")
        f = next(i for i in range(driver.nodes) if i != leader)
        fid = driver.addrs()[f]
        f_last = _metric(driver, f, "rkv_last_index") or 0
        f_applied = _metric(driver, f, "rkv_applied_index") or 0
        driver.stop_node(f)  # SIGTERM: a follower just stops
        print(f"stopped follower {fid} at last index {f_last}, applied {f_applied}", flush=True)

        t0 = time.monotonic()
        extra = run_fill(
            driver.spec(),
            server_pids=[p for p in pids if p[0] != driver.servers[f].name],
            clients=clients,
            procs=procs,
            value_size=value_size,
            keys=keys,
            total=extra_writes,
            seed=seed + 1,
            timeout=fill_timeout,
        )
        body["extra_writes"] = {
            "writes": extra.merged.ops,
            "elapsed_s": round(time.monotonic() - t0, 3),
        }
        # Compaction is checked every 0.1 s; wait until the follower's next entry is gone.
        deadline = time.monotonic() + 60
        snap_idx = 0
        while time.monotonic() < deadline:
            snap_idx = _metric(driver, leader, "rkv_snapshot_index") or 0
            if snap_idx > f_last:
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(
                f"leader's snapshot index {snap_idx} never passed the follower's {f_last}: "
                "write more (--extra-writes)"
            )
        target = _metric(driver, leader, "rkv_commit_index") or 0
        body["before_restart"] = {
            "follower": fid,
            "follower_last_index": f_last,
            "follower_applied": f_applied,
            "leader_snapshot_index": snap_idx,
            "leader_commit": target,
            "nodes": nodes(),
        }
        # Leadership may move meanwhile (e.g. an election while the follower comes back):
        # any live node may be the one that streams, so all of them are watched.
        others = [i for i in range(driver.nodes) if i != f]
        io0 = {i: proc_io(driver.servers[i].pid) for i in others}
        restart_wall = time.time()
        driver.restart_node(f)
        timing = _catch_up(driver, f, target, snap_idx, catchup_timeout)
        io1 = {i: proc_io(driver.servers[i].pid) for i in others}
        # The sender logs once the follower answered the last frame, which it does after
        # the install's raft-loop turn: that may come a little after applied moved.
        sent: list[dict[str, Any]] = []
        deadline = time.monotonic() + 30
        while not sent and time.monotonic() < deadline:
            time.sleep(0.2)
            for i in others:
                text = driver.servers[i].log_path.read_text(errors="replace")
                sent += [{"by": driver.addrs()[i], **x} for x in parse_sent(text, fid)]
        wchar = {
            driver.addrs()[i]: io1[i].get("wchar", 0) - io0[i].get("wchar", 0)
            for i in others
            if io0[i] and io1[i]
        }
        body["install"] = {
            **timing,
            "restarted_at": time.strftime("%H:%M:%S", time.localtime(restart_wall))
            + f".{int(restart_wall % 1 * 1000):03d}",
            "snapshots_sent": sent,
            "leader_at_stop": driver.addrs()[leader],
            "wchar_bytes_meanwhile": wchar,
            "leader_after": trio.run(driver.leader),
            "after": nodes(),
            "read_back_from_follower": trio.run(_read_back, driver, f, keys, seed),
            # its startup and install, with timestamps (the data dir goes away afterwards)
            "follower_log_tail": driver.servers[f].log_tail(40).splitlines(),
        }
        save()
        print(
            f"snapshot install: restart -> metrics {timing['serving_metrics_s']} s, installed "
            f"{timing['installed_s']} s, caught up {timing['caught_up_s']} s; sent {sent}; "
            f"bytes written by the others meanwhile {wchar}",
            flush=True,
        )
    print(f"results: {out}")
    return out
