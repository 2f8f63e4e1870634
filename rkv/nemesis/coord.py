"""The nemesis' coordination load: watchers of the workload's keys and lock holders.

Owns: `Coordination` (started by the runner with `--watchers N` / `--locks N`): N watcher
tasks, each an `rkv.Client.watch` of the workload prefix with progress (the client rotates
nodes on failure), recording into a `WatchLog`; after a Compacted a watcher re-reads the
prefix with a scan and watches from the revision after it (odd-numbered watchers stall now
and then, as slow consumers do, so small watch windows compact under them) (the gap is recorded: the check
knows it could not see those revisions); after Unavailable it watches again from where it
was. And N lock tasks taking `rkv.Lock(LOCK_NAME, ttl)` in turns, each holder writing
twice to a fenced store while it holds the lock, and sometimes once more after (a late
write, as a holder woken from a pause would try). The fenced store is a transaction on the
cluster: if the fence key's token is greater than the writer's, change nothing (refused),
else put the token and the protected value (accepted), so the store itself refuses stale
tokens. `end` reads the end revision and the final token and lets the watchers catch up;
`judge` hands the records to rkv.nemesis.coord_check. Must not: inject faults or judge
itself.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import cast

import trio

import rkv
from rkv.client import Cmp, TxnOp, WatchEvent
from rkv.nemesis.coord_check import FenceAttempt, WatchLog, check_fence, check_watchers
from rkv.sim.linearizability import Operation

WATCH_PREFIX = b"e"
"""The workload's keys are e<epoch>-k<i> (rkv.nemesis.workload.KeySchedule)."""
LOCK_NAME = "nemlock"
FENCE_KEY = b"nemfence/token"
FENCE_DATA = b"nemfence/data"
STALL_P = 0.002
STALL = (0.5, 1.5)
"""Odd-numbered watchers are slow consumers: after an event, with probability STALL_P, they
stop reading for STALL seconds (behind a small watch window: Compacted)."""
TOKEN_DIGITS = 20
"""Tokens are stored zero-padded, so the byte order of values is the numeric order."""


def encode_token(token: int) -> bytes:
    return f"{token:0{TOKEN_DIGITS}d}".encode()


