"""The lease-churn benchmark's generator process (`python -m bench lease-worker --args JSON`).

Owns: one generator process of bench.leasechurn, a trio program with rkv's own client, in
one of two modes: `churn` (N closed-loop clients, each looping grant(ttl) -> put a key with
the lease -> keepalive -> revoke, each operation and each whole cycle timed) or `keep` (grant
a share of the many live leases, then renew each every ttl/3, paced evenly, at most
`KEEP_IN_FLIGHT` at once, each keepalive timed). The handshake with the parent: the process
prints `ready` once connected (churn) or once its leases are granted (keep), reads the
measurement window's start (wall time) from stdin, and prints its JSON result after the
window: histograms, counts, errors, its own CPU seconds over the window. Must not start
servers or decide the window (the parent does), or summarize (bench.leasechurn, bench.stats).
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import trio

from bench.stats import Histogram

OPS = ("grant", "put", "keepalive", "revoke")
REQUEST_TIMEOUT = 10.0
ERROR_BACKOFF = 0.01
GRANT_IN_FLIGHT = 32
"""Grants at once while a keep process takes its leases."""
KEEP_IN_FLIGHT = 64
"""Keepalives at once in a keep process (past it, renewals fall behind their schedule)."""


def key_of(mode: str, client: int, n: int) -> bytes:
    return f"lc/{mode}/{client:05d}/{n:09d}".encode()


@dataclass(slots=True)
class GenArgs:
    addrs: list[str]
    mode: str
    """"churn" or "keep"."""
    clients: int
    client_offset: int
    ttl: float
    duration: float
    leases: int = 0
    """keep: how many leases this process grants and keeps alive."""

    def to_argv(self) -> list[str]:
        return [sys.executable, "-m", "bench", "lease-worker", "--args", json.dumps(asdict(self))]


@dataclass(slots=True)
class GenResult:
    hists: dict[str, Histogram]
    """Per operation (OPS, and "cycle" in churn mode; "keepalive" in keep mode)."""
    cycles: int = 0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    lost: int = 0
    """keep: leases a keepalive found gone (LeaseNotFound): the promise broken, or overload."""
    behind_s: float = 0.0
    """keep: how late the latest renewal started compared with its schedule."""
    elapsed_s: float = 0.0
    cpu_s: float = math.nan

    def to_json(self) -> dict[str, Any]:
        return {
            "hists": {k: h.to_json() for k, h in self.hists.items()},
            "cycles": self.cycles,
            "errors": self.errors,
            "error_kinds": self.error_kinds,
            "lost": self.lost,
            "behind_s": self.behind_s,
            "elapsed_s": self.elapsed_s,
            "cpu_s": self.cpu_s,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> GenResult:
        return cls(
            hists={k: Histogram.from_json(v) for k, v in d["hists"].items()},
            cycles=int(d["cycles"]),
            errors=int(d["errors"]),
            error_kinds={str(k): int(v) for k, v in d["error_kinds"].items()},
            lost=int(d["lost"]),
            behind_s=float(d["behind_s"]),
            elapsed_s=float(d["elapsed_s"]),
            cpu_s=float(d["cpu_s"]),
        )


class _Window:
    """Operations that start and finish inside [start, end) count; failures starting in it
    count as errors."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.start = math.inf
        self.end = math.inf
        self.hists = {n: Histogram() for n in names}
        self.errors = 0
        self.kinds: dict[str, int] = {}

    def ok(self, name: str, t0: float, t1: float) -> bool:
        if self.start <= t0 and t1 < self.end:
            self.hists[name].record(round((t1 - t0) * 1e6))
            return True
        return False

    def fail(self, t0: float, exc: BaseException) -> None:
        if self.start <= t0 < self.end:
            self.errors += 1
            self.kinds[type(exc).__name__] = self.kinds.get(type(exc).__name__, 0) + 1


async def _window_from_parent(win: _Window, duration: float) -> float:
    """Say ready, then wait for the window's start (wall time) on stdin; returns the CPU
    reading at the window's start once it came."""
    print("ready", flush=True)
    line = await trio.to_thread.run_sync(sys.stdin.readline)
    wall = float(line)
    win.start = trio.current_time() + (wall - time.time())
    win.end = win.start + duration
    await trio.sleep_until(win.start)
    return time.process_time()


