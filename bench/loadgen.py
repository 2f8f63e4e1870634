"""The closed-loop load generator: worker processes and the code that runs and merges them.

Owns: one worker process (`python -m bench worker ...`, a trio program with N clients, each
with exactly one outstanding request, through the driver's KV client; or, when the driver's
spec asks for the raw generator, bench/rawgen.py's asyncio program on the same terms), the key/value/op choice of each workload, the
measurement window (ops that start and finish inside it count; warmup ops do not), the
worker's own CPU seconds over the window, and `run_load`, which starts --procs workers on a
common start time, samples the servers' CPU over the same window and merges the histograms.
Must not start or stop servers (drivers do) and must not decide what to compare (compare.py).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import trio

from bench.drivers import driver_class
from bench.procs import pids_cpu
from bench.stats import Histogram, WorkerResult, merge_workers

WORKLOADS = ("put", "get", "mixed")
REQUEST_TIMEOUT = 10.0
ERROR_BACKOFF = 0.01
STALL_S = 1.0
"""A request unanswered at the window's end after this long counts as stalled."""
SWEEP_S = 0.5
"""How often the worker looks for requests older than REQUEST_TIMEOUT (and cancels them)."""


def key_of(i: int) -> bytes:
    return b"bench/%09d" % i


@dataclass(slots=True)
class WorkerArgs:
    spec: dict[str, Any]
    clients: int
    client_offset: int
    workload: str
    value_size: int
    keys: int
    duration: float
    warmup: float
    start_at: float
    seed: int
    read_ratio: float = 0.5
    fill_total: int = 0
    """When > 0: write keys [fill_offset, fill_offset + fill_total) once each, then stop.
    Key numbers wrap at `keys`, so fill_total > keys overwrites the same keys in turn."""
    fill_offset: int = 0
    fill_timeout: float = 3600.0
    """A fill that takes longer fails (a stalled system must not hang the whole plan)."""

    def to_argv(self) -> list[str]:
        return [sys.executable, "-m", "bench", "worker", "--args", json.dumps(asdict(self))]


def split(total: int, parts: int) -> list[int]:
    """Split `total` into `parts` near-equal non-negative shares (larger first)."""
    if parts <= 0:
        raise ValueError("parts must be positive")
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


class _Window:
    def __init__(self, start: float, end: float) -> None:
        self.start = start
        self.end = end
        self.hist = Histogram()
        self.ops = 0
        self.errors = 0
        self.kinds: dict[str, int] = {}

    def ok(self, t0: float, t1: float) -> None:
        if t0 >= self.start and t1 <= self.end:
            self.ops += 1
            self.hist.record(round((t1 - t0) * 1e6))

    def fail(self, t0: float, exc: BaseException) -> None:
        if self.start <= t0 <= self.end:
            self.errors += 1
            name = type(exc).__name__
            self.kinds[name] = self.kinds.get(name, 0) + 1


async def _worker_main(a: WorkerArgs) -> WorkerResult:
    cls = driver_class(a.spec["system"])
    if a.spec.get("one_client"):
        # bench/clientcpu.py: every closed-loop task shares one client object (its cost
        # per op with N concurrent callers), instead of a client of its own each.
        opened = [await cls.connect(a.spec, a.client_offset)]
        clients = opened * a.clients
    else:
        opened = clients = [
            await cls.connect(a.spec, a.client_offset + j) for j in range(a.clients)
        ]
    try:
        if a.fill_total > 0:
            return await _fill(a, clients)
        return await _closed_loop(a, clients)
    finally:
        # Reverse order: a client may hold a nursery opened in this task (rkv's does).
        for c in reversed(opened):
            # Closing a broken client must not hide the result.
            with contextlib.suppress(Exception):
                await c.aclose()


def _wall_to_trio(wall: float) -> float:
    """Map a time.time() instant onto trio's clock (workers share wall time, not trio's)."""
    return trio.current_time() + (wall - time.time())


