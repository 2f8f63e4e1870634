"""`rkv sim`: run a range of seeds (in this process or sharded over worker processes), print
progress, failure reports and one summary, return the exit code.

Owns: `run_sim_command`, the entry point the CLI (and `python -m rkv.sim`) calls; the seed
hand-out (a fixed range, or soak mode: fresh seeds until a deadline); the worker processes of
`jobs > 1` (spawned, one pipe each, seeds handed out in small chunks, Ctrl+C and dead workers
handled); and the summary it prints (a human line, or with json_output one JSON object as the
last line), merged over the workers. Must not: parse arguments (the CLI does), run anything
but rkv.sim.runner, or print from a worker (workers send results; this process prints them as
they arrive). Elapsed time and the soak deadline are wall-clock, measured here, outside the
runs, which stay pure functions of their seeds.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import multiprocessing
import secrets
import signal
import sys
import time
import traceback
from collections import deque
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, TextIO

from rkv.sim.cluster import SimParams
from rkv.sim.runner import DEFAULT, RawNodeFactory, SeedResult, run_seed

EXIT_INTERRUPTED = 130
_SUM_KEYS = (
    "leader_changes",
    "crashes",
    "restarts",
    "partitions",
    "committed_entries",
    "ops_completed",
    "events",
    "messages",
    "members_joined",
    "members_removed",
    "disks_replaced",
    "leases_expired",
    "leases_revoked",
    "lease_liveness_checked",
)
_MAX_KEYS = (
    ("max_ticks_to_elect", "ticks_to_elect"),
    ("max_ticks_to_converge", "ticks_to_converge"),
)
_MAX_CHUNK = 4
"""Seeds per hand-out at most: small, so the workers finish together and a soak run stops
soon after its deadline (each worker holds at most two chunks)."""
_JOIN_SECONDS = 5.0


def run_sim_command(
    seeds: int | None,
    first_seed: int | None,
    nodes: int,
    json_output: bool,
    verbose: bool = False,
    *,
    ticks: int | None = None,
    compact_every: int = 0,
    membership: bool = False,
    disk_replace: bool = False,
    txn_fraction: float = 0.0,
    lease_fraction: float = 0.0,
    jobs: int = 1,
    duration: float | None = None,
    raw_node_factory: str | None = None,
    out: TextIO | None = None,
) -> int:
    """Run seeds first_seed, first_seed+1, ... on a `nodes`-node cluster: `seeds` of them
    (default 100 without `duration`), or with `duration` (seconds) fresh seeds until the time
    is up (whichever comes first when both are given). `first_seed` None means 1, or with
    `duration` a random one (printed first). `jobs` > 1 shards the seeds over that many worker
    processes. `raw_node_factory` ("module:attribute", a test hook) replaces the real core in
    every run. Returns 0 only if every seed passed, 1 if one failed or a worker died, 2 for bad
    arguments, 130 if interrupted. Failures are reported (with trace and replay command) as they
    happen."""
    out = out if out is not None else sys.stdout
    if (seeds is not None and seeds < 1) or nodes < 1 or jobs < 1:
        print("error: --seeds, --nodes and --jobs must be >= 1", file=out)
        return 2
    if duration is not None and duration <= 0:
        print("error: --duration must be > 0", file=out)
        return 2
    if seeds is None and duration is None:
        seeds = 100
    random_first = first_seed is None and duration is not None
    if first_seed is None:
        first_seed = secrets.randbelow(10**9) + 1 if random_first else 1
    if duration is not None:
        how = "random first seed" if random_first else "first seed"
        print(f"sim: soak for {duration:g}s from {how} {first_seed}", file=out, flush=True)
    params = sim_params(
        nodes,
        ticks=ticks,
        compact_every=compact_every,
        membership=membership,
        disk_replace=disk_replace,
        txn_fraction=txn_fraction,
        lease_fraction=lease_fraction,
    )
    if verbose and seeds == 1:
        params = replace(params, full_trace=True)
    try:
        _load_factory(raw_node_factory)  # a bad spec is a usage error here, not a dead worker
    except (ImportError, AttributeError, ValueError) as exc:
        print(f"error: --raw-node-factory {raw_node_factory}: {exc}", file=out)
        return 2

    started = time.monotonic()
    hand_out = _SeedSource(first_seed, seeds, None if duration is None else started + duration)
    tally = _Tally(out, json_output, verbose, seeds, duration, started)
    try:
        if jobs == 1:
            _run_here(hand_out, params, _load_factory(raw_node_factory), tally)
        else:
            _run_workers(hand_out, params, raw_node_factory, jobs, tally)
    except KeyboardInterrupt:
        tally.interrupted = True
    elapsed = time.monotonic() - started
    return tally.finish(first_seed, nodes, jobs, elapsed, membership)


def sim_params(
    nodes: int,
    *,
    ticks: int | None = None,
    compact_every: int = 0,
    membership: bool = False,
    disk_replace: bool = False,
    txn_fraction: float = 0.0,
    lease_fraction: float = 0.0,
) -> SimParams:
    """The SimParams the command-line options stand for (what replay_command inverts)."""
    params = replace(DEFAULT, nodes=nodes)
    if ticks is not None:
        params = replace(params, ticks=ticks)
    if compact_every:
        params = replace(params, compact_every=compact_every)
    if membership:
        params = replace(params, membership=True)
    if disk_replace:
        params = replace(params, disk_replace=True)
    if txn_fraction:
        params = replace(params, txn_fraction=txn_fraction)
    if lease_fraction:
        params = replace(params, lease_fraction=lease_fraction)
    return params


# -- seeds and results ----------------------------------------------------------------------


class _SeedSource:
    """Hands out first, first+1, ... until `count` are out (None: no bound) or the deadline
    (time.monotonic()) has passed; a chunk handed out before the deadline still runs, so the
    seeds that ran are always one contiguous range."""

    def __init__(self, first: int, count: int | None, deadline: float | None) -> None:
        self.next = first
        self.end = None if count is None else first + count
        self.deadline = deadline

    def take(self, n: int) -> list[int]:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return []
        stop = self.next + n if self.end is None else min(self.end, self.next + n)
        chunk = list(range(self.next, stop))
        self.next = stop
        return chunk

    def chunk_size(self, jobs: int) -> int:
        if self.end is None or self.deadline is not None:
            return 1  # soak: stop close to the deadline
        return max(1, min(_MAX_CHUNK, (self.end - self.next) // (jobs * 8)))


@dataclass
class _Tally:
    """Merges SeedResults (in any order) into the summary, printing reports as they come."""

    out: TextIO
    json_output: bool
    verbose: bool
    seeds: int | None
    duration: float | None
    started: float
    totals: dict[str, int] = field(default_factory=dict)
    failed: list[int] = field(default_factory=list)
    done: int = 0
    last_seed: int | None = None
    worker_errors: list[str] = field(default_factory=list)
    interrupted: bool = False
    next_progress: float = 0.0

    def __post_init__(self) -> None:
        self.totals = dict.fromkeys((*_SUM_KEYS, *(k for k, _ in _MAX_KEYS)), 0)
        if self.duration is not None:
            self.next_progress = self.started + self._progress_every()

    def add(self, res: SeedResult) -> None:
        s = res.stats
        for key in _SUM_KEYS:
            self.totals[key] += getattr(s, key)
        for key, attr in _MAX_KEYS:
            self.totals[key] = max(self.totals[key], getattr(s, attr))
        self.done += 1
        self.last_seed = res.seed if self.last_seed is None else max(self.last_seed, res.seed)
        for line in res.trace:
            print(line, file=self.out)
        if res.failure is not None:
            self.failed.append(res.seed)
            print(res.failure.report(), file=self.out, flush=True)
        elif self.verbose:
            print(res.summary(), file=self.out, flush=True)
        elif not self.json_output:
            self._progress()

    def _progress_every(self) -> float:
        """Soak progress lines: a tenth of the run, between 10 s and a minute apart."""
        return min(60.0, max(10.0, (self.duration or 0) / 10))

    def _progress(self) -> None:
        if self.duration is not None:
            now = time.monotonic()
            if now < self.next_progress:
                return
            self.next_progress = now + self._progress_every()
            elapsed = f", {now - self.started:.0f}s"
        elif self.seeds is not None and self.seeds >= 100 and self.done % (self.seeds // 10) == 0:
            elapsed = ""
        else:
            return
        of = f"/{self.seeds}" if self.seeds is not None and self.duration is None else ""
        print(
            f"  {self.done}{of} seeds, {len(self.failed)} failed{elapsed}",
            file=self.out,
            flush=True,
        )

    def worker_error(self, line: str) -> None:
        self.worker_errors.append(line)
        print(line, file=self.out, flush=True)

    def finish(self, first: int, nodes: int, jobs: int, elapsed: float, membership: bool) -> int:
        out = self.out
        if self.interrupted:
            print(f"sim: interrupted after {self.done} seeds", file=out, flush=True)
        last = self.last_seed if self.last_seed is not None else first - 1
        failed = sorted(self.failed)
        summary: dict[str, Any] = {
            "seeds": self.done,
            "first_seed": first,
            "last_seed": last,
            "nodes": nodes,
            "jobs": jobs,
            "failures": len(failed),
            "failed_seeds": failed,
            **self.totals,
            "worker_errors": self.worker_errors,
            "elapsed_s": round(elapsed, 3),
            "seeds_per_s": round(self.done / elapsed, 2) if elapsed > 0 else None,
        }
        if self.json_output:
            print(json.dumps(summary, sort_keys=True), file=out)
        else:
            t = self.totals
            if self.worker_errors:
                verdict = f"RUN FAILED: {len(self.worker_errors)} worker error(s)"
                verdict += f", {len(failed)} seeds failed: {failed[:20]}" if failed else ""
            else:
                verdict = "all passed" if not failed else f"{len(failed)} FAILED: {failed[:20]}"
            where = f"from {first} to {last}" if self.duration is not None else f"from {first}"
            print(
                f"sim: {self.done} seeds x {nodes} nodes {where}: {verdict} | "
                f"leader changes {t['leader_changes']}, crashes {t['crashes']}, "
                f"partitions {t['partitions']}, committed {t['committed_entries']}, "
                f"ops {t['ops_completed']}, max ticks to elect {t['max_ticks_to_elect']}"
                + (
                    f", members joined {t['members_joined']} removed {t['members_removed']}"
                    if membership
                    else ""
                )
                + (f", disks replaced {t['disks_replaced']}" if t["disks_replaced"] else "")
                + " | "
                f"{elapsed:.1f}s ({summary['seeds_per_s']} seeds/s"
                + (f", {jobs} jobs)" if jobs > 1 else ")"),
                file=out,
            )
        if failed or self.worker_errors:
            return 1
        return EXIT_INTERRUPTED if self.interrupted else 0


def _load_factory(spec: str | None) -> RawNodeFactory | None:
    if spec is None:
        return None
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise ValueError("expected module:attribute")
    factory: RawNodeFactory = getattr(importlib.import_module(module), attr)
    return factory


def _run_one(seed: int, params: SimParams, factory: RawNodeFactory | None) -> SeedResult:
    return run_seed(seed, params.nodes, params=params, raw_node_factory=factory)


# -- in this process (--jobs 1) -------------------------------------------------------------


def _run_here(
    hand_out: _SeedSource, params: SimParams, factory: RawNodeFactory | None, tally: _Tally
) -> None:
    while chunk := hand_out.take(1):
        tally.add(_run_one(chunk[0], params, factory))


# -- worker processes (--jobs N) ------------------------------------------------------------


def _worker_main(conn: Connection, params: SimParams, factory_spec: str | None) -> None:
    """A worker: receive chunks of seeds (None: stop), send ("ok", SeedResult) per seed, or one
    ("error", seed, traceback) for anything raised outside a seed's own checks, then exit.
    Ctrl+C is ignored here: the parent decides when workers stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    seed: int | None = None
    try:
        factory = _load_factory(factory_spec)
        while (chunk := conn.recv()) is not None:
            for seed in chunk:
                conn.send(("ok", _run_one(seed, params, factory)))
    except (EOFError, BrokenPipeError):
        return  # the parent is gone
    except BaseException as exc:  # reported to the parent, which fails the run
        text = "".join(traceback.format_exception(exc)).rstrip()
        with contextlib.suppress(OSError):
            conn.send(("error", seed, text))


