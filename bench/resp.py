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
The pure parts (redis-benchmark's CSV, RESP probe bytes, per-op figures, the table) are at
the top and tested in tests/bench/test_bench_resp.py. Must not: measure the native client
itself (bench.loadgen does, as for `compare`).
"""

from __future__ import annotations

import csv
import io
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
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
from bench.stats import GENERATOR_BOUND_CORES, cores, load_point, per_op_us

HOST = "127.0.0.1"
DEFAULT_TESTS = ("ping", "set", "get", "incr", "mset")
EXPANDS = {"ping": ("ping_inline", "ping_mbulk")}
"""`-t ping` is two tests in redis-benchmark; each gets its own process here."""

# -- pure: redis-benchmark's tests, CSV, probes, figures, table --------------------------------

_PROBE_KEY = b"bench:resp:probe"
PROBES: dict[str, list[bytes]] = {
    "ping_inline": [b"PING"],
    "ping_mbulk": [b"PING"],
    "set": [b"SET", _PROBE_KEY, b"xxx"],
    "get": [b"GET", _PROBE_KEY],
    "incr": [b"INCR", _PROBE_KEY + b":counter"],
    "mset": [b"MSET", _PROBE_KEY, b"xxx"],
}
"""One command per test, like the test's own, sent once before it: an error reply marks the
test not supported on that server."""


def expand_tests(tests: Sequence[str]) -> list[str]:
    """redis-benchmark test names, one per process: "ping" is ping_inline and ping_mbulk."""
    out: list[str] = []
    for t in tests:
        for x in EXPANDS.get(t.lower(), (t.lower(),)):
            if x not in PROBES:
                raise ValueError(f"unknown test {t!r} (have {', '.join(DEFAULT_TESTS)})")
            if x not in out:
                out.append(x)
    return out


def benchmark_argv(
    port: int, test: str, *, clients: int, requests: int, size: int, keys: int
) -> list[str]:
    """One redis-benchmark run of one test, quiet, CSV. (No -e: redis-benchmark 7 stops at the
    first error reply anyway, printing "Error from server: ..." on stderr, and warns on -e.)"""
    argv = ["redis-benchmark", "-h", HOST, "-p", str(port), "-t", test]
    argv += ["-c", str(clients), "-n", str(requests), "-d", str(size), "-q", "--csv"]
    if keys > 1:
        argv += ["-r", str(keys)]
    return argv


def parse_csv(text: str) -> tuple[list[dict[str, Any]], int]:
    """redis-benchmark `--csv` output: its rows ({"test", "rps", "p50_latency_ms", ...} as
    floats) and the number of lines that are not CSV (warnings, "Error from server: ...")."""
    rows: list[dict[str, Any]] = []
    other = 0
    header: list[str] | None = None
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line.startswith('"'):
            other += 1
            continue
        fields = next(csv.reader(io.StringIO(line)))
        if header is None and fields and fields[0] == "test":
            header = fields
            continue
        if header is None or len(fields) != len(header):
            other += 1
            continue
        row: dict[str, Any] = {"test": fields[0]}
        for k, v in zip(header[1:], fields[1:], strict=True):
            try:
                row[k] = float(v)
            except ValueError:
                row[k] = v
        rows.append(row)
    return rows, other


def encode_command(args: Sequence[bytes]) -> bytes:
    """A RESP array of bulk strings (what a client sends)."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def reply_error(first_line: bytes) -> str | None:
    """The error text of a reply's first line ("-ERR ..." or RESP3 "!"), None when not one."""
    if first_line.startswith(b"-"):
        return first_line[1:].decode("utf-8", "replace").strip()
    if first_line.startswith(b"!"):
        return "(blob error)"
    return None


def figures(
    *, ops: int, elapsed_s: float, gen_cpu_s: float, srv_cpu_s: Mapping[str, float]
) -> dict[str, Any]:
    """The CPU side of a row: generator and servers (summed over nodes), per op and in cores."""
    srv = sum(srv_cpu_s.values()) if srv_cpu_s else math.nan
    gen_cores = cores(gen_cpu_s, elapsed_s)
    return {
        "gen_cpu_s": round(gen_cpu_s, 4) if math.isfinite(gen_cpu_s) else None,
        "srv_cpu_s": {k: round(v, 4) for k, v in sorted(srv_cpu_s.items())},
        "gen_us_per_op": per_op_us(gen_cpu_s, ops),
        "srv_us_per_op": per_op_us(srv, ops),
        "gen_cores": gen_cores,
        "srv_cores": cores(srv, elapsed_s),
        "generator_bound": gen_cores is not None and gen_cores > GENERATOR_BOUND_CORES,
    }


def _f(v: Any, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The printed table: one line per target x test; unsupported tests say so and why."""
    head = (
        f"{'target':13s} {'generator':16s} {'test':14s} {'ops/s':>9s} {'p50 ms':>7s} "
        f"{'p99 ms':>7s} {'gen us/op':>9s} {'srv us/op':>9s} {'gen cores':>9s}  note"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        left = f"{r['target']:13s} {r['generator']:16s} {r['test']:14s} "
        if not r.get("supported", True):
            lines.append(left + f"not supported: {r.get('note', '')}")
            continue
        if r.get("error"):
            lines.append(left + f"{'FAILED':>9s}  {r['error']}")
            continue
        note = []
        if r.get("generator_bound"):
            note.append("GEN-BOUND")
        if r.get("errors_seen"):
            note.append(f"errors: {r['errors_seen']}")
        if r.get("note"):
            note.append(r["note"])
        lines.append(
            left
            + f"{_f(r.get('ops_per_s'), '9.0f')} {_f(r.get('p50_ms'), '7.3f')} "
            + f"{_f(r.get('p99_ms'), '7.3f')} {_f(r.get('gen_us_per_op'), '9.1f')} "
            + f"{_f(r.get('srv_us_per_op'), '9.1f')} {_f(r.get('gen_cores'), '9.2f')}  "
            + "; ".join(note)
        )
    return "\n".join(lines)


# -- measuring ---------------------------------------------------------------------------------


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


def native_row(point: Mapping[str, Any], target: str) -> dict[str, Any]:
    """A table row from a `load` point of bench.stats (rkv's native client)."""
    lat = point["latency_ms"]
    per, cc = point["cpu_us_per_op"], point["cpu_cores"]
    label = (
        point["system"] if point["config"] == "default" else f"{point['system']}:{point['config']}"
    )
    return {
        "target": target,
        "generator": label,
        "test": point["workload"].upper(),
        "supported": True,
        "requests": point["ops"],
        "ops_per_s": point["ops_per_s"],
        "p50_ms": lat.get("p50"),
        "p99_ms": lat.get("p99"),
        "errors_seen": point["errors"],
        "gen_us_per_op": per["generator"],
        "srv_us_per_op": per["servers"],
        "gen_cores": cc["generator"],
        "srv_cores": cc["servers"],
        "generator_bound": point["generator_bound"],
    }


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