async def _closed_loop(a: WorkerArgs, clients: list[Any]) -> WorkerResult:
    t_start = _wall_to_trio(a.start_at)
    win = _Window(t_start + a.warmup, t_start + a.warmup + a.duration)
    cpu: dict[str, float] = {}
    pending: dict[int, float] = {}  # client -> start of its unanswered request
    stalled = {"n": 0}

    async def sample_cpu() -> None:
        await trio.sleep_until(win.start)
        cpu["start"] = time.process_time()
        await trio.sleep_until(win.end)
        cpu["end"] = time.process_time()
        stalled["n"] = sum(1 for t in pending.values() if t < win.end - STALL_S)

    async def put(c: Any, rng: random.Random, value: bytes) -> None:
        await c.put(key_of(rng.randrange(a.keys)), value)

    async def get(c: Any, rng: random.Random, value: bytes) -> None:
        await c.get(key_of(rng.randrange(a.keys)))

    async def mixed(c: Any, rng: random.Random, value: bytes) -> None:
        if rng.random() < a.read_ratio:
            await get(c, rng, value)
        else:
            await put(c, rng, value)

    op = {"put": put, "get": get, "mixed": mixed}[a.workload]

    scopes: dict[int, trio.CancelScope] = {}

    async def sweep() -> None:
        """Cancels requests unanswered after REQUEST_TIMEOUT: one task looking every SWEEP_S
        instead of a cancel scope per request (which costs more CPU than the client's work
        for a small request, and would be counted as the client's)."""
        while True:
            await trio.sleep(SWEEP_S)
            now = trio.current_time()
            for j, t0 in list(pending.items()):
                if now - t0 >= REQUEST_TIMEOUT:
                    scopes[j].cancel()

    async def requests(j: int, c: Any, rng: random.Random, value: bytes) -> None:
        while True:
            t0 = trio.current_time()
            if t0 >= win.end:
                return
            pending[j] = t0
            try:
                await op(c, rng, value)
            except Exception as e:  # counted, then the client carries on like a real one
                del pending[j]
                win.fail(t0, e)
                await trio.sleep(ERROR_BACKOFF)
                continue
            del pending[j]
            win.ok(t0, trio.current_time())

    async def client_loop(j: int, c: Any) -> None:
        rng = random.Random(a.seed * 1_000_003 + a.client_offset + j)
        value = rng.randbytes(a.value_size)
        await trio.sleep_until(t_start)
        while True:
            with trio.CancelScope() as scopes[j]:
                await requests(j, c, rng, value)
                return
            # The sweep cancelled a request past REQUEST_TIMEOUT: an error, then carry on.
            t0 = pending.pop(j, None)
            if t0 is not None:  # (else the cancel came after the answer: nothing was lost)
                win.fail(t0, trio.TooSlowError())
            await trio.sleep(ERROR_BACKOFF)

    async with trio.open_nursery() as outer:
        outer.start_soon(sweep)
        async with trio.open_nursery() as n:
            n.start_soon(sample_cpu)
            for j, c in enumerate(clients):
                n.start_soon(client_loop, j, c)
        outer.cancel_scope.cancel()
    return WorkerResult(
        ops=win.ops,
        errors=win.errors,
        elapsed_s=win.end - win.start,
        cpu_s=cpu.get("end", math.nan) - cpu.get("start", math.nan),
        hist=win.hist,
        error_kinds=win.kinds,
        stalled_at_end=stalled["n"],
    )


async def _fill(a: WorkerArgs, clients: list[Any]) -> WorkerResult:
    """Write each key of this worker's share once (retrying failures), timing every put."""
    t_start = _wall_to_trio(a.start_at)
    hist = Histogram()
    state = {"next": a.fill_offset, "errors": 0}
    end_key = a.fill_offset + a.fill_total
    kinds: dict[str, int] = {}

    async def client_loop(j: int, c: Any) -> None:
        rng = random.Random(a.seed * 1_000_003 + a.client_offset + j)
        value = rng.randbytes(a.value_size)
        while state["next"] < end_key:
            i = state["next"]
            state["next"] += 1
            for attempt in range(50):
                t0 = trio.current_time()
                try:
                    with trio.fail_after(REQUEST_TIMEOUT):
                        await c.put(key_of(i % a.keys if a.keys > 0 else i), value)
                except Exception as e:  # retried: a fill must write every key
                    state["errors"] += 1
                    kinds[type(e).__name__] = kinds.get(type(e).__name__, 0) + 1
                    await trio.sleep(min(1.0, ERROR_BACKOFF * 2**attempt))
                    continue
                hist.record(round((trio.current_time() - t0) * 1e6))
                break
            else:
                raise RuntimeError(f"key {i} could not be written after 50 attempts")

    await trio.sleep_until(t_start)
    cpu0 = time.process_time()
    t0 = trio.current_time()
    try:
        with trio.fail_after(a.fill_timeout):
            async with trio.open_nursery() as n:
                for j, c in enumerate(clients):
                    n.start_soon(client_loop, j, c)
    except trio.TooSlowError:
        raise RuntimeError(
            f"fill not done after {a.fill_timeout:.0f}s ({hist.count} of {a.fill_total} keys)"
        ) from None
    return WorkerResult(
        ops=hist.count,
        errors=state["errors"],
        elapsed_s=trio.current_time() - t0,
        cpu_s=time.process_time() - cpu0,
        hist=hist,
        error_kinds=kinds,
    )


def worker_entry(args_json: str) -> None:
    a = WorkerArgs(**json.loads(args_json))
    if a.spec.get("generator") == "raw":
        from bench.rawgen import run_worker

        result = run_worker(a)
    else:
        result = trio.run(_worker_main, a)
    sys.stdout.write(json.dumps(result.to_json()) + "\n")
    sys.stdout.flush()


@dataclass(slots=True)
class LoadResult:
    merged: WorkerResult
    workers: list[WorkerResult]
    server_cpu_s: dict[str, float]