async def _churn(a: GenArgs, client: Any) -> GenResult:
    import rkv

    win = _Window((*OPS, "cycle"))
    out = GenResult(win.hists)

    async def loop(j: int) -> None:
        n = 0
        while trio.current_time() < win.end:
            key = key_of("churn", a.client_offset + j, n)
            n += 1
            c0 = trio.current_time()
            t0 = c0
            try:
                with trio.fail_after(REQUEST_TIMEOUT):
                    lease = await client.lease_grant(a.ttl)
                    t1 = trio.current_time()
                    win.ok("grant", t0, t1)
                    t0 = t1
                    await client.put(key, b"v", lease=lease.id)
                    t1 = trio.current_time()
                    win.ok("put", t0, t1)
                    t0 = t1
                    await client.lease_keepalive(lease.id)
                    t1 = trio.current_time()
                    win.ok("keepalive", t0, t1)
                    t0 = t1
                    await client.lease_revoke(lease.id)
                    t1 = trio.current_time()
                    win.ok("revoke", t0, t1)
            except (rkv.RkvError, trio.TooSlowError) as e:  # counted; the client goes on
                win.fail(t0, e)
                await trio.sleep(ERROR_BACKOFF)
                continue
            if win.ok("cycle", c0, t1):
                out.cycles += 1

    async with trio.open_nursery() as nursery:
        for j in range(a.clients):
            nursery.start_soon(loop, j)
        cpu0 = await _window_from_parent(win, a.duration)
        await trio.sleep_until(win.end)
        out.cpu_s = time.process_time() - cpu0
    out.elapsed_s = a.duration
    out.errors, out.error_kinds = win.errors, win.kinds
    return out


async def _keep(a: GenArgs, client: Any) -> GenResult:
    import rkv

    win = _Window(("keepalive",))
    out = GenResult(win.hists)
    ids: list[int] = []
    gate = trio.Semaphore(GRANT_IN_FLIGHT)

    async def grant() -> None:
        async with gate:
            ids.append((await client.lease_grant(a.ttl)).id)

    async with trio.open_nursery() as nursery:
        for _ in range(a.leases):
            await gate.acquire()  # bounded: no task per lease waiting
            gate.release()
            nursery.start_soon(grant)
    period = a.ttl / 3
    slots = trio.Semaphore(KEEP_IN_FLIGHT)
    gone: set[int] = set()

    async def renew(lid: int) -> None:
        t0 = trio.current_time()
        try:
            with trio.fail_after(REQUEST_TIMEOUT):
                await client.lease_keepalive(lid)
            win.ok("keepalive", t0, trio.current_time())
        except rkv.LeaseNotFound as e:
            gone.add(lid)
            win.fail(t0, e)
        except (rkv.RkvError, trio.TooSlowError) as e:
            win.fail(t0, e)
        finally:
            slots.release()

    async def keeper(nursery: trio.Nursery) -> None:
        t0 = trio.current_time()
        i = 0
        while True:
            for lid in ids:
                due = t0 + i * period / max(1, len(ids))
                i += 1
                await trio.sleep_until(due)
                if trio.current_time() >= win.end:
                    return
                await slots.acquire()
                out.behind_s = max(out.behind_s, trio.current_time() - due)
                if lid not in gone:
                    nursery.start_soon(renew, lid)
                else:
                    slots.release()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(keeper, nursery)
        cpu0 = await _window_from_parent(win, a.duration)
        await trio.sleep_until(win.end)
        out.cpu_s = time.process_time() - cpu0
    out.elapsed_s = a.duration
    out.errors, out.error_kinds, out.lost = win.errors, win.kinds, len(gone)
    return out


async def _main(a: GenArgs) -> GenResult:
    import rkv

    async with rkv.connect(a.addrs, timeout=30) as client:
        if a.mode == "churn":
            return await _churn(a, client)
        return await _keep(a, client)


def gen_entry(args_json: str) -> None:
    a = GenArgs(**json.loads(args_json))
    if a.mode not in ("churn", "keep"):
        raise SystemExit(f"lease-worker: mode must be churn or keep, not {a.mode!r}")
    result = trio.run(_main, a)
    sys.stdout.write(json.dumps(result.to_json()) + "\n")
    sys.stdout.flush()
