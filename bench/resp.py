"""`bench resp` (issue 17's "done when", measured as issue 18 asks): redis-benchmark against a
3-node rkv cluster (through the leader and through a follower), against Debian's
`redis-server` made durable (`appendonly yes`, `appendfsync always`, one node), and rkv's
native client on the same rkv cluster, in one run, on fresh data dirs.

Owns: the plan (one rkv cluster with --resp-port on every node, then one redis-server), one
redis-benchmark process per test (`-t set`, ...) so that each test has its own generator CPU
(the child's rusage from wait4) and its own server CPU (the nodes' /proc before and after),
the support probe (a command answered with an error is marked "not supported" and not run:
redis-benchmark 7 exits at the first error reply, older ones counted error replies as
replies, i.e. as throughput), and the results file + table.
The pure parts (redis-benchmark's CSV, RESP probe bytes, per-op figures, the table) are
bench/respwire.py's. Must not: measure the native client itself (bench.loadgen does, as for
`compare`).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
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
    warn_if_tmpfs,
    write_json,
)
from bench.drivers import Driver
from bench.loadgen import run_load
from bench.procs import ProcessGroup, pids_cpu, server, wait_port
from bench.respwire import (
    HOST,
    PROBES,
    benchmark_argv,
    encode_command,
    expand_tests,
    figures,
    format_table,
    native_row,
    parse_csv,
    reply_error,
)
from bench.stats import GENERATOR_BOUND_CORES, load_point


def probe(port: int, test: str, timeout: float = 10.0) -> str | None:
    """Send the test's probe command once; the error text when the server refuses it."""
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(encode_command(PROBES[test]))
        buf = b""
        while b"\r\n" not in buf:
            chunk = s.recv(4096)
            if not chunk:
                return "connection closed"
            buf += chunk
    return reply_error(buf.split(b"\r\n", 1)[0])


