"""`bench latency`: where a 1-client put's time goes (issue 18), and A/B runs of source trees.

Owns: starting a fresh 3-node rkv cluster per run with stage timing on (`RKV_STAGE_TIMES`,
rkv/stagetimes.py) and /metrics, driving one closed-loop client of blocking-socket put frames
(bench/rawwire.py: the cheapest client there is, to the leader), the nodes' CPU and counters
(turns, fsyncs) over the measured puts, collecting each node's stage dump at its exit, and the
breakdown table. With `--trees NAME=DIR,...` the runs alternate between source trees (the
nodes run `-m rkv` from DIR), so an A/B shares the machine's drift. Must not change the nodes'
behaviour beyond the opt-in stage timing, or start anything but rkv.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import trio

from bench.common import envelope, fresh_cluster, host_info, stamp, warn_if_tmpfs, write_json
from bench.drivers.rkv import RkvDriver
from bench.nodewatch import scrape
from bench.procs import cpu_delta, pids_cpu
from bench.rawwire import RkvWire, parse_rkv_frame
from rkv.stagetimes import ENV

COUNTERS = {"turns": "rkv_raft_loop_turns", "fsyncs": "rkv_raft_saves"}
"""Per-node /metrics counters read before and after the measured puts."""


def _counters(driver: RkvDriver) -> dict[str, dict[str, float]]:
    out = {}
    for i, s in enumerate(driver.servers):
        m = scrape(driver.metrics_url(i))
        out[s.name] = {
            k: next((v for n, v in m.items() if n.startswith(name)), 0.0)
            for k, name in COUNTERS.items()
        }
    return out


def _drive(addr: str, puts: int, warmup: int, value: bytes) -> list[float]:
    """`warmup` + `puts` sequential puts on one connection; the latencies (s) of the last."""
    host, port = addr.rsplit(":", 1)
    wire = RkvWire(value)
    lat: list[float] = []
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = bytearray()
        for i in range(warmup + puts):
            req = wire.put(b"lat/%06d" % (i % 1000))
            t0 = time.perf_counter()
            s.sendall(req)
            while (f := parse_rkv_frame(buf)) is None:
                chunk = s.recv(65536)
                if not chunk:
                    raise ConnectionError("the leader closed the connection")
                buf += chunk
            t1 = time.perf_counter()
            frame, end = f
            del buf[:end]
            if frame.get("t") != "ok":
                raise RuntimeError(f"put answered {frame.get('t')}: {frame.get('code')}")
            if i >= warmup:
                lat.append(t1 - t0)
    return lat


def parse_strace_summary(text: str) -> dict[str, int]:
    """`strace -c` output: {syscall: calls} (rows `% time, seconds, usecs/call, calls,
    [errors], syscall`; the total row is left out)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 5 or parts[-1] == "total" or not parts[3].isdigit():
            continue
        try:
            float(parts[0])
        except ValueError:
            continue  # the header
        out[parts[-1]] = int(parts[3])
    return out


def _strace(pid: int, out: Path) -> subprocess.Popen[bytes]:
    p = subprocess.Popen(["strace", "-c", "-f", "-q", "-p", str(pid), "-o", str(out)])
    time.sleep(1.0)  # attached to every thread
    return p


