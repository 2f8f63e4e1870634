"""Server processes of a benchmark: start, watch (CPU seconds, RSS), kill, free ports.

Owns: spawning one server process with its log in the run's temp folder, reading its CPU
time and resident memory from /proc (psutil where /proc is missing), and making sure nothing is
left running (every process started here is in `ProcessGroup`, whose close() kills what is
still alive). Must not know about any particular system (that is the drivers' job).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """n distinct ports the OS reports free right now (all held open until all are chosen)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


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


@dataclass(slots=True)
class Server:
    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    cwd: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.name} is not running")
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        if self.alive():
            raise RuntimeError(f"{self.name} already running")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it; closed below
        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,  # a Ctrl+C of the bench reaches us, not the servers
            )
        finally:
            log.close()

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def kill9(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait(5.0)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds."""
        if not self.alive():
            self.wait(0.1)
            return
        self.signal(signal.SIGTERM)
        if not self.wait(grace):
            self.kill9()

    def wait(self, timeout: float) -> bool:
        if self.proc is None:
            return True
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def log_tail(self, n: int = 20) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return ""
        return "\n".join(lines[-n:])


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
        for s in self.servers:
            s.signal(signal.SIGTERM)
        deadline = time.monotonic() + 5.0
        for s in self.servers:
            if not s.wait(max(0.05, deadline - time.monotonic())):
                s.kill9()


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in before if k in after}


def pids_cpu(pids: Sequence[tuple[str, int]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, pid in pids:
        c = cpu_seconds(pid)
        if c is not None:
            out[name] = c
    return out
