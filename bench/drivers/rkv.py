"""rkv as 3 `python -m rkv serve` processes with fresh data dirs, spoken to via rkv.connect.

Series: `rkv` is loaded through rkv's own client (what users run); `rkv:raw` by
bench/rawgen.py writing rkv's frames directly (the cheapest generator we have for rkv, to
read how much of a point is the client library). The servers are the same.

Owns: the rkv command lines and the adapter from the rkv async client to the bench `KV`
protocol; leader discovery through each node's status. Must not reach into rkv internals:
only the documented client API and CLI (docs/contracts.md, README).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

from bench.drivers.base import KV, Driver
from bench.procs import server
from rkv.procs import free_ports

HOST = "127.0.0.1"


class RkvKV:
    def __init__(self, stack: contextlib.AsyncExitStack, client: Any) -> None:
        self._stack = stack
        self.client = client

    async def put(self, key: bytes, value: bytes) -> None:
        await self.client.put(key, value)

    async def get(self, key: bytes) -> bytes | None:
        v = await self.client.get(key)
        return None if v is None else bytes(v)

    async def aclose(self) -> None:
        await self._stack.aclose()


class RkvDriver(Driver):
    system = "rkv"
    configs = ("default", "raw")

    def __init__(self, config: str = "default") -> None:
        super().__init__(config)
        self._ports: list[int] = []
        self.http_ports: list[int] = []
        """Set by start() when `metrics` is on: node i serves /metrics on http_ports[i]."""
        self.metrics = False
        """Start every node with --http-port (for commands that watch the nodes' metrics)."""
        self.extra_args: list[str] = []
        """More `rkv serve` options for every node (e.g. --snapshot-entries)."""
        self.resp = False
        """Start every node with --resp-port (for commands that drive rkv through RESP)."""
        self.resp_ports: list[int] = []
        """Set by start() when `resp` is on: node i speaks RESP on resp_ports[i]."""
        self.env: dict[str, str] | None = None
        """The nodes' whole environment (None: the bench's own), e.g. with RKV_STAGE_TIMES."""
        self.cwd: Path | None = None
        """The nodes' working directory (None: the bench's): `-m rkv` loads rkv from there."""

    def version(self) -> str:
        import rkv

        return str(getattr(rkv, "__version__", "?"))

    def durability(self) -> str:
        return "fsync of log entries on a majority before the ack (LMDB write txn)"

    def generator(self) -> str:
        return "raw" if self.config == "raw" else "trio"

    def client(self) -> str:
        if self.config == "raw":
            from bench.rawgen import loop_name

            return (
                f"bench/rawgen.py on {loop_name()}: rkv's frames (length + msgpack) written "
                "directly, write sessions as rkv's client; follows the leader hint of a write"
            )
        return "trio worker through rkv.connect (rkv's own client, what users run)"

    def start(self, workdir: Path) -> None:
        self.workdir = workdir
        n = self.nodes
        ports = free_ports(n * (1 + int(self.metrics) + int(self.resp)))
        self._ports = ports[:n]
        rest = ports[n:]
        self.http_ports = rest[:n] if self.metrics else []
        self.resp_ports = rest[-n:] if self.resp else []
        addrs = self.addrs()
        for i, port in enumerate(self._ports):
            peers = ",".join(a for j, a in enumerate(addrs) if j != i)
            argv = [
                sys.executable, "-m", "rkv", "serve",
                "--host", HOST,
                "--port", str(port),
                "--peers", peers,
                "--data-dir", str(workdir / f"rkv{i}"),
                *self.extra_args,
            ]  # fmt: skip
            if self.metrics:
                argv += ["--http-port", str(self.http_ports[i])]
            if self.resp:
                argv += ["--resp-port", str(self.resp_ports[i])]
            name = f"rkv{i}"
            s = self.group.add(
                server(name, argv, workdir / f"{name}.log", env=self.env, cwd=self.cwd)
            )
            s.start()

    def addrs(self) -> list[str]:
        return [f"{HOST}:{p}" for p in self._ports]

    def data_dir(self, i: int) -> Path:
        assert self.workdir is not None
        return self.workdir / f"rkv{i}"

    def metrics_url(self, i: int) -> str:
        if not self.http_ports:
            raise RuntimeError("start the driver with metrics = True to scrape /metrics")
        return f"http://{HOST}:{self.http_ports[i]}/metrics"

    @staticmethod
    async def connect(spec: dict[str, Any], i: int) -> KV:
        import rkv

        addrs: list[str] = list(spec["addrs"])
        # Client i starts at node i % n so that reads spread like the other systems' clients.
        k = i % len(addrs)
        # A probe (bench/scale.py's "first answered get") retries every 10-20 ms like the other
        # drivers' probes, instead of the client's default backoff (50 ms doubling to 1 s),
        # which would measure the backoff rather than the restart.
        opts = {"backoff_base": 0.01, "backoff_max": 0.02} if spec.get("probe") else {}
        stack = contextlib.AsyncExitStack()
        try:
            client = await stack.enter_async_context(rkv.connect(addrs[k:] + addrs[:k], **opts))
        except BaseException:
            await stack.aclose()
            raise
        return RkvKV(stack, client)

    async def leader(self) -> int | None:
        import rkv

        addrs = self.addrs()
        alive = [a for i, a in enumerate(addrs) if self.servers[i].alive()]
        if not alive:
            return None
        async with rkv.connect(alive, timeout=2.0) as client:
            rows = await client.status(timeout=1.0)
        for row in rows:
            if row.get("role") == "leader" and row.get("addr") in addrs:
                i = addrs.index(row["addr"])
                if self.servers[i].alive():
                    return i
        return None

    async def upload_file(self, key: bytes, path: Path) -> None:
        """rkv's own file API (chunked, atomic commit, sha256), as a user would call it."""
        import rkv

        async with rkv.connect(self.addrs(), timeout=120.0) as client:
            await client.upload(key, path)

    async def download_file(self, key: bytes, dest: Path) -> None:
        import rkv

        async with rkv.connect(self.addrs(), timeout=120.0) as client:
            await client.download(key, dest)
