"""End-to-end: real rkv node processes on loopback, killed and restarted.

Nodes are started as `python -m rkv serve ...` (or, while the CLI is absent, `python -c` calling
rkv.node.serve_main, the entry point the CLI's `serve` wraps), so these tests exercise the real
process: signal handling, exit codes, LMDB durability across SIGKILL and failover.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from rkv.net.rpc import RpcClient, RpcError
from rkv.procs import free_ports

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CID = b"e2e-client-00001"


class Proc:
    def __init__(self, addr: str, peers: list[str], data_dir: Path) -> None:
        self.addr = addr
        self.port = int(addr.rsplit(":", 1)[1])
        host = addr.rsplit(":", 1)[0]
        self.args = [
            *(sys.executable, "-m", "rkv", "serve", "--host", host, "--port", str(self.port)),
            *("--peers", ",".join(peers), "--data-dir", str(data_dir)),
        ]
        self.p: subprocess.Popen[str] | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.p = subprocess.Popen(
            self.args,
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def kill(self) -> None:
        if self.p is not None and self.p.poll() is None:
            self.p.kill()
            self.p.wait(10)

    def alive(self) -> bool:
        return self.p is not None and self.p.poll() is None


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[list[Proc]]:
    addrs = [f"127.0.0.1:{p}" for p in free_ports(3)]
    ps = [Proc(a, addrs, tmp_path / a.replace(":", "_")) for a in addrs]
    for p in ps:
        p.start()
    try:
        yield ps
    finally:
        for p in ps:
            p.kill()


async def call(port: int, frame: dict[str, Any], timeout: float = 3.0) -> dict[str, Any]:
    async with RpcClient("127.0.0.1", port, connect_timeout=1.0) as c:
        return await c.call(frame, timeout=timeout)


async def find_leader(ps: list[Proc], deadline: float, exclude: str | None = None) -> Proc:
    """Poll `status` until a live node reports itself leader (and is not `exclude`)."""
    with trio.fail_after(deadline):
        while True:
            for p in ps:
                if not p.alive() or p.addr == exclude:
                    continue
                try:
                    st = await call(p.port, {"t": "status"}, timeout=1.0)
                except RpcError:
                    continue
                if st["role"] == "leader":
                    return p
            await trio.sleep(0.05)


async def put_retrying(ps: list[Proc], key: bytes, val: bytes, seq: int, deadline: float) -> None:
    """A client's loop: try every live node until one commits the write (same seq each time)."""
    frame = {"t": "put", "c": CID, "s": seq, "k": key, "val": val}
    with trio.fail_after(deadline):
        while True:
            for p in ps:
                if not p.alive():
                    continue
                try:
                    await call(p.port, frame)
                    return
                except RpcError:
                    continue
            await trio.sleep(0.05)


async def test_leader_kill_fails_over_and_restart_keeps_data(procs: list[Proc]) -> None:
    leader = await find_leader(procs, 15)
    for i in range(10):
        await put_retrying(procs, b"k%d" % i, b"v%d" % i, i + 1, 10)
    leader.kill()
    t0 = time.monotonic()
    new = await find_leader(procs, 10, exclude=leader.addr)
    await put_retrying(procs, b"after", b"kill", 11, 10)
    assert time.monotonic() - t0 < 10  # generous: the design target is well under a second
    got = await call(new.port, {"t": "get", "k": b"k9"})
    assert got["val"] == b"v9"

    # SIGKILL everyone, restart everyone: every acknowledged write is still there.
    for p in procs:
        p.kill()
    for p in procs:
        p.start()
    await find_leader(procs, 15)
    for p in procs:
        with trio.fail_after(10):
            while True:
                try:
                    items = (await call(p.port, {"t": "scan", "p": b"", "limit": 100}))["items"]
                    break
                except RpcError:
                    await trio.sleep(0.05)
        assert dict(map(tuple, items)) == {
            **{b"k%d" % i: b"v%d" % i for i in range(10)},
            b"after": b"kill",
        }


async def test_sigterm_stops_cleanly(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    addr = f"127.0.0.1:{port}"
    p = Proc(addr, [addr], tmp_path / "solo")
    p.start()
    try:
        await find_leader([p], 15)
        await put_retrying([p], b"x", b"1", 1, 10)
        assert p.p is not None
        p.p.send_signal(signal.SIGTERM)
        assert p.p.wait(10) == 0
        p.start()  # the data dir was closed cleanly and opens again
        await find_leader([p], 15)
        assert (await call(port, {"t": "get", "k": b"x"}))["val"] == b"1"
    finally:
        p.kill()


def run_to_exit(p: Proc) -> tuple[int, str]:
    p.start()
    assert p.p is not None
    _, err = p.p.communicate(timeout=30)
    return p.p.returncode, err


def test_foreign_data_dir_is_refused(tmp_path: Path) -> None:
    a, b = free_ports(2)
    first = Proc(f"127.0.0.1:{a}", [f"127.0.0.1:{a}"], tmp_path / "d")
    first.start()
    try:
        trio.run(find_leader, [first], 15)
    finally:
        first.kill()
    # Same data dir, another cluster (another voter set, so another cluster id).
    other = Proc(f"127.0.0.1:{a}", [f"127.0.0.1:{a}", f"127.0.0.1:{b}"], tmp_path / "d")
    code, err = run_to_exit(other)
    assert code == 11
    lines = err.strip().splitlines()
    assert lines[-1].startswith("rkv serve: error:") and "cluster" in lines[-1]


def test_port_in_use_is_refused(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        p = Proc(f"127.0.0.1:{port}", [], tmp_path / "p")
        code, err = run_to_exit(p)
    assert code == 10
    last = err.strip().splitlines()[-1]
    assert last.startswith("rkv serve: error:") and str(port) in last
