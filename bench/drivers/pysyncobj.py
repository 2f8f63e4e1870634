"""PySyncObj as 3 local processes (bench.pso_server), spoken to over their tiny TCP front-end.

Owns: the command lines of the 3 nodes, the front-end client (4-byte length + msgpack frames,
one request at a time per connection) and leader discovery via the front-end's status op.
Configs: "default" (SyncObjConf as shipped: in-memory journal, batched appends), "nobatch"
(appendEntriesUseBatch=False, its fastest closed-loop setting) and "journal" (file journal and
dump, to survive restarts). No config fsyncs: PySyncObj has no fsync at all.
"""

from __future__ import annotations

import contextlib
import struct
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import msgpack
import trio

from bench.drivers.base import KV, Driver
from bench.procs import server
from rkv.procs import free_ports

HOST = "127.0.0.1"
MAX_FRAME = 64 << 20


class PsoError(Exception):
    pass


class PsoKV:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._stream: trio.SocketStream | None = None
        self._buf = bytearray()

    async def _call(self, op: str, key: bytes, value: bytes | None) -> Any:
        if self._stream is None:
            self._stream = await trio.open_tcp_stream(self.host, self.port)
            self._buf.clear()
        stream = self._stream
        body = msgpack.packb([op, key, value], use_bin_type=True)
        try:
            await stream.send_all(struct.pack(">I", len(body)) + body)
            while len(self._buf) < 4:
                await self._fill(stream)
            (n,) = struct.unpack(">I", self._buf[:4])
            if n > MAX_FRAME:
                raise PsoError("reply frame too large")
            while len(self._buf) < 4 + n:
                await self._fill(stream)
            ok, val = msgpack.unpackb(bytes(self._buf[4 : 4 + n]), raw=False)
            del self._buf[: 4 + n]
        except BaseException:
            await trio.aclose_forcefully(stream)
            self._stream = None
            raise
        if not ok:
            raise PsoError(str(val))
        return val

    async def _fill(self, stream: trio.SocketStream) -> None:
        chunk = await stream.receive_some(256 * 1024)
        if not chunk:
            raise ConnectionError("pysyncobj front-end closed the connection")
        self._buf += chunk

    async def put(self, key: bytes, value: bytes) -> None:
        await self._call("put", key, value)

    async def get(self, key: bytes) -> bytes | None:
        v = await self._call("get", key, None)
        return None if v is None else bytes(v)

    async def status(self) -> dict[str, Any]:
        st: dict[str, Any] = await self._call("status", b"", None)
        return st

    async def aclose(self) -> None:
        if self._stream is not None:
            s, self._stream = self._stream, None
            await s.aclose()


class PySyncObjDriver(Driver):
    system = "pysyncobj"
    configs = ("default", "nobatch", "journal")

    def __init__(self, config: str = "default") -> None:
        super().__init__(config)
        self._front: list[int] = []
        self._raft: list[int] = []

    def version(self) -> str:
        try:
            return metadata.version("pysyncobj")
        except metadata.PackageNotFoundError:
            return "not installed"

    def durability(self) -> str:
        if self.config == "journal":
            return "none: journal written through mmap, never fsynced"
        return "none: log kept in memory only (PySyncObj never fsyncs)"

    def start(self, workdir: Path) -> None:
        self.workdir = workdir
        ports = free_ports(2 * self.nodes)
        self._raft, self._front = ports[: self.nodes], ports[self.nodes :]
        raft_addrs = [f"{HOST}:{p}" for p in self._raft]
        for i in range(self.nodes):
            partners = ",".join(a for j, a in enumerate(raft_addrs) if j != i)
            argv = [
                sys.executable, "-m", "bench.pso_server",
                "--self-addr", raft_addrs[i],
                "--partners", partners,
                "--front-port", str(self._front[i]),
                "--config", self.config,
                "--data-dir", str(workdir / f"pso{i}"),
            ]  # fmt: skip
            name = f"pso{i}"
            s = self.group.add(server(name, argv, workdir / f"{name}.log", cwd=_repo_root()))
            s.start()

    def addrs(self) -> list[str]:
        return [f"{HOST}:{p}" for p in self._front]

    @staticmethod
    async def connect(spec: dict[str, Any], i: int) -> KV:
        addrs: list[str] = spec["addrs"]
        host, port = addrs[i % len(addrs)].rsplit(":", 1)
        return PsoKV(host, int(port))

    async def leader(self) -> int | None:
        raft_addrs = [f"{HOST}:{p}" for p in self._raft]
        for i, addr in enumerate(self.addrs()):
            if not self.servers[i].alive():
                continue
            host, port = addr.rsplit(":", 1)
            kv = PsoKV(host, int(port))
            try:
                with trio.fail_after(1):
                    st = await kv.status()
            except Exception:  # a node that does not answer cannot tell us the leader
                continue
            finally:
                with contextlib.suppress(Exception):
                    await kv.aclose()
            leader = st.get("leader")
            if leader in raft_addrs and self.servers[raft_addrs.index(leader)].alive():
                return raft_addrs.index(leader)
        return None


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]
