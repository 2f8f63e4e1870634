"""Server processes of a benchmark: start, watch (CPU seconds, RSS), kill, free ports.

Owns: the benchmark's policy over rkv.procs (every server in a session of its own, so a Ctrl+C
of the bench reaches the bench and not the servers; every server in a `ProcessGroup`, whose
close() stops what is still alive: SIGTERM, SIGKILL after 5 s), reading a process's CPU time
and resident memory from /proc (psutil where /proc is missing), and waiting for a TCP port.
Starting, signalling and stopping one process is rkv.procs's. Must not know about any
particular system (that is the drivers' job).
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rkv.procs import Child, stop_all

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (all its threads), None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode()
    except FileNotFoundError:
        return None
    except OSError:
        return _psutil_cpu(pid)
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / _CLK_TCK


def _psutil_cpu(pid: int) -> float | None:
    try:
        import psutil
    except ImportError:
        return None
    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return float(t.user + t.system)


def rss_bytes(pid: int) -> int | None:
    """Resident set size of a process in bytes, None when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except FileNotFoundError:
        return None
    return None


def wait_port(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return True
        time.sleep(0.05)
    return False


Server = Child
"""A benchmark's server process (`server()` makes one)."""

STOP_GRACE = 5.0
"""Seconds between SIGTERM and SIGKILL when a server is stopped."""


def server(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Server:
    """A server process (not started yet) in a session of its own, logging to `log_path`."""
    return Child(name, argv, log_path, env=env, cwd=cwd, new_session=True)


@dataclass(slots=True)
class ProcessGroup:
    servers: list[Server] = field(default_factory=list)

    def add(self, server: Server) -> Server:
        self.servers.append(server)
        return server

    def pids(self) -> dict[str, int]:
        return {s.name: s.pid for s in self.servers if s.alive()}

    def cpu(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for s in self.servers:
            if s.alive():
                c = cpu_seconds(s.pid)
                if c is not None:
                    out[s.name] = c
        return out

    def close(self) -> None:
        stop_all(self.servers, STOP_GRACE)


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in before if k in after}


def pids_cpu(pids: Sequence[tuple[str, int]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, pid in pids:
        c = cpu_seconds(pid)
        if c is not None:
            out[name] = c
    return out