@dataclass
class _Worker:
    index: int
    process: BaseProcess
    conn: Connection
    chunks: deque[list[int]] = field(default_factory=deque)
    """Chunks sent and not yet fully answered, oldest first."""

    def send_chunk(self, hand_out: _SeedSource, size: int) -> bool:
        chunk = hand_out.take(size)
        if chunk:
            self.conn.send(chunk)
            self.chunks.append(chunk)
        return bool(chunk)

    def answered(self, seed: int) -> None:
        head = self.chunks[0]
        head.remove(seed)
        if not head:
            self.chunks.popleft()

    def pending(self) -> list[int]:
        return [s for c in self.chunks for s in c]


def _run_workers(
    hand_out: _SeedSource,
    params: SimParams,
    factory_spec: str | None,
    jobs: int,
    tally: _Tally,
) -> None:
    ctx = multiprocessing.get_context("spawn")
    workers: list[_Worker] = []
    try:
        for i in range(jobs):
            parent_end, child_end = ctx.Pipe()
            proc = ctx.Process(
                target=_worker_main,
                args=(child_end, params, factory_spec),
                name=f"rkv-sim-worker-{i + 1}",
                daemon=True,
            )
            proc.start()
            child_end.close()
            workers.append(_Worker(i + 1, proc, parent_end))
        for _ in range(2):  # two chunks each: a worker never waits for its next one
            for w in workers:
                w.send_chunk(hand_out, hand_out.chunk_size(jobs))
        while busy := [w for w in workers if w.chunks]:
            error = _serve(hand_out, jobs, tally, _receive_all(busy))
            if error is not None:
                unchecked = _ranges([s for w in workers for s in w.pending()])
                tally.worker_error(
                    f"{error}\nsim: the run is incomplete: seeds {unchecked} unchecked"
                )
                return
    finally:
        _stop(workers)