def _wait4(pid: int, timeout: float) -> tuple[int, float] | None:
    """Exit code and CPU seconds (user + system, all threads) of a child; None on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        got, status, ru = os.wait4(pid, os.WNOHANG)
        if got == pid:
            return os.waitstatus_to_exitcode(status), ru.ru_utime + ru.ru_stime
        if time.monotonic() > deadline:
            return None
        time.sleep(0.02)


def run_benchmark(
    target: str,
    port: int,
    test: str,
    *,
    server_pids: list[tuple[str, int]],
    clients: int,
    requests: int,
    size: int,
    keys: int,
    timeout: float,
) -> dict[str, Any]:
    """One redis-benchmark process for one test, probed first; one row."""
    row: dict[str, Any] = {"target": target, "generator": "redis-benchmark", "test": test.upper()}
    refused = probe(port, test)
    if refused is not None:
        return {**row, "supported": False, "note": refused}
    argv = benchmark_argv(port, test, clients=clients, requests=requests, size=size, keys=keys)
    row["argv"] = argv
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        before = pids_cpu(server_pids)
        t0 = time.monotonic()
        p = subprocess.Popen(argv, stdout=out, stderr=err)
        done = _wait4(p.pid, timeout)
        wall = time.monotonic() - t0
        after = pids_cpu(server_pids)
        if done is None:
            p.kill()
            p.wait()
            return {**row, "supported": True, "error": f"no end after {timeout:.0f}s"}
        p.returncode, gen_cpu = done
        out.seek(0)
        err.seek(0)
        text, errtext = out.read().decode(), err.read().decode(errors="replace").strip()
    parsed, other = parse_csv(text)
    errors = [x for x in errtext.splitlines() if x.startswith("Error from server")]
    if p.returncode != 0 or not parsed or errors:
        last = (errors or (errtext or text).strip().splitlines()[-1:] or ["no output"])[0]
        return {**row, "supported": True, "error": f"exit {p.returncode}: {last}"}
    csvrow = parsed[0]
    rps = float(csvrow.get("rps", 0.0))
    srv = {k: after[k] - before[k] for k in before if k in after}
    row.update(
        supported=True,
        test=str(csvrow["test"]),
        requests=requests,
        ops_per_s=round(rps, 1),
        p50_ms=csvrow.get("p50_latency_ms"),
        p99_ms=csvrow.get("p99_latency_ms"),
        latency_ms={k: v for k, v in csvrow.items() if k.endswith("_latency_ms")},
        errors_seen=other,
        wall_s=round(wall, 3),
        **figures(ops=requests, elapsed_s=wall, gen_cpu_s=gen_cpu, srv_cpu_s=srv),
    )
    return row


def _configure(driver: Driver) -> None:
    driver.resp = True  # type: ignore[attr-defined]


def redis_version() -> str:
    try:
        return subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except OSError as e:
        return f"unavailable: {e}"


def _redis_server(workdir: Path, group: ProcessGroup) -> int:
    from rkv.procs import free_ports

    port = free_ports(1)[0]
    argv = [
        "redis-server",
        "--port", str(port),
        "--bind", HOST,
        "--appendonly", "yes",
        "--appendfsync", "always",
        "--save", "",
        "--dir", str(workdir),
        "--daemonize", "no",
    ]  # fmt: skip
    s = group.add(server("redis-server", argv, workdir / "redis-server.log"))
    s.start()
    if not wait_port(HOST, port, 30):
        raise RuntimeError(f"redis-server did not listen:\n{s.log_tail()}")
    return port


def resp(
    *,
    clients: int,
    requests: int,
    tests: list[str],
    size: int,
    keys: int,
    native: list[str],
    duration: float,
    warmup: float,
    timeout: float,
    seed: int,
    out_dir: Path,
    tmp_dir: Path | None,
) -> Path:
    if shutil.which("redis-benchmark") is None:
        raise SystemExit("redis-benchmark missing: run ./dev bench setup")
    if tmp_dir is not None:
        warn_if_tmpfs(tmp_dir)
    names = expand_tests(tests)
    out = out_dir / f"resp-{stamp()}.json"
    meta = {
        "host": host_info(tmp_dir or Path("/tmp")),
        "systems": {
            **series_meta(["rkv"]),
            "redis-server": {
                "version": redis_version(),
                "durability": "appendonly yes, appendfsync always: the AOF fsynced before the "
                "reply (one node, no replica)",
            },
        },
        "args": {
            "clients": clients,
            "requests": requests,
            "tests": names,
            "value_size": size,
            "keys": keys,
            "native": native,
            "native_duration_s": duration,
            "native_warmup_s": warmup,
            "seed": seed,
        },
    }
    rows: list[dict[str, Any]] = []
    points: list[dict[str, Any]] = []

    def save() -> None:
        write_json(out, envelope("resp", meta, rows=rows, native_points=points))

    def bench_all(target: str, port: int, pids: list[tuple[str, int]]) -> None:
        for t in names:
            try:
                r = run_benchmark(
                    target,
                    port,
                    t,
                    server_pids=pids,
                    clients=clients,
                    requests=requests,
                    size=size,
                    keys=keys,
                    timeout=timeout,
                )
            except Exception as e:  # one broken test must not lose the others
                r = {"target": target, "generator": "redis-benchmark", "test": t.upper()}
                r.update(supported=True, error=describe_error(e))
            rows.append(r)
            print(format_table([r]).splitlines()[-1], flush=True)
            save()

    with fresh_cluster("rkv", tmp_dir, configure=_configure) as driver:
        leader = trio.run(driver.leader)
        if leader is None:
            raise RuntimeError("no rkv leader")
        follower = (leader + 1) % len(driver.servers)
        pids = [(s.name, s.pid) for s in driver.servers]
        ports = driver.resp_ports  # type: ignore[attr-defined]
        meta["rkv_cluster"] = {"leader": leader, "follower": follower, "resp_ports": ports}
        bench_all("rkv leader", ports[leader], pids)
        bench_all("rkv follower", ports[follower], pids)
        for series in native:
            spec = {**driver.spec(), "config": series.partition(":")[2] or "default"}
            spec["generator"] = "raw" if spec["config"] == "raw" else "trio"
            for workload in ("put", "get"):
                try:
                    res = run_load(
                        spec,
                        server_pids=pids,
                        clients=clients,
                        procs=1,
                        workload=workload,
                        value_size=size,
                        keys=keys,
                        duration=duration,
                        warmup=warmup,
                        seed=seed,
                    )
                    p = load_point(
                        system="rkv",
                        config=spec["config"],
                        version=driver.version(),
                        workload=workload,
                        value_size=size,
                        clients=clients,
                        procs=1,
                        duration_s=duration,
                        run=1,
                        merged=res.merged,
                        server_cpu_s=res.server_cpu_s,
                        worker_cpu_s=[w.cpu_s for w in res.workers],
                        generator=spec["generator"],
                    )
                    points.append(p)
                    r = native_row(p, "rkv native")
                except Exception as e:
                    r = {"target": "rkv native", "generator": series, "test": workload.upper()}
                    r.update(supported=True, error=describe_error(e))
                rows.append(r)
                print(format_table([r]).splitlines()[-1], flush=True)
                save()

    workdir = Path(tempfile.mkdtemp(prefix="rkv-bench-redis-", dir=tmp_dir))
    group = ProcessGroup()
    try:
        port = _redis_server(workdir, group)
        pids = [(s.name, s.pid) for s in group.servers]
        bench_all("redis-server", port, pids)
    finally:
        group.close()
        shutil.rmtree(workdir, ignore_errors=True)
    print(format_table(rows))
    print(f"results: {out}")
    print(
        "note: ops = requests (an MSET request writes 10 keys); srv us/op sums the 3 rkv "
        "nodes' CPU; GEN-BOUND: the generator above "
        f"{GENERATOR_BOUND_CORES} of a core",
        file=sys.stderr,
    )
    return out
