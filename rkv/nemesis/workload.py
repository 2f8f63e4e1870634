"""Concurrent clients for the nemesis: mixed put/get/cas/delete, every operation recorded.

Owns: the `Recorder` (a linearizability `History` on trio's clock plus ok/failed/unknown
counters per kind), the key schedule (small key sets that rotate every epoch so each key's
history stays small enough to check however long the run), and two kinds of worker:
- `client_worker` uses the real `rkv` client (leader discovery, retries with the same session
  seq); an operation that gives up is an unknown outcome for a write;
- `raw_worker` sends single client-protocol frames to chosen nodes (linearizable reads on any
  node, including followers and frozen-then-woken leaders); `not_leader`, or `unavailable`
  with a message saying it was refused before proposing (NOT_PROPOSED), means the write was
  definitely not applied (failed); a timeout, a lost connection, any other `unavailable` or
  error after sending means the outcome is unknown. Raw workers back off briefly after an
  error, so an election does not turn into a burst of unknown outcomes.
Must not: inject faults or judge the history.
"""

from __future__ import annotations

import os
import random
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

import rkv
from rkv.config import parse_address
from rkv.net.rpc import ConnectionLost, RemoteError, RpcClient, RpcTimeout
from rkv.protocol import (
    CasRequest,
    ClientRequest,
    DeleteRequest,
    GetRequest,
    PutRequest,
)
from rkv.sim.linearizability import History, Operation, OpKind

WRITE_KINDS = ("put", "cas", "delete")
NOT_PROPOSED = ("no leader known", "cannot propose")
"""Starts of `unavailable` messages the node sends only before a write reaches the Raft
log (rkv.node.handlers.leader_check, rkv.replica.Replica.propose). Any other `unavailable` may
follow a proposal that still commits, so it is an unknown outcome; if these messages ever
change, writes merely fall back to unknown (sound, just costlier to check)."""
KINDS = ("get", *WRITE_KINDS)


@dataclass
class Recorder:
    """Every invocation and completion, timed by trio's clock (one process, one clock)."""

    history: History = field(default_factory=History)
    counts: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    errors: Counter[str] = field(default_factory=Counter)
    """Unexpected error codes seen (for the report; their ops are unknown, not failed)."""
    keys: set[bytes] = field(default_factory=set)

    def invoke(self, client: str, kind: str, key: bytes, inp: Any = None) -> int:
        self.keys.add(key)
        return self.history.invoke(client, kind, key, inp, time=trio.current_time())

    def ok(self, op: int, kind: str, output: Any) -> None:
        self.history.complete(op, output, time=trio.current_time())
        self.counts[kind]["ok"] += 1

    def fail(self, op: int, kind: str) -> None:
        self.history.fail(op)
        self.counts[kind]["failed"] += 1

    def unknown(self, op: int, kind: str) -> None:
        self.history.timeout(op)
        self.counts[kind]["unknown"] += 1

    def operations(self) -> list[Operation]:
        return self.history.operations()


@dataclass(frozen=True, slots=True)
class KeySchedule:
    """`keys` keys per epoch; the set changes every `epoch` seconds of the run."""

    start: float
    keys: int = 5
    epoch: float = 20.0

    def current(self) -> list[bytes]:
        e = int((trio.current_time() - self.start) / self.epoch)
        return [f"e{e:04d}-k{i}".encode() for i in range(self.keys)]


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    op_timeout: float = 4.0
    """Longest one operation may take before its outcome is recorded as unknown."""
    think: float = 0.01
    """Mean pause between a worker's operations (seconds)."""


def _choose(rng: random.Random) -> str:
    r = rng.random()
    return "get" if r < 0.4 else "put" if r < 0.65 else "cas" if r < 0.85 else "delete"


