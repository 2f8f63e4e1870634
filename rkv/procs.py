"""Child processes of a supervisor: start, watch, signal, stop; and free loopback ports.

Owns: starting one child (argv, environment, working directory, a log file that takes its
stdout and stderr, stdin from /dev/null, optionally a session and process group of its own so
that a Ctrl+C of the supervisor does not reach it), its pid, liveness and exit code, waiting
for its exit, signal delivery (SIGSTOP / SIGCONT / SIGKILL / ...), terminate-then-kill with a
grace period (one child, or many sharing one deadline), the tail of its log, and `free_ports`.
Used by `rkv cluster` (rkv.cli), the nemesis (rkv.nemesis.cluster), the benchmarks
(bench.procs) and the tests.

Must not: know what a child is (rkv, etcd, PySyncObj) or when it is ready, decide when to
start, stop or fault it, print anything, or import trio or any other rkv module (the calls
block; async callers go through trio.to_thread). `import rkv` does not load it.
"""

from __future__ import annotations

import contextlib
import os
import signal as _signal
import socket
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from time import monotonic


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """n distinct ports that were free a moment ago (all held open until all are chosen)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass(slots=True)
class Child:
    """One child process; `start()` may be called again once it has exited (a restart)."""

    name: str
    argv: Sequence[str]
    log_path: Path
    """Opened for append; the child's stdout and stderr both go there."""
    env: Mapping[str, str] | None = None
    """The whole environment (None: inherit the supervisor's)."""
    cwd: Path | None = None
    new_session: bool = False
    """A session and process group of its own: the terminal's Ctrl+C reaches only the
    supervisor, which then stops the child in its own order."""
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    starts: int = 0

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.name} was never started")
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_code(self) -> int | None:
        """The exit code (-N: killed by signal N); None while running or never started."""
        return None if self.proc is None else self.proc.poll()

    def start(self) -> None:
        if self.alive():
            raise RuntimeError(f"{self.name} is already running")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:  # the child holds its own copy of the fd
            self.proc = subprocess.Popen(
                list(self.argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=None if self.env is None else dict(self.env),
                cwd=self.cwd,
                start_new_session=self.new_session,
            )
        self.starts += 1

    def signal(self, sig: int) -> None:
        """Deliver `sig` if the child is running (a no-op otherwise)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to `timeout` seconds (None: for ever) for the exit; True once it exited
        (or was never started)."""
        if self.proc is None:
            return True
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def kill(self) -> None:
        """SIGKILL (a SIGSTOPped child dies too) and wait for the exit."""
        self.signal(_signal.SIGKILL)
        self.wait()

    def stop(self, grace: float, sig: int = _signal.SIGTERM) -> bool:
        """`sig` (SIGTERM), then SIGKILL after `grace` seconds; True if it exited within the
        grace (or was not running)."""
        return stop_all([self], grace, sig=sig)

    def log_text(self, max_bytes: int = 64 * 1024) -> str:
        """The last `max_bytes` bytes of the log, decoded ("" when there is none)."""
        try:
            with self.log_path.open("rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - max_bytes))
                return f.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 20) -> str:
        """The last `lines` lines of the log ("" when there is none)."""
        return "\n".join(self.log_text().splitlines()[-lines:])


def stop_all(
    children: Sequence[Child],
    grace: float,
    on_kill: Callable[[Child], None] | None = None,
    sig: int = _signal.SIGTERM,
) -> bool:
    """`sig` (SIGTERM) to every running child, wait for them all until one shared deadline
    `grace` seconds away, then SIGKILL (and wait for) each one still running, calling
    `on_kill(child)` first. True if every child exited within the grace."""
    for ch in children:
        ch.signal(sig)
    deadline = monotonic() + grace
    clean = True
    for ch in children:
        if not ch.wait(max(0.0, deadline - monotonic())):
            clean = False
            if on_kill is not None:
                on_kill(ch)
            ch.kill()
    return clean


__all__ = ["Child", "free_ports", "stop_all"]
