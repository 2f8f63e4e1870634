"""`rkv cluster`: a local N-node cluster of child `rkv serve` processes, supervised until
Ctrl+C / SIGTERM.

Owns: the supervisor's policy: the children's command lines, data dirs and logs, waiting for
a leader, reporting a child that exits, and the orderly stop on a signal (signals are
recorded and polled, never raised from the handler). Must not: manage processes itself
(rkv.procs does: start, exit codes, stop with a grace period) or run a node in this process.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

import trio
import typer

from rkv.cli.app import Exit, app, err, fail
from rkv.cli.status import print_status
from rkv.client import DEFAULT_ADDRS, Client
from rkv.config import DEFAULT_HOST, DEFAULT_PORT, format_address
from rkv.procs import Child, stop_all

RESP_OFFSET = 1000
"""A node's RESP port is its port + this, unless --resp-base-port says otherwise."""
HTTP_OFFSET = 2000
"""A node's HTTP port (health, metrics, the HTTP/JSON API) is its port + this, unless
--http-base-port says otherwise."""


def side_ports(base_port: int, nodes: int, given: int | None, offset: int, what: str) -> list[int]:
    """The ports of a second server on every node: from `given` (0: none), else next to the
    node ports at `offset` (below them when above does not fit)."""
    base = given
    if base is None:
        base = base_port + offset
        if base + nodes - 1 > 65535:
            base = max(1, base_port - offset)
    if base and base + nodes - 1 > 65535:
        fail(
            Exit.USAGE,
            f"error: the {what} ports (--{what.lower()}-base-port + --nodes) exceed 65535",
        )
    return [base + i for i in range(nodes)] if base else []


class _Stop(Exception):
    """SIGTERM/SIGINT reached the cluster supervisor."""


class _StopFlag:
    """Set by the signal handler; polled by the supervisor loops. (Raising from the handler
    could land inside a trio.run used for a status poll and break it mid-flight.)"""

    def __init__(self) -> None:
        self.signal: str | None = None

    def check(self) -> None:
        if self.signal is not None:
            raise _Stop(f"{self.signal} received")

    def sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.check()
            time.sleep(min(0.05, max(0.0, end - time.monotonic())))
        self.check()


def _tail(child: Child, lines: int = 5) -> str:
    """The last lines of a node's log, indented (for an error message)."""
    text = child.log_text(4096)
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


def _stop_children(children: list[Child], grace: float = 10.0) -> None:
    def on_kill(ch: Child) -> None:
        err(f"cluster: {ch.name} did not stop within {grace:g}s; killing it")

    stop_all(children, grace, on_kill)


def _cluster_status(addrs: list[str]) -> list[dict[str, Any]]:
    async def go() -> list[dict[str, Any]]:
        token = os.environ.get("RKV_CLUSTER_TOKEN") or None  # the children's, inherited
        async with Client(addrs, timeout=1.0, token=token) as c:
            return await c.status(timeout=1.0)

    return trio.run(go)