class _State:
    """Per-worker value generator and a guess of each key's value (for useful cas)."""

    def __init__(self, name: str, rng: random.Random) -> None:
        self.name = name
        self.rng = rng
        self.n = 0
        self.seen: dict[bytes, bytes | None] = {}

    def value(self) -> bytes:
        self.n += 1
        return f"{self.name}.{self.n}".encode()

    def expected(self, key: bytes) -> bytes | None:
        return self.seen.get(key) if self.rng.random() < 0.8 else None


async def client_worker(
    name: str,
    addrs: list[str],
    rec: Recorder,
    keys: KeySchedule,
    rng: random.Random,
    stop: trio.Event,
    opts: WorkerOptions,
) -> None:
    """Operations through the public rkv client until `stop` is set."""
    st = _State(name, rng)
    client = rkv.connect(
        addrs,
        timeout=opts.op_timeout,
        attempt_timeout=min(1.5, opts.op_timeout),
        connect_timeout=0.5,
        rng=random.Random(rng.random()),
    )
    async with client:
        while not stop.is_set():
            key = rng.choice(keys.current())
            kind = _choose(rng)
            await _client_op(client, name, kind, key, rec, st)
            await trio.sleep(rng.expovariate(1 / opts.think) if opts.think > 0 else 0)


async def _client_op(
    c: rkv.Client, name: str, kind: str, key: bytes, rec: Recorder, st: _State
) -> None:
    if kind == "get":
        op = rec.invoke(name, OpKind.GET, key)
        try:
            v = await c.get(key)
        except rkv.RkvError as e:
            rec.fail(op, kind)  # a read that did not answer has no effect
            if not isinstance(e, rkv.Unavailable):
                rec.errors[f"get:{e.code}"] += 1
            return
        st.seen[key] = v
        rec.ok(op, kind, v)
        return
    if kind == "put":
        val = st.value()
        op = rec.invoke(name, OpKind.PUT, key, val)
        coro: Callable[[], Any] = lambda: c.put(key, val)  # noqa: E731
    elif kind == "cas":
        exp, val = st.expected(key), st.value()
        op = rec.invoke(name, OpKind.CAS, key, (exp, val))
        coro = lambda: c.cas(key, exp, val)  # noqa: E731
    else:
        val = None
        op = rec.invoke(name, OpKind.DELETE, key)
        coro = lambda: c.delete(key)  # noqa: E731
    try:
        out = await coro()
    except rkv.RkvError as e:
        # The client retried with the same session seq until its deadline: the write may
        # have been applied (once) or not at all.
        rec.unknown(op, kind)
        if not isinstance(e, rkv.Unavailable):
            rec.errors[f"{kind}:{e.code}"] += 1
        return
    if kind == "put":
        st.seen[key] = val
        rec.ok(op, kind, None)
    elif kind == "cas":
        if out:
            st.seen[key] = val
        rec.ok(op, kind, bool(out))
    else:
        st.seen[key] = None
        rec.ok(op, kind, bool(out))


class _Links:
    """One persistent RpcClient per node, each held open by a task in the owner's nursery."""

    def __init__(self, nursery: trio.Nursery, connect_timeout: float) -> None:
        self._nursery = nursery
        self._timeout = connect_timeout
        self._open: dict[str, tuple[RpcClient, trio.Event]] = {}

    async def _hold(self, addr: str, task_status: trio.TaskStatus[RpcClient]) -> None:
        host, port = parse_address(addr)
        rpc = RpcClient(host, port, connect_timeout=self._timeout, timeout=10.0)
        closed = trio.Event()
        async with rpc:
            self._open[addr] = (rpc, closed)
            task_status.started(rpc)
            await closed.wait()

    async def get(self, addr: str) -> RpcClient:
        cur = self._open.get(addr)
        if cur is not None:
            if cur[0].connected:
                return cur[0]
            self.drop(addr)
        result: RpcClient = await self._nursery.start(self._hold, addr)
        return result

    def drop(self, addr: str) -> None:
        cur = self._open.pop(addr, None)
        if cur is not None:
            cur[1].set()


