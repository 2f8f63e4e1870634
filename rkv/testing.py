"""In-process clusters for tests and experiments (in the spirit of trio.testing).

Owns: building the configs of an N-node local cluster, running
its nodes inside one trio nursery (or in a thread of its own, `threaded_cluster`, for tests
of the blocking client), waiting until they agree on a leader, and a connection
flood (`flood`: connections that never get through their handshake, the abuse of issue 19);
`DictTxn`, a dict as the state machine's kv for fakes that run txns with the real code.
Must not: be imported by the product itself (only by tests, benchmarks and the nemesis).
"""

from __future__ import annotations

import contextlib
import struct
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import trio

from rkv.config import NodeConfig
from rkv.net.framing import FrameDecoder, FrameError
from rkv.node import Node, run_node
from rkv.procs import free_ports as free_ports
from rkv.raft.types import Role
from rkv.store import Record
from rkv.store.changes import ChangeRecorder
from rkv.store.leases import Lease


def local_configs(tmp: Path, nodes: int | Sequence[int] = 3, **kw: Any) -> list[NodeConfig]:
    """Configs of a loopback cluster: `nodes` is a count (free ports are picked) or the ports.
    Each node keeps its data under `tmp`; `kw` goes to every NodeConfig.create()."""
    ports = free_ports(nodes) if isinstance(nodes, int) else list(nodes)
    addrs = [f"127.0.0.1:{p}" for p in ports]
    return [NodeConfig.create(a, addrs, data_dir=tmp / a.replace(":", "_"), **kw) for a in addrs]


@asynccontextmanager
async def running_cluster(cfgs: Sequence[NodeConfig]) -> AsyncIterator[list[Node]]:
    """Run one node per config in a nursery; stops them all when the block exits."""
    async with trio.open_nursery() as nursery:
        nodes = [await nursery.start(run_node, c) for c in cfgs]
        yield nodes
        nursery.cancel_scope.cancel()


@contextlib.contextmanager
def threaded_cluster(cfgs: Sequence[NodeConfig], timeout: float = 30.0) -> Iterator[list[Node]]:
    """`running_cluster` in a thread of its own (its own trio loop), for blocking code: the
    nodes once they agree on a leader (RuntimeError after `timeout` s); stopped, and the
    thread joined, when the block exits."""
    ready = threading.Event()
    found: list[list[Node]] = []
    token: list[trio.lowlevel.TrioToken] = []
    stop = trio.Event()

    async def main() -> None:
        async with running_cluster(cfgs) as nodes:
            await wait_leader(nodes)
            found.append(nodes)
            token.append(trio.lowlevel.current_trio_token())
            ready.set()
            await stop.wait()

    t = threading.Thread(target=trio.run, args=(main,), name="rkv-test-cluster", daemon=True)
    t.start()
    if not ready.wait(timeout):
        raise RuntimeError(f"the cluster had no leader within {timeout:g} s")
    try:
        yield found[0]
    finally:
        trio.from_thread.run_sync(stop.set, trio_token=token[0])
        t.join(timeout)


