"""`bench floor`: what the machine itself charges for the parts of a replicated put.

Owns: timing, on this disk and this kernel, (1) a durable LMDB commit of one small put the way
rkv's store makes one (rkv/store/lmdb_base.py: sync=True, metasync=False, then env.sync(True): data
flush + meta flush) and with one flush only (the commit without the extra sync), each with one
writer and with three writers at once in separate processes, each on an environment of its
own, running free and in lockstep (every operation starts when all three are ready, as three
nodes commit the same entry); (2) a 4 KiB append + fdatasync to a file, the same ways; (3) a loopback TCP round
trip of a small frame between two processes (blocking sockets, TCP_NODELAY). Every figure is a
measurement of the same run; the derived floor of a replicated put is labelled as derived.
Must not start any cluster: it measures what lies beneath all of them.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import shutil
import socket
import struct
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.common import envelope, host_info, stamp, warn_if_tmpfs, write_json
from bench.stats import Histogram

FRAME = 64
"""Bytes of one ping (and of its pong): a small client frame."""
APPEND = 4096
VALUE = 100
KINDS = ("lmdb", "lmdb-1flush", "append")
TITLES = {
    "lmdb": "LMDB durable commit of one 100 B put (rkv's: commit + env.sync = 2 flushes)",
    "lmdb-1flush": "LMDB commit of one 100 B put, one flush (metasync off, no env.sync)",
    "append": "4 KiB append + fdatasync",
    "rtt": f"loopback TCP round trip, {FRAME} B frame each way, two processes",
}


# -- pure: summaries and the table -----------------------------------------------------------


def summarize_samples(samples_us: Sequence[Sequence[float]], wall_s: float) -> dict[str, Any]:
    """One row from each writer's latencies (microseconds): percentiles over all of them
    together, and the operations per second all writers made together over `wall_s`."""
    h = Histogram()
    n = 0
    for one in samples_us:
        for v in one:
            h.record(round(v))
            n += 1
    return {
        "n": n,
        "writers": len(samples_us),
        "latency_ms": h.summary_ms(),
        "ops_per_s": round(n / wall_s, 1) if wall_s > 0 and n else None,
    }


def derived_floor(results: Mapping[str, Mapping[str, Any]]) -> dict[str, Any] | None:
    """The floor of one replicated put at one client, from this run's figures: the three
    nodes' durable commits of the entry run at once on the same disk (the lockstep
    three-writer LMDB p50), plus two loopback round trips (client to leader, leader to
    follower)."""
    try:
        commit = results["lmdb x3 lockstep"]["latency_ms"]["p50"]
        rtt = results["rtt"]["latency_ms"]["p50"]
    except KeyError:
        return None
    if commit is None or rtt is None:
        return None
    return {
        "p50_ms": round(commit + 2 * rtt, 4),
        "formula": "lmdb x3 lockstep p50 + 2 x rtt p50",
    }


def format_floor_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    head = (
        f"{'what':24s} {'writers':>7s} {'n':>6s} {'p50 ms':>8s} {'p90 ms':>8s} {'p99 ms':>8s} "
        f"{'mean ms':>8s} {'max ms':>8s} {'ops/s':>9s}"
    )
    lines = [head, "-" * len(head)]

    def num(v: float | None, fmt: str) -> str:
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)

    for name, r in results.items():
        lat = r["latency_ms"]
        lines.append(
            f"{name:24s} {r['writers']:>7d} {r['n']:>6d} {num(lat['p50'], '8.3f')} "
            f"{num(lat['p90'], '8.3f')} {num(lat['p99'], '8.3f')} {num(lat['mean'], '8.3f')} "
            f"{num(lat['max'], '8.3f')} {num(r['ops_per_s'], '9.1f')}"
        )
    return "\n".join(lines)


# -- the measurements (each in processes of its own) ------------------------------------------


def _disk_worker(
    kind: str, path: str, n: int, warmup: int, start_at: float, q: Any, barrier: Any
) -> None:
    try:
        q.put(_disk_samples(kind, Path(path), n, warmup, start_at, barrier))
    except BaseException as e:
        q.put(f"{type(e).__name__}: {e}")


def _disk_samples(
    kind: str, path: Path, n: int, warmup: int, start_at: float, barrier: Any = None
) -> list[float]:
    """`barrier`: when given, every timed operation starts when all writers reach it (the
    lockstep of three nodes committing the same entry); its wait is not timed."""
    value = os.urandom(VALUE)
    out: list[float] = []
    clock = time.perf_counter
    if kind == "append":
        block = os.urandom(APPEND)
        fd = os.open(path / "append.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            for _ in range(warmup):
                os.write(fd, block)
                os.fdatasync(fd)
            _sleep_until(start_at)
            for _ in range(n):
                if barrier is not None:
                    barrier.wait()
                t0 = clock()
                os.write(fd, block)
                os.fdatasync(fd)
                out.append((clock() - t0) * 1e6)
        finally:
            os.close(fd)
        return out
    import lmdb

    # rkv/store/lmdb_base.py's options; the commit is then followed by env.sync(True) for "lmdb".
    env = lmdb.open(
        str(path / "env"),
        map_size=1 << 30,
        subdir=True,
        max_dbs=12,
        sync=True,
        metasync=False,
        writemap=False,
        map_async=False,
        readahead=False,
        lock=True,
    )
    two = kind == "lmdb"
    try:
        for i in range(warmup + n):
            if i == warmup:
                _sleep_until(start_at)
            if barrier is not None and i >= warmup:
                barrier.wait()
            t0 = clock()
            with env.begin(write=True) as txn:
                txn.put(b"floor/%09d" % i, value)
            if two:
                env.sync(True)
            if i >= warmup:
                out.append((clock() - t0) * 1e6)
    finally:
        env.close()
    return out


def _run_disk(
    kind: str, writers: int, n: int, warmup: int, base: Path, lockstep: bool = False
) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    barrier = ctx.Barrier(writers) if lockstep else None
    start_at = time.time() + 1.5 + 0.3 * writers  # after every spawn has imported
    dirs = []
    procs = []
    for w in range(writers):
        d = Path(tempfile.mkdtemp(prefix=f"floor-{kind}-{w}-", dir=base))
        dirs.append(d)
        p = ctx.Process(target=_disk_worker, args=(kind, str(d), n, warmup, start_at, q, barrier))
        p.start()
        procs.append(p)
    try:
        got = [q.get(timeout=600) for _ in procs]
        wall = time.time() - start_at
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)
    errors = [g for g in got if isinstance(g, str)]
    if errors:
        raise RuntimeError(f"{kind} writer failed: {errors[0]}")
    return summarize_samples(got, wall)


def _pong(port_q: Any) -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port_q.put(srv.getsockname()[1])
    conn, _ = srv.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with conn, srv:
        while True:
            frame = _recv_exact(conn, FRAME)
            if frame is None:
                return
            conn.sendall(frame)


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _run_rtt(n: int, warmup: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_pong, args=(q,))
    p.start()
    try:
        port = q.get(timeout=60)
        frame = struct.pack(">I", FRAME - 4) + os.urandom(FRAME - 4)
        samples: list[float] = []
        clock = time.perf_counter
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            t_start = clock()
            for i in range(warmup + n):
                t0 = clock()
                s.sendall(frame)
                if _recv_exact(s, FRAME) is None:
                    raise RuntimeError("the pong process closed the connection")
                if i >= warmup:
                    samples.append((clock() - t0) * 1e6)
                elif i == warmup - 1:
                    t_start = clock()
            wall = clock() - t_start
    finally:
        p.join(timeout=10)
        if p.is_alive():
            p.kill()
    return summarize_samples([samples], wall)


def _sleep_until(t: float) -> None:
    delay = t - time.time()
    if delay > 0:
        time.sleep(delay)


def floor(
    *,
    samples: int,
    round_trips: int,
    warmup: int,
    out_dir: Path,
    tmp_dir: Path | None,
) -> Path:
    base = tmp_dir or Path(tempfile.gettempdir())
    warn_if_tmpfs(base)
    name = f"floor-{stamp()}"
    out = out_dir / f"{name}.json"
    meta = {
        "host": host_info(base),
        "args": {
            "samples": samples,
            "round_trips": round_trips,
            "warmup": warmup,
            "tmp_dir": str(base),
        },
        "what": TITLES,
    }
    results: dict[str, dict[str, Any]] = {}
    for kind in KINDS:
        for writers, lockstep in ((1, False), (3, False), (3, True)):
            label = kind if writers == 1 else f"{kind} x{writers}"
            label += " lockstep" if lockstep else ""
            r = _run_disk(kind, writers, samples, warmup, base, lockstep)
            results[label] = {"kind": kind, "lockstep": lockstep, **r}
            print(_row(label, results[label]), flush=True)
    results["rtt"] = {"kind": "rtt", **_run_rtt(round_trips, warmup)}
    print(_row("rtt", results["rtt"]), flush=True)
    derived = derived_floor(results)
    write_json(out, envelope("floor", meta, results=results, derived=derived))
    print()
    for k, t in TITLES.items():
        print(f"{k:24s} {t}")
    print()
    print(format_floor_table(results))
    if derived is not None:
        print(
            f"\nderived floor of a replicated put at 1 client: {derived['p50_ms']} ms "
            f"({derived['formula']})"
        )
    print(f"results: {out}")
    return out


def _row(label: str, r: Mapping[str, Any]) -> str:
    lat = r["latency_ms"]
    return f"{label:24s} writers={r['writers']} n={r['n']} p50={lat['p50']} p99={lat['p99']} ms"
