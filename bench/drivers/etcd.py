"""etcd (Debian's etcd-server) as a 3-node local cluster, spoken to over its v3 JSON gateway.

Owns: the etcd command lines (fsync and every other setting left at etcd's defaults), the
gateway client (base64 keys/values, /v3/kv/put, /v3/kv/range with serializable=false, which is
etcd's linearizable read), and leader discovery via /v3/maintenance/status. Must not tune etcd
for the benchmark: users run it as shipped.

Series: `etcd` is loaded by bench/rawgen.py (uvloop, pre-built HTTP/1.1 requests: the
cheapest generator we have for it, issue 18); `etcd:trio` by the trio worker through `EtcdKV`
(bench/http11.py), the generator of the rounds before. The servers are the same; `connect`
(probes, failover, large files) is always `EtcdKV`.
"""

from __future__ import annotations

import base64
import contextlib
import shutil
import subprocess
from pathlib import Path
from typing import Any

import trio

from bench.drivers.base import KV, Driver
from bench.http11 import HttpConnection
from bench.procs import server
from rkv.procs import free_ports

HOST = "127.0.0.1"


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


class EtcdKV:
    def __init__(self, host: str, port: int) -> None:
        self.conn = HttpConnection(host, port)

    async def put(self, key: bytes, value: bytes) -> None:
        await self.conn.post_json("/v3/kv/put", {"key": _b64(key), "value": _b64(value)})

    async def get(self, key: bytes) -> bytes | None:
        r = await self.conn.post_json("/v3/kv/range", {"key": _b64(key), "serializable": False})
        kvs = r.get("kvs")
        if not kvs:
            return None
        return base64.b64decode(kvs[0].get("value", ""))

    async def status(self) -> dict[str, Any]:
        r: dict[str, Any] = await self.conn.post_json("/v3/maintenance/status", {})
        return r

    async def aclose(self) -> None:
        await self.conn.aclose()


class EtcdDriver(Driver):
    system = "etcd"
    configs = ("default", "trio")

    def __init__(self, config: str = "default") -> None:
        super().__init__(config)
        self._client_ports: list[int] = []

    def version(self) -> str:
        exe = shutil.which("etcd")
        if exe is None:
            return "not installed"
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
        first = (out.stdout or out.stderr).splitlines()
        return first[0].split(":", 1)[-1].strip() if first else "?"

    def durability(self) -> str:
        return "fsync of the WAL on a majority before the ack (etcd default)"

    def generator(self) -> str:
        return "trio" if self.config == "trio" else "raw"

    def client(self) -> str:
        if self.config == "trio":
            return "trio worker, bench/http11.py: HTTP/1.1 keep-alive on the v3 JSON gateway"
        from bench.rawgen import loop_name

        return (
            f"bench/rawgen.py on {loop_name()}: pre-built HTTP/1.1 keep-alive requests on the "
            "v3 JSON gateway, status + length parsed"
        )

    def start(self, workdir: Path) -> None:
        exe = shutil.which("etcd")
        if exe is None:
            raise RuntimeError("etcd is not installed: run `./dev bench setup`")
        self.workdir = workdir
        ports = free_ports(2 * self.nodes)
        self._client_ports = ports[: self.nodes]
        peer_ports = ports[self.nodes :]
        names = [f"etcd{i}" for i in range(self.nodes)]
        cluster = ",".join(f"{n}=http://{HOST}:{p}" for n, p in zip(names, peer_ports, strict=True))
        token = f"bench-{workdir.name}"
        for i, name in enumerate(names):
            c, p = self._client_ports[i], peer_ports[i]
            argv = [
                exe,
                "--name", name,
                "--data-dir", str(workdir / name),
                "--listen-client-urls", f"http://{HOST}:{c}",
                "--advertise-client-urls", f"http://{HOST}:{c}",
                "--listen-peer-urls", f"http://{HOST}:{p}",
                "--initial-advertise-peer-urls", f"http://{HOST}:{p}",
                "--initial-cluster", cluster,
                "--initial-cluster-token", token,
                "--initial-cluster-state", "new",
                "--logger", "zap",
                "--log-level", "warn",
            ]  # fmt: skip
            s = self.group.add(server(name, argv, workdir / f"{name}.log"))
            s.start()

    def addrs(self) -> list[str]:
        return [f"{HOST}:{p}" for p in self._client_ports]

    @staticmethod
    async def connect(spec: dict[str, Any], i: int) -> KV:
        addrs: list[str] = spec["addrs"]
        host, port = addrs[i % len(addrs)].rsplit(":", 1)
        return EtcdKV(host, int(port))

    async def leader(self) -> int | None:
        for i, addr in enumerate(self.addrs()):
            if not self.servers[i].alive():
                continue
            host, port = addr.rsplit(":", 1)
            kv = EtcdKV(host, int(port))
            try:
                with trio.fail_after(1):
                    st = await kv.status()
            except Exception:  # a node that does not answer is not the leader we can use
                continue
            finally:
                with contextlib.suppress(Exception):
                    await kv.aclose()
            member = st.get("header", {}).get("member_id")
            if st.get("leader") and member == st.get("leader"):
                return i
        return None