class RestartableNode:
    """One node run in its own cancel scope inside the caller's nursery, so that a test can
    stop it (cancellation: a clean stop, everything acknowledged is already fsynced) and
    start it again from the same config, e.g. on a data dir it emptied meanwhile."""

    def __init__(self, cfg: NodeConfig) -> None:
        self.cfg = cfg
        self.node: Node | None = None
        self._scope: trio.CancelScope | None = None
        self._stopped: trio.Event | None = None

    async def start(self, nursery: trio.Nursery) -> Node:
        """Start the node in `nursery`; returns it once it is serving."""
        if self.node is not None:
            raise RuntimeError(f"{self.cfg.id} is running")
        scope = trio.CancelScope()
        stopped = trio.Event()

        async def run(task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                with scope:
                    await run_node(self.cfg, task_status=task_status)
            finally:
                stopped.set()

        self.node = await nursery.start(run)
        self._scope, self._stopped = scope, stopped
        return self.node

    async def stop(self) -> None:
        """Cancel the node and wait until it has stopped (its store closed, its port free)."""
        if self._scope is None or self._stopped is None:
            raise RuntimeError(f"{self.cfg.id} is not running")
        self._scope.cancel()
        await self._stopped.wait()
        self.node = self._scope = self._stopped = None


async def wait_leader(nodes: Sequence[Node], timeout: float = 15.0) -> Node:
    """The leader, once exactly one node leads, every given node knows it (so redirects
    work right away) and none is recovering any more (rkv.raft.recovery: a new cluster
    tolerates a fault only once its nodes may vote). Raises trio.TooSlowError after
    `timeout` seconds."""
    with trio.fail_after(timeout):
        while True:
            leaders = [n for n in nodes if n.replica.role == Role.LEADER]
            if (
                len(leaders) == 1
                and all(n.replica.leader == leaders[0].cfg.id for n in nodes)
                and not any(n.replica.raw.status().recovering for n in nodes)
            ):
                return leaders[0]
            await trio.sleep(0.02)


FloodMode = Literal["half_open", "slow"]


@dataclass(slots=True)
class FloodStats:
    """What a `flood` saw. Times are trio clock seconds."""

    opened: int = 0
    open: int = 0
    """Connections open right now."""
    connect_failures: int = 0
    closed_by_server: int = 0
    goodbyes: Counter[str] = field(default_factory=Counter)
    """Error codes of the frames the server sent before closing (auth challenges aside)."""
    longest_closed: float = 0.0
    """The longest a connection stayed open before the server closed it."""
    longest_open: float = 0.0
    """The oldest connection still open when the flood was stopped (0 if none)."""

    @property
    def longest(self) -> float:
        return max(self.longest_closed, self.longest_open)


async def flood(
    host: str,
    port: int,
    *,
    connections: int,
    mode: FloodMode = "half_open",
    promise: int = 4096,
    reopen_after: float = 0.05,
    stats: FloodStats | None = None,
    task_status: trio.TaskStatus[FloodStats] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Hold `connections` connections to host:port that never get through their handshake,
    until cancelled; `task_status.started(stats)` once all were opened (or failed) once.

    Each connection sends a frame header promising `promise` bytes and then nothing
    ("half_open"), or the same header and body one byte per second ("slow"). When the server
    closes one, it is reopened after `reopen_after` seconds, as an attacker would. Nothing a
    server says is answered, so with a cluster token these never authenticate either.
    """
    st = stats if stats is not None else FloodStats()
    header = struct.pack(">I", promise)
    first_round = trio.Semaphore(0)

    async def hold(opened: Callable[[], None]) -> None:
        t0 = trio.current_time()
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError:
            st.connect_failures += 1
            opened()
            return
        st.opened += 1
        st.open += 1
        opened()
        closed = False
        try:
            async with stream, trio.open_nursery() as n:
                if mode == "half_open":
                    n.start_soon(_send_quietly, stream, header)
                else:
                    n.start_soon(_dribble, stream, header + bytes(promise))
                await _until_closed(stream, st)
                closed = True
                st.closed_by_server += 1
                st.longest_closed = max(st.longest_closed, trio.current_time() - t0)
                n.cancel_scope.cancel()
        finally:
            st.open -= 1
            if not closed:
                st.longest_open = max(st.longest_open, trio.current_time() - t0)

    async def slot() -> None:
        first = True

        def opened() -> None:
            nonlocal first
            if first:
                first = False
                first_round.release()

        while True:
            await hold(opened)
            await trio.sleep(reopen_after)

    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(slot)
        for _ in range(connections):
            await first_round.acquire()
        task_status.started(st)


async def _send_quietly(stream: trio.abc.Stream, data: bytes) -> None:
    # closed by the server: _until_closed sees it
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        await stream.send_all(data)


async def _dribble(stream: trio.abc.Stream, data: bytes) -> None:
    """One byte per second."""
    for i in range(len(data)):
        await _send_quietly(stream, data[i : i + 1])
        await trio.sleep(1.0)


async def _until_closed(stream: trio.abc.Stream, st: FloodStats) -> None:
    """Read until the server closes (or resets); count the error codes it sent."""
    dec = FrameDecoder(1 << 20)
    try:
        while data := await stream.receive_some(65536):
            try:
                frames = dec.feed(data)
            except FrameError:
                continue
            for f in frames:
                if f.get("t") == "error":
                    st.goodbyes[str(f.get("code"))] += 1
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass


class DictTxn:
    """A dict as the state machine's kv (rkv.store.commands.KeyTxn), for fakes that run txns
    with the real semantics; revisions are not kept (every record says 1), no lease exists."""

    def __init__(self, kv: dict[bytes, bytes]) -> None:
        self.kv = kv
        self.recorder: ChangeRecorder | None = None  # records nothing

    def get(self, key: bytes) -> Record | None:
        v = self.kv.get(key)
        return None if v is None else Record(v, 1, 1, 1)

    def put(self, key: bytes, rec: Record) -> None:
        self.kv[key] = rec.value

    def delete(self, key: bytes) -> None:
        del self.kv[key]

    def keys(self, prefix: bytes) -> list[bytes]:
        return sorted(k for k in self.kv if k.startswith(prefix))

    def lease(self, lease_id: int) -> Lease | None:
        return None

    def attach(self, lease_id: int, key: bytes) -> None:
        raise AssertionError("DictTxn has no leases")

    def detach(self, lease_id: int, key: bytes) -> None:
        raise AssertionError("DictTxn has no leases")
