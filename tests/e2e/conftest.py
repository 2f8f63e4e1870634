"""Shared e2e fixtures: N real `python -m rkv serve` processes on free loopback ports.

`cluster_factory(n)` starts a cluster in a fresh tmp data dir and returns a `ProcCluster`;
every process it started is SIGKILLed at the end of the test (or module, for the shared
`shared_cluster`). Node output goes to a log file per node, shown when a test fails to find
a leader. Nothing here talks Raft: the only client is the public `rkv` client.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import rkv
from rkv.procs import Child, free_ports

ROOT = Path(__file__).resolve().parents[2]


def free_port_range(n: int) -> int:
    """A base port b such that b .. b+n-1 were all free (for `rkv cluster --base-port`)."""
    for _ in range(100):
        base = free_ports(1)[0]
        if base + n > 65535:
            continue
        socks: list[socket.socket] = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


def rkv_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RKV_ADDR"}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


class NodeProc:
    """One `python -m rkv serve` child process (an rkv.procs.Child)."""

    def __init__(self, addr: str, peers: list[str], data_dir: Path, log_path: Path) -> None:
        self.addr = addr
        host, port = addr.rsplit(":", 1)
        self.data_dir = data_dir
        self.log_path = log_path
        self.args = [
            sys.executable,
            "-m",
            "rkv",
            "serve",
            "--host",
            host,
            "--port",
            port,
            "--peers",
            ",".join(peers),
            "--data-dir",
            str(data_dir),
        ]
        self.child = Child(addr, self.args, log_path, cwd=ROOT)

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self.child.proc

    def start(self) -> None:
        assert not self.alive(), f"{self.addr} is already running"
        self.child.argv = self.args  # a test may swap the command line
        self.child.env = rkv_env()
        self.child.start()

    def alive(self) -> bool:
        return self.child.alive()

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 15.0) -> int | None:
        """Send `sig` and wait for the exit (SIGKILL after `timeout`); returns the exit code
        (None if never started)."""
        self.child.stop(timeout, sig)
        return self.child.exit_code()

    def log(self) -> str:
        return self.child.log_text(3000)


class ProcCluster:
    def __init__(self, root: Path, n: int) -> None:
        self.addrs = [f"127.0.0.1:{p}" for p in free_ports(n)]
        self.root = root
        self.nodes = [
            NodeProc(a, self.addrs, root / a.replace(":", "_"), root / f"{a.replace(':', '_')}.log")
            for a in self.addrs
        ]

    @property
    def addr(self) -> str:
        """All addresses, comma separated (for --addr / RKV_ADDR)."""
        return ",".join(self.addrs)

    def node(self, addr: str) -> NodeProc:
        return next(n for n in self.nodes if n.addr == addr)

    def start(self) -> None:
        for n in self.nodes:
            if not n.alive():
                n.start()

    def kill_all(self, sig: int = signal.SIGKILL) -> None:
        for n in self.nodes:
            n.kill(sig)

    def status(self, timeout: float = 1.0) -> list[dict[str, Any]]:
        with rkv.connect_sync(self.addrs, timeout=timeout) as c:
            return c.status(timeout=timeout)

    def wait_leader(self, timeout: float = 30.0, exclude: str | None = None) -> str:
        """The address of the node that reports itself leader (polls until `timeout`)."""
        deadline = time.monotonic() + timeout
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            for n in self.nodes:
                rc = None if n.proc is None else n.proc.poll()
                if rc not in (None, 0, -signal.SIGKILL, -signal.SIGTERM):
                    pytest.fail(f"{n.addr} exited with {rc}:\n{n.log()}")
            rows = self.status()
            leaders = [r["addr"] for r in rows if r["role"] == "leader" and r["addr"] != exclude]
            if leaders:
                return str(leaders[0])
            time.sleep(0.1)
        logs = "\n".join(f"--- {n.addr}\n{n.log()}" for n in self.nodes)
        pytest.fail(f"no leader within {timeout}s; last status {rows}\n{logs}")

    def followers(self, leader: str) -> list[str]:
        return [a for a in self.addrs if a != leader]


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[Callable[[int], ProcCluster]]:
    made: list[ProcCluster] = []

    def make(n: int = 3) -> ProcCluster:
        root = tmp_path / f"cluster{len(made)}"
        root.mkdir()
        c = ProcCluster(root, n)
        made.append(c)
        c.start()
        return c

    try:
        yield make
    finally:
        for c in made:
            c.kill_all()


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcCluster]:
    """A 3-node cluster for a whole module's read-mostly tests (leader elected)."""
    c = ProcCluster(tmp_path_factory.mktemp("shared"), 3)
    c.start()
    try:
        c.wait_leader()
        yield c
    finally:
        c.kill_all()


RunCli = Callable[..., "subprocess.CompletedProcess[bytes]"]


@pytest.fixture
def run_cli() -> RunCli:
    """run_cli(*args, addr=None, timeout=60) runs `python -m rkv ARGS` as a real process
    (RKV_ADDR set to `addr` when given) and returns the CompletedProcess (bytes)."""

    def run(
        *args: str, addr: str | None = None, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[bytes]:
        env = rkv_env(RKV_ADDR=addr) if addr is not None else rkv_env()
        return subprocess.run(
            [sys.executable, "-m", "rkv", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    return run


@pytest.fixture
def port_range() -> Callable[[int], int]:
    """port_range(n): a base port with n free consecutive ports after it."""
    return free_port_range


def wait_for_line(proc: subprocess.Popen[bytes], needle: bytes, timeout: float) -> bytes:
    """Read proc's stdout until a line contains `needle`; everything read so far."""
    assert proc.stdout is not None
    seen = b""
    deadline = time.monotonic() + timeout
    os.set_blocking(proc.stdout.fileno(), False)
    while time.monotonic() < deadline:
        chunk = proc.stdout.read()
        if chunk:
            seen += chunk
            if needle in seen:
                return seen
        elif proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"no {needle!r} within {timeout}s; output so far:\n{seen.decode()}")
