"""In-process clusters for tests and experiments (in the spirit of trio.testing).

Owns: building the configs of an N-node local cluster, running
its nodes inside one trio nursery, and waiting until they agree on a leader. Must not: be
imported by the product itself (only by tests, benchmarks and the nemesis).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from rkv.config import NodeConfig
from rkv.node import Node, run_node
from rkv.procs import free_ports as free_ports
from rkv.raft.types import Role


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
    """The leader, once exactly one node leads and every given node knows it (so redirects
    work right away). Raises trio.TooSlowError after `timeout` seconds."""
    with trio.fail_after(timeout):
        while True:
            leaders = [n for n in nodes if n.replica.role == Role.LEADER]
            if len(leaders) == 1 and all(n.replica.leader == leaders[0].cfg.id for n in nodes):
                return leaders[0]
            await trio.sleep(0.02)