@app.command("cluster")
def cluster_cmd(
    nodes: int = typer.Option(3, "--nodes", "-n", min=1, max=15, help="How many nodes."),
    base_port: int = typer.Option(
        DEFAULT_PORT, "--base-port", min=1, max=65535, help="Port of the first node."
    ),
    host: str = typer.Option(DEFAULT_HOST, "--host", help="Address of every node."),
    data_dir: Path = typer.Option(  # noqa: B008
        Path("rkv-data"), "--data-dir", "-d", help="Parent of the nodes' data directories."
    ),
    startup_timeout: float = typer.Option(
        30.0, "--startup-timeout", help="Seconds to wait for a leader."
    ),
    resp_base_port: int | None = typer.Option(
        None,
        "--resp-base-port",
        min=0,
        max=65535,
        help="RESP (Redis protocol) port of the first node, the next ones follow "
        "(default: --base-port + 1000; 0: no RESP).",
        show_default=False,
    ),
    http_base_port: int | None = typer.Option(
        None,
        "--http-base-port",
        min=0,
        max=65535,
        help="HTTP port (health, metrics, the HTTP/JSON API: curl) of the first node, the next "
        "ones follow (default: --base-port + 2000; 0: no HTTP).",
        show_default=False,
    ),
) -> None:
    """Run a local N-node cluster (child `rkv serve` processes) until Ctrl+C / SIGTERM.

    Running it again with the same --data-dir recovers the same data.
    """
    if base_port + nodes - 1 > 65535:
        fail(Exit.USAGE, "error: --base-port + --nodes exceeds 65535")
    addrs = [format_address(host, base_port + i) for i in range(nodes)]
    resp_ports = side_ports(base_port, nodes, resp_base_port, RESP_OFFSET, "RESP")
    http_ports = side_ports(base_port, nodes, http_base_port, HTTP_OFFSET, "HTTP")
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(Exit.USAGE, f"error: cannot create {data_dir}: {exc.strerror or exc}")
    children: list[Child] = []
    reported: set[str] = set()  # nodes whose unexpected exit was reported

    stop_flag = _StopFlag()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop_flag.signal = signal.Signals(signum).name

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    try:
        for i, a in enumerate(addrs):
            h, p = a.rsplit(":", 1)
            safe = h.strip("[]").replace(":", "_")
            ddir = data_dir / f"{safe}_{p}"
            log_path = data_dir / f"{safe}_{p}.log"
            cmd = [
                sys.executable,
                "-m",
                "rkv",
                "serve",
                "--host",
                host,
                "--port",
                p,
                "--peers",
                ",".join(addrs),
                "--data-dir",
                str(ddir),
            ]
            if resp_ports:
                cmd += ["--resp-port", str(resp_ports[i])]
            if http_ports:
                cmd += ["--http-port", str(http_ports[i])]
            # A session of their own: Ctrl+C reaches only this supervisor, which then stops
            # every child in order (SIGTERM, wait, SIGKILL after a grace period).
            child = Child(a, cmd, log_path, new_session=True)
            child.start()
            children.append(child)
        print(f"rkv cluster: starting {nodes} nodes ({', '.join(addrs)}), data in {data_dir}/")
        if resp_ports:
            print(
                "rkv cluster: RESP (redis-cli -p PORT) on "
                + ", ".join(
                    f"{a} -> {format_address(host, rp)}"
                    for a, rp in zip(addrs, resp_ports, strict=True)
                )
            )
        if http_ports:
            print(
                "rkv cluster: HTTP (curl, /metrics) on "
                + ", ".join(
                    f"{a} -> {format_address(host, hp)}"
                    for a, hp in zip(addrs, http_ports, strict=True)
                )
            )
        leader = _wait_for_leader(children, addrs, startup_timeout, stop_flag)
        if leader is None:
            code = 1
            return
        print()
        print_status(_cluster_status(addrs))
        alist = ",".join(addrs)
        print(
            f"\nleader: {leader}. Try (in another terminal):\n"
            f"  rkv set greeting 'Hello World'\n"
            f"  rkv get greeting\n"
            f"  rkv upload photo ./some.png && rkv download photo ./copy.png\n"
            f"  rkv status\n"
            + (f"  redis-cli -p {resp_ports[0]} set greeting hi\n" if resp_ports else "")
            + (
                f"  curl {format_address(host, http_ports[0])}/v1/kv/greeting\n"
                if http_ports
                else ""
            )
            + ("" if alist == ",".join(DEFAULT_ADDRS) else f"  (with --addr {alist})\n")
            + f"Node logs: {data_dir}/*.log. Press Ctrl+C to stop the cluster."
        )
        sys.stdout.flush()
        while True:
            stop_flag.check()
            alive = 0
            for ch in children:
                rc = ch.exit_code()
                if rc is None:
                    alive += 1
                elif ch.name not in reported:
                    reported.add(ch.name)
                    err(
                        f"cluster: node {ch.name} (pid {ch.pid}) exited unexpectedly "
                        f"with code {rc}; log {ch.log_path}:\n{_tail(ch)}"
                    )
            if alive == 0:
                err("cluster: every node has exited")
                code = 1
                return
            stop_flag.sleep(0.2)
    except _Stop as stop:
        print(f"\nrkv cluster: {stop}, stopping the nodes...", flush=True)
    finally:
        # Further signals must not interrupt the orderly stop.
        for s in old:
            signal.signal(s, signal.SIG_IGN)
        _stop_children(children)
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if children:
            print("rkv cluster: stopped", flush=True)
    raise typer.Exit(code)


def _wait_for_leader(
    children: list[Child], addrs: list[str], timeout: float, stop_flag: _StopFlag
) -> str | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stop_flag.check()
        for ch in children:
            rc = ch.exit_code()
            if rc is not None:
                err(
                    f"cluster: node {ch.name} exited during startup with code {rc}; "
                    f"log {ch.log_path}:\n{_tail(ch)}"
                )
                return None
        rows = _cluster_status(addrs)
        for r in rows:
            if r["role"] == "leader":
                return str(r["addr"])
        stop_flag.sleep(0.2)
    err(f"cluster: no leader elected within {timeout:g}s (see {children[0].log_path.parent}/*.log)")
    return None
