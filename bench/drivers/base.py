"""What every system under test offers the harness: a 3-node cluster and a KV client.

Owns: the `KV` client protocol (async put/get over one connection per closed-loop client) and
the `Driver` base class (start/stop/kill/restart nodes, find the leader, wait until the
cluster serves). Must not measure anything: the harness (bench.loadgen, bench.compare, ...)
does that, so that every system is measured by the same code.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
from pathlib import Path
from typing import Any, ClassVar, Protocol

import trio

from bench.procs import STOP_GRACE, ProcessGroup, Server


class KV(Protocol):
    async def put(self, key: bytes, value: bytes) -> None: ...

    async def get(self, key: bytes) -> bytes | None: ...

    async def aclose(self) -> None: ...


class NotReady(Exception):
    """The cluster did not start serving in time (the message carries the node logs)."""


class Driver:
    """One system in one configuration. A fresh `start(workdir)` gives a fresh cluster."""

    system: ClassVar[str] = "?"
    configs: ClassVar[tuple[str, ...]] = ("default",)
    nodes: int = 3

    def __init__(self, config: str = "default") -> None:
        if config not in self.configs:
            raise ValueError(f"{self.system} has no config {config!r} (have {self.configs})")
        self.config = config
        self.group = ProcessGroup()
        self.workdir: Path | None = None

    # -- identity -----------------------------------------------------------------------------
    @property
    def label(self) -> str:
        return self.system if self.config == "default" else f"{self.system}:{self.config}"

    def version(self) -> str:
        raise NotImplementedError

    def durability(self) -> str:
        """One line for the results: when an acknowledged write is on disk."""
        raise NotImplementedError

    # -- cluster control ----------------------------------------------------------------------
    def start(self, workdir: Path) -> None:
        raise NotImplementedError

    def addrs(self) -> list[str]:
        """Client addresses "host:port", node i at index i."""
        raise NotImplementedError

    def generator(self) -> str:
        """Which load generator drives this series: "trio" (bench/loadgen.py's worker through
        `connect`) or "raw" (bench/rawgen.py, the system's wire spoken directly)."""
        return "trio"

    def client(self) -> str:
        """One line for the results: the client the load generator uses."""
        return "trio worker through the driver's KV client"

    def spec(self) -> dict[str, Any]:
        """What a load-generator process needs to open clients (JSON-safe)."""
        return {
            "system": self.system,
            "config": self.config,
            "addrs": self.addrs(),
            "generator": self.generator(),
        }

    @property
    def servers(self) -> list[Server]:
        return self.group.servers

    def kill_node(self, i: int) -> None:
        self.servers[i].kill()

    def stop_node(self, i: int) -> None:
        self.servers[i].stop(STOP_GRACE)

    def restart_node(self, i: int) -> None:
        self.servers[i].start()

    def stop(self, *, remove: bool = True) -> None:
        self.group.close()
        if remove and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    @staticmethod
    async def connect(spec: dict[str, Any], i: int) -> KV:
        """Open closed-loop client number i (drivers spread clients over the nodes)."""
        raise NotImplementedError

    async def leader(self) -> int | None:
        """Index of the node that is leader now, None when none is known."""
        raise NotImplementedError

    async def wait_ready(self, timeout: float = 30.0) -> float:
        """Wait until a leader is known and a put succeeds; returns the seconds it took."""
        start = trio.current_time()
        probe = b"bench/ready/" + secrets.token_hex(4).encode()
        last: BaseException | None = None
        with trio.move_on_after(timeout):
            while True:
                for s in self.servers:
                    if s.proc is not None and not s.alive():
                        raise NotReady(f"{s.name} exited:\n{s.log_tail()}")
                try:
                    if await self.leader() is not None:
                        kv = await type(self).connect(self.spec(), 0)
                        try:
                            with trio.fail_after(5):
                                await kv.put(probe, b"1")
                        finally:
                            with contextlib.suppress(Exception):
                                await kv.aclose()
                        return trio.current_time() - start
                except Exception as e:  # any failure just means "not yet"
                    last = e
                await trio.sleep(0.1)
        logs = "\n".join(f"--- {s.name}\n{s.log_tail(10)}" for s in self.servers)
        raise NotReady(f"{self.label} not serving after {timeout}s (last error: {last!r})\n{logs}")