@dataclass
class Coordination:
    addrs: list[str]
    watchers: int
    locks: int
    lock_ttl: float
    op_timeout: float
    watch_logs: list[WatchLog] = field(default_factory=list)
    fence: list[FenceAttempt] = field(default_factory=list)
    lock_counts: Counter[str] = field(default_factory=Counter)
    target: int | None = None
    """Set at the end: watchers stop once they have covered this revision."""
    caught_up: trio.Event = field(default_factory=trio.Event)

    def _client(self, rng: random.Random, first: int = 0) -> rkv.Client:
        """A client that tries node `first` first (watchers spread over the nodes, so that
        one frozen node does not put every watcher behind the same gap)."""
        k = first % len(self.addrs)
        return rkv.connect(
            self.addrs[k:] + self.addrs[:k],
            timeout=self.op_timeout,
            attempt_timeout=min(1.5, self.op_timeout),
            connect_timeout=0.5,
            rng=random.Random(rng.random()),
        )

    async def start_watchers(self, nursery: trio.Nursery, rng: random.Random) -> None:
        """Start the watchers; returns once each has its start revision (so every write made
        after this returns is after every watcher's start)."""
        for i in range(self.watchers):
            log = WatchLog(f"w{i}")
            self.watch_logs.append(log)
            await nursery.start(self._watch, log, random.Random(rng.random()))

    def start_locks(self, nursery: trio.Nursery, rng: random.Random, stop: trio.Event) -> None:
        """Start the lock tasks: they take turns until `stop` is set."""
        for i in range(self.locks):
            nursery.start_soon(self._lock_turns, f"l{i}", random.Random(rng.random()), stop)

    async def _scan_rev(self, c: rkv.Client) -> int:
        while True:
            try:
                _, rev = await c.scan_revision(WATCH_PREFIX, limit=1)
            except rkv.RkvError:
                await trio.sleep(0.2)
                continue
            if rev is None:
                raise RuntimeError("the nodes do not report scan revisions")
            return rev

    async def _watch(
        self,
        log: WatchLog,
        rng: random.Random,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        number = int(log.name[1:])
        slow = number % 2 == 1
        async with self._client(rng, number) as c:
            log.start(await self._scan_rev(c) + 1)
            task_status.started()
            while self.target is None or log.through < self.target:
                try:
                    stream = cast(
                        AsyncGenerator[WatchEvent, None],
                        c.watch(WATCH_PREFIX, log.through + 1, progress=True, wait=0.5),
                    )
                    async with aclosing(stream):
                        async for ev in stream:
                            if ev.type != "progress":
                                log.events.append((ev.rev, ev.type, ev.key, ev.value))
                            log.saw(ev.rev)
                            if slow and rng.random() < STALL_P:
                                await trio.sleep(rng.uniform(*STALL))
                            if self.target is not None and log.through >= self.target:
                                break
                except rkv.Compacted:
                    log.compacted += 1
                    log.restarts += 1
                    log.start(await self._scan_rev(c) + 1)
                except rkv.RkvError:
                    log.restarts += 1  # from where it was: no gap
                    await trio.sleep(0.1)
        if all(w.through >= (self.target or 0) for w in self.watch_logs):
            self.caught_up.set()

    async def catch_up(self, end_rev: int, timeout: float) -> bool:
        """Tell the watchers to stop at `end_rev`; True if all reached it in time."""
        self.target = end_rev
        if not self.watch_logs:
            return True
        with trio.move_on_after(timeout):
            await self.caught_up.wait()
        return self.caught_up.is_set()

    async def _lock_turns(self, name: str, rng: random.Random, stop: trio.Event) -> None:
        async with self._client(rng) as c:
            n = 0
            while not stop.is_set():
                token: int | None = None
                try:
                    async with rkv.Lock(c, LOCK_NAME, self.lock_ttl, timeout=10.0) as lock:
                        token = lock.revision
                        assert token is not None
                        self.lock_counts["acquisitions"] += 1
                        for _ in range(2):
                            n += 1
                            await self._fenced(c, name, token, n, late=False)
                            await trio.sleep(rng.uniform(0, self.lock_ttl / 2))
                except rkv.LockLost:
                    self.lock_counts["lock_lost"] += 1
                except rkv.Timeout:
                    self.lock_counts["acquire_timeouts"] += 1
                except rkv.RkvError as e:
                    self.lock_counts[f"error:{e.code}"] += 1
                    await trio.sleep(0.1)
                if token is not None and rng.random() < 0.3:
                    await trio.sleep(rng.uniform(0, self.lock_ttl))
                    n += 1
                    await self._fenced(c, name, token, n, late=True)
                await trio.sleep(rng.uniform(0, 0.05))

    async def _fenced(self, c: rkv.Client, name: str, token: int, n: int, *, late: bool) -> None:
        tok = encode_token(token)
        # Recorded as unknown first: a write cancelled in flight (LockLost) may still apply.
        i = len(self.fence)
        self.fence.append(FenceAttempt(name, token, late, "unknown"))
        try:
            r = await c.txn(
                [Cmp.value(FENCE_KEY, ">", tok)],
                success=[],
                failure=[TxnOp.put(FENCE_KEY, tok), TxnOp.put(FENCE_DATA, f"{name}.{n}")],
            )
        except rkv.RkvError:
            self.lock_counts["fenced_unknown"] += 1
            return
        outcome = "refused" if r.succeeded else "accepted"
        self.fence[i] = FenceAttempt(name, token, late, outcome, r.revision)
        self.lock_counts[f"fenced_{outcome}{'_late' if late else ''}"] += 1

    async def final_token(self, c: rkv.Client) -> int | None:
        v = await c.get(FENCE_KEY)
        return None if v is None else int(v)

    async def end(self, timeout: float) -> tuple[int, int | None, list[str]]:
        """After the final reads: (the end revision, read linearizably after every write was
        answered; the fenced store's final token; problems), once the watchers caught up."""
        async with rkv.connect(self.addrs, timeout=timeout, attempt_timeout=2.0) as c:
            try:
                _, rev = await c.scan_revision(b"", limit=1)
                token = await self.final_token(c) if self.locks else None
            except rkv.RkvError as e:
                return 0, None, [f"end revision / fence read failed: {e}"]
        end_rev = rev or 0
        if not await self.catch_up(end_rev, timeout):
            return end_rev, token, [f"watchers did not reach revision {end_rev} in {timeout:g} s"]
        return end_rev, token, []

    def judge(
        self, ops: list[Operation], end_rev: int, final_token: int | None
    ) -> tuple[dict[str, int], list[str], dict[str, int], list[str]]:
        """(watch figures, watch problems, lock figures, lock problems)."""
        watch: dict[str, int] = {}
        watch_problems: list[str] = []
        if self.watchers:
            wv = check_watchers(ops, self.watch_logs, end_rev)
            watch_problems = wv.problems
            watch = {
                "watchers": self.watchers,
                "events": wv.events,
                "acknowledged_writes_checked": wv.checked_writes,
                "compacted": sum(w.compacted for w in self.watch_logs),
                "restarts": sum(w.restarts for w in self.watch_logs),
                "skipped_in_gaps": wv.skipped,
                "unplaced": wv.unplaced,
            }
        lock_problems = check_fence(self.fence, final_token) if self.locks else []
        return watch, watch_problems, dict(sorted(self.lock_counts.items())), lock_problems
