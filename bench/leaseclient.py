"""The lease-churn phases that run from the benchmark's own process, with one rkv client:
`sequential` (one client, one request at a time, blocks of each kind interleaved so that a
busy machine's noise falls on all of them alike: plain put, put with a lease, keepalive,
grant, revoke, get: what a lease operation costs next to a put in the same run) and `lapse`
(leases granted with a key each and left to expire, each key's delete seen by a watch).

Owns: those two loops and their figures. Must not: start servers or generator processes, or
read CPU (bench.leasechurn does).
"""

from __future__ import annotations

import math
import time
from typing import Any

import trio

from bench.stats import Histogram

LAPSE_IN_FLIGHT = 128
"""Grants (each with its put) at once in the lapse phase."""
LAPSE_PREFIX = "lc/lapse/"
SEQ_KINDS = ("put", "put_lease", "keepalive", "grant", "revoke", "get")
SEQ_BLOCK = 25
"""Requests of one kind in a row before the next kind (then round again)."""


async def sequential(addrs: list[str], rounds: int) -> dict[str, Any]:
    """`rounds` x SEQ_BLOCK requests of each SEQ_KINDS kind, one at a time, kinds
    interleaved by block: p50/p99 (ms) of each kind, and the median over rounds of each
    block's p50 (a block's own noise cancels less than interleaving does)."""
    import rkv

    hists = {k: Histogram() for k in SEQ_KINDS}
    block_p50: dict[str, list[float]] = {k: [] for k in SEQ_KINDS}
    async with rkv.connect(addrs, timeout=30) as c:
        keep = await c.lease_grant(600)
        for _ in range(rounds):
            for kind in SEQ_KINDS:
                h = Histogram()
                for i in range(SEQ_BLOCK):
                    key = f"lc/seq/{kind}/{i:04d}".encode()
                    if kind == "revoke":
                        lid = (await c.lease_grant(600)).id  # untimed
                    t0 = time.perf_counter()
                    if kind == "put":
                        await c.put(key, b"v")
                    elif kind == "put_lease":
                        await c.put(key, b"v", lease=keep.id)
                    elif kind == "keepalive":
                        await c.lease_keepalive(keep.id)
                    elif kind == "grant":
                        lid = (await c.lease_grant(600)).id
                    elif kind == "revoke":
                        await c.lease_revoke(lid)
                    else:
                        await c.get(key)
                    us = round((time.perf_counter() - t0) * 1e6)
                    h.record(us)
                    if kind == "grant":
                        await c.lease_revoke(lid)  # untimed: leave no lease behind
                hists[kind].merge(h)
                block_p50[kind].append(h.percentile_us(50) / 1000)
    out: dict[str, Any] = {"rounds": rounds, "block": SEQ_BLOCK}
    for k in SEQ_KINDS:
        s = hists[k].summary_ms()
        p50s = sorted(block_p50[k])
        out[k] = {"p50": s["p50"], "p99": s["p99"], "median_block_p50": p50s[len(p50s) // 2]}
    return out


async def lapse(addrs: list[str], leases: int, ttl: float) -> dict[str, Any]:
    import rkv

    sent: dict[bytes, tuple[float, float]] = {}  # key -> (grant sent, granted ttl)
    gone: dict[bytes, float] = {}
    async with rkv.connect(addrs, timeout=30) as c:
        _, rev = await c.get_revision(LAPSE_PREFIX + "none")
        done = trio.Event()

        async def watch() -> None:
            async for ev in c.watch(LAPSE_PREFIX, start_revision=(rev or 0) + 1):
                if ev.type == "delete" and ev.key in sent and ev.key not in gone:
                    gone[ev.key] = trio.current_time()
                    if len(gone) == leases:
                        done.set()
                        return

        async def grant(i: int, gate: trio.Semaphore) -> None:
            async with gate:
                key = f"{LAPSE_PREFIX}{i:09d}".encode()
                t = trio.current_time()
                lease = await c.lease_grant(ttl)
                sent[key] = (t, lease.ttl)
                await c.put(key, b"v", lease=lease.id)

        t0 = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            gate = trio.Semaphore(LAPSE_IN_FLIGHT)
            async with trio.open_nursery() as grants:
                for i in range(leases):
                    grants.start_soon(grant, i, gate)
            granted = trio.current_time()
            with trio.move_on_after(max(s for _, s in sent.values()) + 60):
                await done.wait()
            nursery.cancel_scope.cancel()
    deadlines = {k: t + s for k, (t, s) in sent.items()}
    delays = Histogram()
    early = 0
    for k, g in gone.items():
        d = g - deadlines[k]
        early += d < 0
        delays.record(max(0, round(d * 1e6)))
    span = (max(gone.values()) - min(gone.values())) if gone else math.nan
    return {
        "leases": leases,
        "ttl_s": ttl,
        "grant_span_s": round(granted - t0, 3),
        "expired": len(gone),
        "expiry_span_s": round(span, 3),
        "expired_per_s": round(len(gone) / span, 1) if span and span > 0 else None,
        "delay_ms": delays.summary_ms(),
        "gone_before_deadline": early,
    }
