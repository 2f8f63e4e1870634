"""Real `python -m rkv serve` processes for the nemesis, and the faults it can inflict on them.

Owns: one data dir and one log file per node, the argv and environment that start a node,
when to SIGKILL / SIGSTOP / SIGCONT it (the process itself is an rkv.procs.Child), restart from
the same data dir, partitions and status / stale-read probes over raw RPC.
Two kinds of network: by default free loopback ports, nodes started with
RKV_FAULT_INJECTION=1 and partitions through their hooks (`{"t": "fault"}` requests); or a
`NodeNetwork` (rkv.nemesis.netns.Network for `--netns`), which gives the addresses, the argv
prefix that starts a node in its namespace, and makes partitions and slow links in the
kernel, and then nodes run without fault injection. Must not: decide what to inject or when
(rkv.nemesis.faults), or judge results (rkv.nemesis.check). Every process it started is
killed by `close()`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import trio

import rkv
from rkv.config import parse_address
from rkv.net.rpc import ConnectionLost, RemoteError, RpcClient, RpcTimeout
from rkv.procs import Child, free_ports
from rkv.protocol import FaultRequest, StatusRequest

FAULT_ENV = "RKV_FAULT_INJECTION"
SNAPSHOT_ENTRIES_ENV = "RKV_NEMESIS_SNAPSHOT_ENTRIES"
SNAPSHOT_KEEP_ENV = "RKV_NEMESIS_SNAPSHOT_KEEP"
WATCH_HISTORY_ENV = "RKV_NEMESIS_WATCH_HISTORY"
"""Read by `python -m rkv.nemesis.serve` (small snapshot and watch window tunables)."""
_PKG_ROOT = Path(rkv.__file__).resolve().parent.parent
RPC_ERRORS = (ConnectionLost, RpcTimeout, RemoteError, OSError, trio.TooSlowError)


async def rpc_call(addr: str, frame: dict[str, Any], timeout: float = 2.0) -> dict[str, Any]:
    """One request on a fresh connection (raises one of RPC_ERRORS)."""
    host, port = parse_address(addr)
    with trio.fail_after(timeout + 1.0):
        async with RpcClient(host, port, connect_timeout=timeout, timeout=timeout) as c:
            reply = await c.call(frame, timeout=timeout)
    return reply


class NodeNetwork(Protocol):
    """Where nodes live and how links between them fail (rkv.nemesis.netns.Network)."""

    @property
    def addrs(self) -> list[str]: ...

    def launcher(self, addr: str) -> tuple[str, ...]:
        """argv prefix that runs the node's command inside its network."""
        ...

    def set_drops(self, addr: str, drop_to: Sequence[str], drop_from: Sequence[str]) -> None:
        """addr loses its packets to drop_to and those from drop_from (replaces addr's sets)."""
        ...

    def set_slow(self, links: Iterable[tuple[str, str]], delay: float) -> None:
        """Delay packets from src to dst for each (src, dst) (replaces the slow links)."""
        ...

    def heal(self) -> None: ...


@dataclass(slots=True)
class NodeProc:
    """One node process; `paused` tracks SIGSTOP so nobody waits on a frozen node."""

    addr: str
    peers: list[str]
    data_dir: Path
    log_path: Path
    command: tuple[str, ...] = ()
    """The argv before "serve" (default: this Python's `-m rkv`)."""
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment variables for the process."""
    launcher: tuple[str, ...] = ()
    """argv prefix that starts the process elsewhere (`ip netns exec NS`)."""
    fault_hooks: bool = True
    """Start with RKV_FAULT_INJECTION=1; False removes the variable even if inherited."""
    paused: bool = False
    expected_down: bool = True
    """False while the node should be running: an exit then is a crash (a bug)."""
    child: Child = field(init=False)
    """The process itself (rkv.procs): start, signals, exit code, log."""

    def __post_init__(self) -> None:
        self.child = Child(self.addr, self.args, self.log_path)

    @property
    def args(self) -> list[str]:
        host, port = parse_address(self.addr)
        return [
            *self.launcher,
            *(self.command or (sys.executable, "-m", "rkv")),
            "serve",
            "--host",
            host,
            "--port",
            str(port),
            "--id",
            self.addr,
            "--peers",
            ",".join(self.peers),
            "--data-dir",
            str(self.data_dir),
        ]

    @property
    def starts(self) -> int:
        return self.child.starts

    def alive(self) -> bool:
        return self.child.alive()

    def exit_code(self) -> int | None:
        """None while running (or never started); -N after signal N."""
        return self.child.exit_code()

    def start(self) -> None:
        env = {**os.environ, **self.env}
        if self.fault_hooks:
            env[FAULT_ENV] = "1"
        else:
            env.pop(FAULT_ENV, None)
        pp = env.get("PYTHONPATH")
        env["PYTHONPATH"] = str(_PKG_ROOT) + (os.pathsep + pp if pp else "")
        self.child.argv = self.args
        self.child.env = env
        self.child.start()
        self.paused = False

    def signal(self, sig: int) -> None:
        self.child.signal(sig)

    async def wait(self) -> None:
        """Until the process exits (at once if it never started)."""
        await trio.to_thread.run_sync(self.child.wait)

    def log_tail(self, n: int = 4000) -> str:
        """The last n characters (bytes) of the node's log."""
        return self.child.log_text(n)