def run_fill(
    spec: dict[str, Any],
    *,
    server_pids: list[tuple[str, int]],
    clients: int,
    procs: int,
    value_size: int,
    keys: int,
    total: int,
    seed: int,
    timeout: float,
) -> LoadResult:
    """Exactly `total` puts over keys 0..keys-1 (wrapping, so total > keys overwrites), as
    fast as `clients` closed-loop clients go: the fill of scale, disk and snapinstall, and the
    prefill of compare's read workloads."""
    return run_load(
        spec,
        server_pids=server_pids,
        clients=clients,
        procs=procs,
        workload="put",
        value_size=value_size,
        keys=keys,
        duration=0,
        warmup=0,
        seed=seed,
        fill_total=total,
        fill_timeout=timeout,
    )


def run_prefill(
    spec: dict[str, Any],
    *,
    server_pids: list[tuple[str, int]],
    value_size: int,
    keys: int,
    seed: int,
    timeout: float,
) -> LoadResult:
    """Every key of the key space written once by 16 clients (fewer for fewer keys): what a
    read workload finds (compare's and client-cpu's prefill)."""
    return run_fill(
        spec,
        server_pids=server_pids,
        clients=min(16, keys),
        procs=1,
        value_size=value_size,
        keys=keys,
        total=keys,
        seed=seed,
        timeout=timeout,
    )


def run_load(
    spec: dict[str, Any],
    *,
    server_pids: list[tuple[str, int]],
    clients: int,
    procs: int,
    workload: str,
    value_size: int,
    keys: int,
    duration: float,
    warmup: float,
    seed: int,
    read_ratio: float = 0.5,
    fill_total: int = 0,
    fill_timeout: float = 3600.0,
    spawn_delay: float = 2.0,
) -> LoadResult:
    """Run `procs` worker processes sharing `clients` and return their merged result."""
    if workload not in WORKLOADS:
        raise ValueError(f"workload must be one of {WORKLOADS}")
    procs = max(1, min(procs, clients))
    shares = split(clients, procs)
    fills = split(fill_total, procs) if fill_total else [0] * procs
    start_at = time.time() + spawn_delay + 0.2 * procs
    running: list[tuple[subprocess.Popen[bytes], Any, Any]] = []
    offset = fill_offset = 0
    with tempfile.TemporaryDirectory(prefix="rkv-bench-gen-") as tmp:
        for w in range(procs):
            args = WorkerArgs(
                spec=spec,
                clients=shares[w],
                client_offset=offset,
                workload=workload,
                value_size=value_size,
                keys=keys,
                duration=duration,
                warmup=warmup,
                start_at=start_at,
                seed=seed,
                read_ratio=read_ratio,
                fill_total=fills[w],
                fill_offset=fill_offset,
                fill_timeout=fill_timeout,
            )
            offset += shares[w]
            fill_offset += fills[w]
            out = open(Path(tmp) / f"w{w}.json", "w+b")  # noqa: SIM115 - closed below
            err = open(Path(tmp) / f"w{w}.err", "w+b")  # noqa: SIM115 - closed below
            p = subprocess.Popen(args.to_argv(), stdout=out, stderr=err, cwd=_repo_root())
            running.append((p, out, err))
        cpu: dict[str, float] = {}
        try:
            if not fill_total:
                _sleep_until_wall(start_at + warmup)
                before = pids_cpu(server_pids)
                _sleep_until_wall(start_at + warmup + duration)
                after = pids_cpu(server_pids)
                cpu = {k: after[k] - before[k] for k in before if k in after}
            else:
                before = pids_cpu(server_pids)
            results: list[WorkerResult] = []
            limit = (
                spawn_delay
                + warmup
                + duration
                + REQUEST_TIMEOUT
                + 60
                + (fill_timeout if fill_total else 0)
            )
            for p, out, err in running:
                rc = p.wait(timeout=limit)
                out.seek(0)
                text = out.read().decode()
                if rc != 0 or not text.strip():
                    err.seek(0)
                    lines = err.read().decode(errors="replace").strip().splitlines()
                    last = lines[-1] if lines else "no output"
                    raise RuntimeError(f"load generator worker failed (exit {rc}): {last}")
                results.append(WorkerResult.from_json(json.loads(text.strip().splitlines()[-1])))
            if fill_total:
                after = pids_cpu(server_pids)
                cpu = {k: after[k] - before[k] for k in before if k in after}
        finally:
            for p, out, err in running:
                if p.poll() is None:
                    p.kill()
                    p.wait()
                out.close()
                err.close()
    return LoadResult(merged=merge_workers(results), workers=results, server_cpu_s=cpu)


def _sleep_until_wall(t: float) -> None:
    delay = t - time.time()
    if delay > 0:
        time.sleep(delay)


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


def default_procs() -> int:
    return max(1, min(4, (os.cpu_count() or 1)))