def _receive_all(busy: list[_Worker]) -> list[tuple[_Worker, object]]:
    """Block until some worker answered or died; return its messages ((worker, message), or
    (worker, None) for a worker that is gone)."""
    by_conn: dict[Connection, _Worker] = {w.conn: w for w in busy}
    by_sentinel: dict[int, _Worker] = {w.process.sentinel: w for w in busy}
    ready = wait([*by_conn, *by_sentinel])
    exited = {id(by_sentinel[r]) for r in ready if r in by_sentinel}
    got: list[tuple[_Worker, object]] = []
    for w in busy:
        if w.conn not in ready and id(w) not in exited:
            continue
        try:
            while w.conn.poll():  # also drains what a worker sent before it exited
                got.append((w, w.conn.recv()))
        except (EOFError, OSError):
            got.append((w, None))
            continue
        if id(w) in exited:
            got.append((w, None))
    return got


def _serve(
    hand_out: _SeedSource, jobs: int, tally: _Tally, messages: list[tuple[_Worker, object]]
) -> str | None:
    """Take the workers' messages: results go to the tally and earn the worker a new chunk.
    Returns the error line if a worker raised outside a seed or is gone (the run stops)."""
    for w, msg in messages:
        if not w.chunks:
            continue  # nothing outstanding: nothing to account for
        if isinstance(msg, tuple) and msg[0] == "ok":
            res: SeedResult = msg[1]
            w.answered(res.seed)
            tally.add(res)
            if len(w.chunks) < 2:
                w.send_chunk(hand_out, hand_out.chunk_size(jobs))
            continue
        if isinstance(msg, tuple) and msg[0] == "error":
            at = "before its first seed" if msg[1] is None else f"at seed {msg[1]}"
            return f"sim: worker {w.index} raised outside a seed ({at}):\n{msg[2]}"
        w.process.join(1.0)
        return (
            f"sim: worker {w.index} (pid {w.process.pid}) died with exit code {w.process.exitcode}"
        )
    return None


def _stop(workers: list[_Worker]) -> None:
    """End every worker: a clean stop for idle ones, terminate() for any still busy (after a
    worker error or Ctrl+C), then join; none is left running."""
    for w in workers:
        if not w.chunks and w.process.is_alive():
            with contextlib.suppress(OSError):
                w.conn.send(None)
        else:
            w.process.terminate()
    deadline = time.monotonic() + _JOIN_SECONDS
    for w in workers:
        w.process.join(max(0.0, deadline - time.monotonic()))
        if w.process.is_alive():
            w.process.kill()
            w.process.join()
        w.conn.close()


def _ranges(seeds: list[int]) -> str:
    """[3, 4, 5, 9] -> '3..5, 9'."""
    runs: list[list[int]] = []
    for s in sorted(seeds):
        if runs and s == runs[-1][1] + 1:
            runs[-1][1] = s
        else:
            runs.append([s, s])
    return ", ".join(str(a) if a == b else f"{a}..{b}" for a, b in runs) or "none"
