"""rkv.procs, the one process supervisor: short-lived python children started, signalled,
stopped with a grace period (killed when they ignore SIGTERM), and their exit codes."""

from __future__ import annotations

import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from rkv.procs import Child, free_ports, stop_all

# Prints "ready" once its SIGTERM disposition is set, so a test never signals it too early.
SLEEPER = "import sys, time; print('ready', flush=True); time.sleep(60)"
STUBBORN = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(60)"
)


def child(tmp_path: Path, code: str, name: str = "c") -> Child:
    return Child(name, [sys.executable, "-c", code], tmp_path / f"{name}.log", new_session=True)


def wait_ready(c: Child, times: int = 1, timeout: float = 10.0) -> None:
    """Until the log says "ready" `times` times (once per start)."""
    deadline = time.monotonic() + timeout
    while c.log_text().count("ready") < times:
        assert c.alive(), f"{c.name} exited early: {c.exit_code()}\n{c.log_tail()}"
        assert time.monotonic() < deadline, f"{c.name} never got ready"
        time.sleep(0.01)


@dataclass(frozen=True)
class Exits:
    code: str
    expected: int
    log: str


@pytest.mark.parametrize(
    "case",
    [
        Exits("print('hello')", 0, "hello"),
        Exits("import sys; print('bad', file=sys.stderr); sys.exit(3)", 3, "bad"),
        Exits("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", -signal.SIGKILL, ""),
    ],
    ids=["ok", "exit-3-stderr-logged", "killed"],
)
def test_exit_code_and_log(tmp_path: Path, case: Exits) -> None:
    c = child(tmp_path, case.code)
    assert c.exit_code() is None and not c.alive() and c.wait(0)  # never started
    c.start()
    assert c.wait(10.0)
    assert c.exit_code() == case.expected and not c.alive()
    assert case.log in c.log_tail()


@pytest.mark.parametrize(
    ("code", "grace", "sig", "clean", "expected"),
    [
        (SLEEPER, 5.0, signal.SIGTERM, True, -signal.SIGTERM),  # SIGTERM is enough
        (STUBBORN, 0.3, signal.SIGTERM, False, -signal.SIGKILL),  # ignored: killed after grace
        (STUBBORN, 5.0, signal.SIGUSR1, True, -signal.SIGUSR1),  # another first signal
    ],
    ids=["terminates", "killed-after-grace", "other-signal"],
)
def test_stop_signals_then_kills(
    tmp_path: Path, code: str, grace: float, sig: int, clean: bool, expected: int
) -> None:
    c = child(tmp_path, code)
    c.start()
    try:
        wait_ready(c)
        t0 = time.monotonic()
        assert c.stop(grace, sig) is clean
        assert time.monotonic() - t0 < grace + 5.0
        assert c.exit_code() == expected
    finally:
        c.kill()


def test_stop_all_shares_one_deadline_and_reports_kills(tmp_path: Path) -> None:
    cs = [child(tmp_path, SLEEPER, "a"), child(tmp_path, STUBBORN, "b")]
    killed: list[str] = []
    try:
        for c in cs:
            c.start()
        for c in cs:
            wait_ready(c)
        assert stop_all(cs, 0.3, lambda c: killed.append(c.name)) is False
        assert killed == ["b"]
        assert [c.exit_code() for c in cs] == [-signal.SIGTERM, -signal.SIGKILL]
    finally:
        for c in cs:
            c.kill()


def proc_state(pid: int) -> str:
    """The state letter of /proc/PID/stat (T: stopped)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rindex(")") + 2]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_stop_cont_kill_and_restart(tmp_path: Path) -> None:
    c = child(tmp_path, SLEEPER)
    c.start()
    try:
        wait_ready(c)
        with pytest.raises(RuntimeError, match="already running"):
            c.start()
        for sig, state in [(signal.SIGSTOP, "T"), (signal.SIGCONT, "S")]:
            c.signal(sig)
            deadline = time.monotonic() + 5.0
            while proc_state(c.pid) != state and time.monotonic() < deadline:
                time.sleep(0.01)
            assert proc_state(c.pid) == state and c.alive()
        c.signal(signal.SIGSTOP)
        c.kill()  # a stopped child dies of SIGKILL too
        assert c.exit_code() == -signal.SIGKILL
        c.signal(signal.SIGTERM)  # no-op once it exited
        c.start()  # a restart: same log, appended
        wait_ready(c, times=2)
        assert c.starts == 2 and c.alive()
    finally:
        c.kill()


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(5)
    assert len(set(ports)) == 5
    for p in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))