@dataclass
class ProcessCluster:
    """n nodes under `root`; use as `async with ProcessCluster(root, 3) as c:`."""

    root: Path
    n: int
    command: tuple[str, ...] = ()
    """The argv before "serve" for every node (default: this Python's `-m rkv`); tests use
    it to run a deliberately broken node and prove the nemesis notices."""
    env: dict[str, str] = field(default_factory=dict)
    network: NodeNetwork | None = None
    """None: loopback ports and the nodes' fault hooks. Otherwise the network gives the
    addresses and makes the partitions, and nodes run without fault injection."""
    nodes: list[NodeProc] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError("a cluster needs at least one node")
        if self.network is None:
            addrs = [f"127.0.0.1:{p}" for p in free_ports(self.n)]
        else:
            addrs = list(self.network.addrs)
            if len(addrs) != self.n:
                raise ValueError(f"the network has {len(addrs)} addresses for {self.n} nodes")
        self.root.mkdir(parents=True, exist_ok=True)
        self.nodes = [
            NodeProc(
                a,
                addrs,
                self.root / a.replace(":", "_"),
                self.root / f"{a.replace(':', '_')}.log",
                command=self.command,
                env=dict(self.env),
                launcher=() if self.network is None else self.network.launcher(a),
                fault_hooks=self.network is None,
            )
            for a in addrs
        ]

    @property
    def addrs(self) -> list[str]:
        return [n.addr for n in self.nodes]

    def node(self, addr: str) -> NodeProc:
        return next(n for n in self.nodes if n.addr == addr)

    async def __aenter__(self) -> ProcessCluster:
        for n in self.nodes:
            n.start()
            n.expected_down = False
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        with trio.CancelScope(shield=True):
            for n in self.nodes:
                n.expected_down = True
                n.signal(signal.SIGCONT)
                n.signal(signal.SIGKILL)
            for n in self.nodes:
                await n.wait()

    # -- process faults ----------------------------------------------------------------------

    async def kill(self, addr: str) -> None:
        n = self.node(addr)
        n.expected_down = True
        n.signal(signal.SIGKILL)
        await n.wait()
        n.paused = False

    async def restart(self, addr: str, attempts: int = 20) -> None:
        """Start a stopped node again from its data dir (retries while its port is busy)."""
        n = self.node(addr)
        for _ in range(attempts):
            if n.alive():
                return
            n.start()
            if await self.wait_serving(addr, timeout=10.0):
                n.expected_down = False
                return
            # Port still held by the old incarnation (or slow start): try again.
            n.signal(signal.SIGKILL)
            await n.wait()
            await trio.sleep(0.2)
        raise RuntimeError(f"{addr} did not restart:\n{n.log_tail()}")

    async def wait_serving(self, addr: str, timeout: float) -> bool:
        n = self.node(addr)
        with trio.move_on_after(timeout):
            while n.alive():
                try:
                    await rpc_call(addr, StatusRequest().to_frame(), timeout=0.5)
                    return True
                except RPC_ERRORS:
                    await trio.sleep(0.05)
        return False

    def pause(self, addr: str) -> None:
        n = self.node(addr)
        n.signal(signal.SIGSTOP)
        n.paused = True

    def resume(self, addr: str) -> None:
        n = self.node(addr)
        n.signal(signal.SIGCONT)
        n.paused = False

    def crashed(self) -> list[NodeProc]:
        """Nodes that exited although they should be running (a node bug)."""
        return [n for n in self.nodes if not n.expected_down and not n.alive()]

    # -- partitions --------------------------------------------------------------------------

    async def set_fault(
        self, addr: str, drop_to: Sequence[str] = (), drop_from: Sequence[str] = ()
    ) -> bool:
        """Install drop sets on one node; False if it could not be reached. In a network
        (netns) the kernel drops the packets, whether the node runs, is frozen or is dead."""
        net = self.network
        if net is not None:
            await trio.to_thread.run_sync(net.set_drops, addr, list(drop_to), list(drop_from))
            return True
        n = self.node(addr)
        if not n.alive() or n.paused:
            return False
        frame = FaultRequest(tuple(drop_to), tuple(drop_from)).to_frame()
        try:
            await rpc_call(addr, frame, timeout=2.0)
        except RPC_ERRORS:
            return False
        return True

    async def set_slow(self, links: Sequence[tuple[str, str]], delay: float) -> None:
        """Delay every packet from src to dst, for each (src, dst) (a network only)."""
        if self.network is None:
            raise RuntimeError("slow links need a network (--netns)")
        await trio.to_thread.run_sync(self.network.set_slow, list(links), delay)

    async def heal(self) -> None:
        """Clear every reachable node's drop sets (a restarted node starts healed), or every
        cut and slow link of the network."""
        if self.network is not None:
            await trio.to_thread.run_sync(self.network.heal)
            return
        async with trio.open_nursery() as nursery:
            for n in self.nodes:
                nursery.start_soon(self.set_fault, n.addr)

    # -- probes ------------------------------------------------------------------------------

    async def statuses(self, timeout: float = 1.0) -> dict[str, dict[str, Any]]:
        """Status of every running, unpaused node that answered in time."""
        out: dict[str, dict[str, Any]] = {}

        async def one(addr: str) -> None:
            with contextlib.suppress(*RPC_ERRORS):
                out[addr] = await rpc_call(addr, StatusRequest().to_frame(), timeout=timeout)

        async with trio.open_nursery() as nursery:
            for n in self.nodes:
                if n.alive() and not n.paused:
                    nursery.start_soon(one, n.addr)
        return out

    async def leader(self) -> str | None:
        """The address of the node that says it leads in the highest term, if any."""
        best: tuple[int, str] | None = None
        for addr, st in (await self.statuses()).items():
            if st.get("role") == "leader":
                term = int(st.get("term") or 0)
                if best is None or term > best[0]:
                    best = (term, addr)
        return None if best is None else best[1]