def one_run(
    tree: Path | None,
    puts: int,
    warmup: int,
    size: int,
    tmp_dir: Path | None,
    strace: bool = False,
) -> dict[str, Any]:
    """One fresh cluster (run from `tree`, None: this one) and its measured puts. With
    `strace`, `strace -c -f` counts the syscalls of the leader and of one follower over all
    the puts (warm-up included); it slows them down, so such a run's times mean little."""
    stages_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"rkv-stages-{os.getpid()}-{stamp()}"
    env = dict(os.environ, **{ENV: str(stages_dir)})
    if tree is not None:
        env["PYTHONPATH"] = str(tree)

    def configure(d: Any) -> None:
        d.metrics = True
        d.env = env
        d.cwd = tree

    with fresh_cluster("rkv:raw", tmp_dir, configure=configure) as driver:
        assert isinstance(driver, RkvDriver)
        leader = trio.run(driver.leader)
        if leader is None:
            raise RuntimeError("no leader")
        names = [s.name for s in driver.servers]
        ports = [a.rsplit(":", 1)[1] for a in driver.addrs()]
        pids = [(s.name, s.pid) for s in driver.servers]
        traced = [leader, (leader + 1) % len(pids)] if strace else []
        tracers = [(i, _strace(pids[i][1], stages_dir / f"strace-{i}.txt")) for i in traced]
        before_c, before_cpu = _counters(driver), pids_cpu(pids)
        t0 = time.perf_counter()
        lat = _drive(driver.addrs()[leader], puts, warmup, os.urandom(size))
        wall = time.perf_counter() - t0
        after_c, after_cpu = _counters(driver), pids_cpu(pids)
        syscalls: dict[int, dict[str, int]] = {}
        for i, proc in tracers:
            proc.send_signal(signal.SIGINT)
            proc.wait(30)
            syscalls[i] = parse_strace_summary((stages_dir / f"strace-{i}.txt").read_text())
    cpu = cpu_delta(before_cpu, after_cpu)
    dumps = {p.name: json.loads(p.read_text()) for p in stages_dir.glob("stages-*.json")}
    shutil.rmtree(stages_dir, ignore_errors=True)
    n = warmup + puts
    nodes: dict[str, Any] = {}
    for i, name in enumerate(names):
        role = "leader" if i == leader else "follower"
        per_put = {k: (after_c[name][k] - before_c[name][k]) / n for k in COUNTERS}
        per_put["cpu_us"] = cpu.get(name, 0.0) / n * 1e6
        port = ports[i]
        stages = next((v for k, v in dumps.items() if k.endswith(f"_{port}.json")), None)
        nodes[name] = {"role": role, "per_put": per_put, "stages": stages}
        if i in syscalls:
            calls = syscalls[i]
            per_put["syscalls"] = sum(calls.values()) / n
            top = sorted(((v, k) for k, v in calls.items()), reverse=True)
            nodes[name]["syscalls_per_put"] = {k: v / n for v, k in top[:12]}
    lat.sort()
    return {
        "tree": str(tree) if tree else None,
        "puts": puts,
        "warmup": warmup,
        "wall_s": wall,
        "p50_ms": lat[len(lat) // 2] * 1e3,
        "p90_ms": lat[len(lat) * 9 // 10] * 1e3,
        "mean_ms": statistics.fmean(lat) * 1e3,
        "servers_cpu_us_per_put": sum(cpu.values()) / n * 1e6,
        "nodes": nodes,
    }


def breakdown(run: Mapping[str, Any]) -> str:
    """The stage table of one run: leader's put window, then a follower's append window."""
    lines = [
        f"client: p50 {run['p50_ms']:.3f} ms, p90 {run['p90_ms']:.3f} ms, "
        f"mean {run['mean_ms']:.3f} ms; servers {run['servers_cpu_us_per_put']:.0f} us CPU/put"
    ]
    for name, node in run["nodes"].items():
        pp = node["per_put"]
        lines.append(
            f"\n{name} ({node['role']}): per put {pp['turns']:.2f} turns, "
            f"{pp['fsyncs']:.2f} fsyncs, {pp['cpu_us']:.0f} us CPU"
        )
        if "syscalls_per_put" in node:
            sc = node["syscalls_per_put"]
            lines.append(
                f"  syscalls per put {pp['syscalls']:.1f}: "
                + ", ".join(f"{k} {v:.2f}" for k, v in sc.items())
            )
        st = node["stages"]
        if st is None:
            lines.append("  (no stage dump)")
            continue
        kind = "put" if node["role"] == "leader" else "append"
        c = st["counts"]
        w = c.get("windows", 0) or 1
        if kind in ("put", "append"):
            inside = {k.split("/", 1)[1]: v / w for k, v in c.items() if k.startswith(kind + "/")}
            lines.append("  per window: " + ", ".join(f"{k} {v:.2f}" for k, v in inside.items()))
        lines.append(f"  {'transition':44} {'n':>6} {'p50 us':>8} {'p90 us':>8} {'mean us':>8}")
        for key, s in st["stages"].items():
            if key.startswith(kind + ":") and s["n"] >= w / 20:
                lines.append(
                    f"  {key:44} {s['n']:6d} {s['p50_us']:8.0f} {s['p90_us']:8.0f} "
                    f"{s['mean_us']:8.0f}"
                )
    return "\n".join(lines)


def ab_table(runs: Sequence[Mapping[str, Any]]) -> str:
    by: dict[str, list[Mapping[str, Any]]] = {}
    for r in runs:
        by.setdefault(r["name"], []).append(r)
    lines = [f"{'tree':12} {'runs':>4} {'p50 ms (median; runs)':40} {'CPU us/put (median)':>20}"]
    for name, rs in by.items():
        p50s = [r["p50_ms"] for r in rs]
        cpus = [r["servers_cpu_us_per_put"] for r in rs]
        each = " / ".join(f"{x:.2f}" for x in p50s)
        lines.append(
            f"{name:12} {len(rs):4d} {statistics.median(p50s):.3f} ({each}){'':5} "
            f"{statistics.median(cpus):12.0f}"
        )
    return "\n".join(lines)


def stage_medians(runs: Sequence[Mapping[str, Any]], min_share: float = 0.5) -> str:
    """Per tree, the median over its runs of each transition's p50 (us) on the leader (put
    windows) and on the followers (append windows), for transitions seen in at least
    `min_share` of the windows; then the per-put counts and CPU."""
    by: dict[str, list[Mapping[str, Any]]] = {}
    for r in runs:
        by.setdefault(r["name"], []).append(r)
    lines = []
    for name, rs in by.items():
        for role, kind in (("leader", "put"), ("follower", "append")):
            p50s: dict[str, list[float]] = {}
            per_put: dict[str, list[float]] = {}
            for r in rs:
                for node in r["nodes"].values():
                    if node["role"] != role:
                        continue
                    for k, v in node["per_put"].items():
                        per_put.setdefault(k, []).append(v)
                    st = node["stages"]
                    if st is None:
                        continue
                    w = st["counts"].get("windows", 0)
                    for key, s in st["stages"].items():
                        if key.startswith(kind + ":") and s["n"] >= w * min_share:
                            p50s.setdefault(key, []).append(s["p50_us"])
            lines.append(f"\n{name}, {role} ({len(rs)} runs; median of the runs' p50, us)")
            for key, xs in p50s.items():
                lines.append(f"  {key:44} {statistics.median(xs):8.0f}")
            lines.append(
                "  per put: "
                + ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in per_put.items())
            )
    return "\n".join(lines)


def latency(
    *,
    puts: int,
    warmup: int,
    size: int,
    runs: int,
    trees: Mapping[str, Path | None],
    out_dir: Path,
    tmp_dir: Path | None,
    strace: bool = False,
) -> Path:
    if tmp_dir is not None:
        warn_if_tmpfs(tmp_dir)
    meta = {
        "host": host_info(tmp_dir),
        "args": {"puts": puts, "warmup": warmup, "size": size, "runs": runs, "strace": strace},
        "trees": {k: str(v) if v else None for k, v in trees.items()},
        "loadavg_start": os.getloadavg(),
    }
    out: list[dict[str, Any]] = []
    path = out_dir / f"latency-{stamp()}.json"
    for r in range(runs):
        order = list(trees.items())
        if r % 2:
            order.reverse()  # alternate which tree goes first
        for name, tree in order:
            res = one_run(tree, puts, warmup, size, tmp_dir, strace)
            res["name"], res["run"], res["loadavg"] = name, r, os.getloadavg()
            out.append(res)
            print(f"--- run {r} {name}: loadavg {res['loadavg'][0]:.1f}")
            print(breakdown(res), flush=True)
            write_json(path, envelope("latency", meta, runs=out))
    print(stage_medians(out))
    print("\n" + ab_table(out))
    print(f"\nresults: {path}")
    return path


def parse_trees(text: str) -> dict[str, Path | None]:
    """`NAME=DIR,NAME=DIR` (an empty DIR: this tree); '' gives {'this': None}."""
    if not text:
        return {"this": None}
    out: dict[str, Path | None] = {}
    for part in text.split(","):
        name, _, d = part.partition("=")
        out[name.strip()] = Path(d).resolve() if d.strip() else None
    return out
