"""The watcher process of the watch fan-out benchmark (`python -m bench watcher --args JSON`,
started by bench.watchfanout): many watches on one prefix through rkv's own client, each
event's arrival time kept, the delivery latencies computed once the writer's ack times come.

Owns: its watches (`per_client` of them on each rkv.Client, below a node's per-connection
limit; client j of process p watches through node (p + j) mod n only, so the watches spread
over the nodes), the arrival time (CLOCK_MONOTONIC, which every process on the machine
shares) of each put event per watcher, and its stdout/stdin protocol: "ready" once every
watch has had an answer (an event or a progress), "done" once every watch has seen every
write (or the deadline passed), then one JSON line in (the writer's ack times) and one JSON
line out (latency histogram and counts). Must not write keys or summarize across processes
(bench.watchfanout does).
"""

from __future__ import annotations

import json
import math
import sys
import time
from typing import Any

import trio

from bench.stats import Histogram

PROGRESS_WAIT = 0.5
"""Seconds an idle poll waits before its progress answer: how a watch shows it is live."""


def seq_of(key: bytes, prefix: bytes) -> int | None:
    """The write number of a key the writer put (`prefix` + 8 digits), None for another key."""
    tail = key[len(prefix) :]
    return int(tail) if key.startswith(prefix) and tail.isdigit() else None


def latencies(
    arrivals: list[list[float]], acks: list[float | None], first: int
) -> tuple[Histogram, int]:
    """The histogram of (arrival - ack) in microseconds over the writes numbered `first` and
    later (the measured window), and how many arrivals came before their write's ack (a
    watch on a node that applied the write before the leader's answer reached the writer;
    counted as 0 in the histogram). Writes without an ack (failed) are left out."""
    h = Histogram()
    early = 0
    for seq in range(first, min(len(arrivals), len(acks))):
        ack = acks[seq]
        if ack is None:
            continue
        for t in arrivals[seq]:
            d = t - ack
            if d < 0:
                early += 1
            h.record(round(d * 1e6))
    return h, early


async def _watch_all(spec: dict[str, Any], arrivals: list[list[float]]) -> dict[str, int]:
    import rkv

    prefix: bytes = spec["prefix"].encode()
    writes: int = spec["writes"]
    count: int = spec["watchers"]
    per_client: int = spec["per_client"]
    addrs: list[str] = spec["addrs"]
    live = 0
    all_live = trio.Event()
    finished = 0
    all_done = trio.Event()
    counts = {"events": 0, "other": 0, "errors": 0}

    async def one(c: rkv.Client) -> None:
        nonlocal live, finished
        seen = 0
        first = True
        try:
            async for ev in c.watch(
                prefix, start_revision=spec["start_revision"], progress=True, wait=PROGRESS_WAIT
            ):
                now = time.monotonic()
                if first:
                    first = False
                    live += 1
                    if live == count:
                        all_live.set()
                if ev.type != "put":
                    continue
                seq = seq_of(ev.key, prefix)
                if seq is not None:
                    seq -= spec["seq0"]
                if seq is None or not 0 <= seq < writes:
                    counts["other"] += 1
                    continue
                arrivals[seq].append(now)
                counts["events"] += 1
                seen += 1
                if seen == writes:
                    break
        except rkv.RkvError:
            counts["errors"] += 1
        finally:
            finished += 1
            if finished == count:
                all_done.set()

    with trio.move_on_after(spec["deadline_s"]):
        async with trio.open_nursery() as n:
            clients = []
            for j in range(math.ceil(count / per_client)):
                addr = addrs[(spec["index"] + j) % len(addrs)]
                c = rkv.connect([addr], timeout=spec["deadline_s"])
                clients.append(await n.start(_hold, c))
            for i in range(count):
                n.start_soon(one, clients[i // per_client])
            await all_live.wait()
            print("ready", flush=True)
            await all_done.wait()
            n.cancel_scope.cancel()
    return counts


async def _hold(c: Any, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
    """Keep one client open (its connections) until the nursery ends."""
    async with c:
        task_status.started(c)
        await trio.sleep_forever()


def watcher_entry(args: str) -> int:
    spec = json.loads(args)
    arrivals: list[list[float]] = [[] for _ in range(spec["writes"])]
    counts = trio.run(_watch_all, spec, arrivals)
    print("done", flush=True)
    line = sys.stdin.readline()  # {"acks": [monotonic seconds or null per write], "first": k}
    doc = json.loads(line) if line.strip() else {}
    acks: list[float | None] = doc.get("acks", [])
    h, early = latencies(arrivals, acks, int(doc.get("first", 0)))
    expected = spec["writes"] * spec["watchers"]
    out = {
        **counts,
        "missing": expected - counts["events"],
        "before_ack": early,
        "latency": h.to_json(),
    }
    print(json.dumps(out), flush=True)
    return 0
