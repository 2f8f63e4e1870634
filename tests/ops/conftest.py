"""Shared helpers for the operations tests: in-process nodes (run_node in one trio nursery,
real LMDB, loopback TCP, HTTP on a free port) and real `python -m rkv serve` processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import rkv
from rkv.config import NodeConfig
from rkv.node import Node
from rkv.procs import Child
from rkv.testing import free_ports as free_ports
from rkv.testing import local_configs, running_cluster
from rkv.testing import wait_leader as wait_leader

ROOT = Path(__file__).resolve().parents[2]

cluster = running_cluster  # the name the tests here use


def configs(tmp: Path, n: int = 3, **kw: Any) -> list[NodeConfig]:
    kw.setdefault("http_port", 0)
    return local_configs(tmp, n, **kw)


def addrs_of(nodes: list[Node]) -> list[str]:
    return [n.cfg.id for n in nodes]


def rkv_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RKV_ADDR"}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def run_cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """`python -m rkv ARGS` as a real process (text output)."""
    return subprocess.run(
        [sys.executable, "-m", "rkv", *args],
        cwd=ROOT,
        env=rkv_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def cli(*args: str) -> Any:
    """The `rkv` CLI run in this process (typer's CliRunner): exit_code, stdout, stderr.
    Cheaper than a child process on a loaded machine; `run_cli` covers the real thing."""
    from typer.testing import CliRunner

    from rkv.cli import app

    return CliRunner().invoke(app, list(args), catch_exceptions=False)


class Proc:
    """One `python -m rkv serve` child (an rkv.procs.Child)."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.args = [sys.executable, "-m", "rkv", "serve", *args]
        self.log_path = log_path
        self.child = Child(log_path.stem, self.args, log_path, cwd=ROOT)

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self.child.proc

    def start(self) -> None:
        self.child.argv = self.args
        self.child.env = rkv_env()
        self.child.start()

    def stop(self, sig: int = signal.SIGKILL, timeout: float = 15.0) -> int | None:
        self.child.stop(timeout, sig)
        return self.child.exit_code()

    def log(self) -> str:
        return self.child.log_text(4000)


class ProcCluster:
    def __init__(self, root: Path, n: int = 3, http: bool = False) -> None:
        ports = free_ports(2 * n)
        self.addrs = [f"127.0.0.1:{p}" for p in ports[:n]]
        self.http_ports = ports[n:] if http else []
        self.nodes: dict[str, Proc] = {}
        for i, a in enumerate(self.addrs):
            safe = a.replace(":", "_")
            args = ["--port", a.rsplit(":", 1)[1], "--peers", ",".join(self.addrs)]
            args += ["--data-dir", str(root / safe)]
            if http:
                args += ["--http-port", str(self.http_ports[i])]
            self.nodes[a] = Proc(args, root / f"{safe}.log")

    @property
    def addr(self) -> str:
        return ",".join(self.addrs)

    def start(self) -> None:
        for p in self.nodes.values():
            p.start()

    def stop_all(self) -> None:
        for p in self.nodes.values():
            p.stop()

    def status(self, timeout: float = 1.0) -> list[dict[str, Any]]:
        with rkv.connect_sync(self.addrs, timeout=timeout) as c:
            return c.status(timeout=timeout)

    def wait_leader(self, timeout: float = 30.0, exclude: str | None = None) -> str:
        deadline = time.monotonic() + timeout
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            rows = [r for r in self.status() if r["addr"] != exclude]
            leaders = [r["addr"] for r in rows if r["role"] == "leader"]
            # every node still in the cluster must be up and agree (a node that is slow to
            # start would otherwise leave a two-node quorum with no slack)
            if len(leaders) == 1 and all(r["leader"] == leaders[0] for r in rows):
                return str(leaders[0])
            time.sleep(0.05)
        logs = "\n".join(f"--- {a}\n{p.log()}" for a, p in self.nodes.items())
        pytest.fail(f"no leader within {timeout}s; last status {rows}\n{logs}")


@pytest.fixture
def proc_cluster(tmp_path: Path) -> Iterator[ProcCluster]:
    c = ProcCluster(tmp_path, 3, http=True)
    c.start()
    try:
        c.wait_leader()
        yield c
    finally:
        c.stop_all()