async def raw_worker(
    name: str,
    addrs: list[str],
    rec: Recorder,
    keys: KeySchedule,
    rng: random.Random,
    stop: trio.Event,
    opts: WorkerOptions,
) -> None:
    """Single-attempt client-protocol requests to chosen nodes until `stop` is set."""
    st = _State(name, rng)
    cid = os.urandom(16)
    seq = 0
    leader_guess = rng.choice(addrs)
    async with trio.open_nursery() as nursery:
        links = _Links(nursery, connect_timeout=0.5)
        while not stop.is_set():
            key = rng.choice(keys.current())
            kind = _choose(rng)
            # Reads go anywhere (followers serve linearizable reads via ReadIndex); writes
            # mostly to the believed leader, sometimes elsewhere to exercise not_leader.
            target = rng.choice(addrs) if kind == "get" or rng.random() < 0.2 else leader_guess
            try:
                with trio.fail_after(1.0):
                    rpc = await links.get(target)
            except (ConnectionLost, OSError, trio.TooSlowError):
                links.drop(target)
                leader_guess = rng.choice(addrs)
                await trio.sleep(0.05)
                continue
            request: ClientRequest
            if kind == "get":
                request = GetRequest(key)
                op = rec.invoke(name, OpKind.GET, key)
            else:
                seq += 1
                if kind == "put":
                    val = st.value()
                    request = PutRequest(key, val, cid, seq)
                    op = rec.invoke(name, OpKind.PUT, key, val)
                elif kind == "cas":
                    exp, val = st.expected(key), st.value()
                    request = CasRequest(key, exp, val, cid, seq)
                    op = rec.invoke(name, OpKind.CAS, key, (exp, val))
                else:
                    request = DeleteRequest(key, cid, seq)
                    op = rec.invoke(name, OpKind.DELETE, key)
            try:
                reply = await rpc.call(request.to_frame(), timeout=opts.op_timeout)
            except RemoteError as e:
                hint = e.fields.get("leader_addr")
                if e.code == "not_leader":
                    # Refused before proposing: definitely not applied.
                    rec.fail(op, kind)
                    if isinstance(hint, str) and hint in addrs:
                        leader_guess = hint
                    else:
                        leader_guess = rng.choice(addrs)
                elif e.code == "unavailable" and e.msg.startswith(NOT_PROPOSED):
                    # Refused before it reached the log (no leader known / the core
                    # dropped the proposal): definitely not applied.
                    rec.fail(op, kind)
                    leader_guess = rng.choice(addrs)
                    await trio.sleep(rng.uniform(0.02, 0.1))
                else:
                    if e.code not in ("unavailable", "timeout"):
                        rec.errors[f"{kind}:{e.code}"] += 1
                    if kind == "get":
                        rec.fail(op, kind)
                    else:
                        rec.unknown(op, kind)
                    leader_guess = rng.choice(addrs)
                    await trio.sleep(rng.uniform(0.02, 0.1))
            except (ConnectionLost, RpcTimeout, OSError):
                await trio.sleep(rng.uniform(0.02, 0.1))
                links.drop(target)
                if kind == "get":
                    rec.fail(op, kind)
                else:
                    rec.unknown(op, kind)
                leader_guess = rng.choice(addrs)
            else:
                if kind == "get":
                    v = reply.get("val")
                    v = None if v is None else bytes(v)
                    st.seen[key] = v
                    rec.ok(op, kind, v)
                elif kind == "put":
                    st.seen[key] = val
                    rec.ok(op, kind, None)
                    leader_guess = target
                elif kind == "cas":
                    if reply.get("swapped"):
                        st.seen[key] = val
                    rec.ok(op, kind, bool(reply.get("swapped")))
                    leader_guess = target
                else:
                    st.seen[key] = None
                    rec.ok(op, kind, bool(reply.get("existed")))
                    leader_guess = target
            await trio.sleep(rng.expovariate(1 / opts.think) if opts.think > 0 else 0)
        nursery.cancel_scope.cancel()
