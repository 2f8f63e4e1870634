"""`rkv lock` and `rkv elect` as real processes against a real 3-node cluster: the command
runs with RKV_LOCK_KEY / RKV_LOCK_REVISION and its exit code is rkv's; two concurrent
`rkv lock` never overlap (timestamps written by the commands) and get increasing tokens; a
lost lock SIGTERMs the command and exits 8; --timeout exits 3; `rkv elect` prints the
leader, hands over on SIGTERM, and the listener prints each leader."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import rkv

if TYPE_CHECKING:  # tests/e2e is not a package; these come from its conftest
    from conftest import ProcCluster, RunCli

pytestmark = pytest.mark.e2e


class Lines:
    """A child's stdout read line by line without blocking past a deadline."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self.proc, self.buf = proc, b""
        os.set_blocking(proc.stdout.fileno(), False)

    def next(self, timeout: float = 30.0) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            chunk = self.proc.stdout.read()
            if chunk:
                self.buf += chunk
                continue
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no line; exit {self.proc.poll()}; so far {self.buf!r}")
            time.sleep(0.05)
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()


def rkv_proc(addr: str, *args: str) -> subprocess.Popen[bytes]:
    from conftest import ROOT, rkv_env

    return subprocess.Popen(
        [sys.executable, "-m", "rkv", *args],
        cwd=ROOT,
        env=rkv_env(RKV_ADDR=addr),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


PY = sys.executable


def test_lock_runs_the_command_with_its_env_and_exit_code(
    shared_cluster: ProcCluster, run_cli: RunCli
) -> None:
    script = (
        'import os; print(os.environ["RKV_LOCK_KEY"], os.environ["RKV_LOCK_REVISION"]); exit(3)'
    )
    r = run_cli("lock", "cl", "--ttl", "5", "--", PY, "-c", script, addr=shared_cluster.addr)
    assert r.returncode == 3, r.stderr
    key, rev = r.stdout.decode().split()
    assert key.startswith("cl/") and len(key) == 3 + 16 and int(rev) > 0
    r = run_cli("lock", "cl", "--", PY, "-c", "pass", addr=shared_cluster.addr)
    assert (r.returncode, r.stderr) == (0, b"")
    r = run_cli("lock", "cl", "--", "/no/such/command", addr=shared_cluster.addr)
    assert r.returncode == 2 and b"No such file" in r.stderr and b"Traceback" not in r.stderr
    with rkv.connect_sync(shared_cluster.addrs) as c:
        assert c.scan("cl/") == [] and c.lease_list() == []  # released


def test_two_concurrent_locks_never_overlap(shared_cluster: ProcCluster, tmp_path: Path) -> None:
    log = tmp_path / "log"
    script = (
        "import os, time, sys\n"
        "f = open(sys.argv[1], 'a')\n"
        "rev = os.environ['RKV_LOCK_REVISION']\n"
        "f.write(f'start {time.time()} {rev}\\n'); f.flush()\n"
        "time.sleep(0.3)\n"
        "f.write(f'end {time.time()} {rev}\\n'); f.flush()\n"
    )
    procs = [
        rkv_proc(shared_cluster.addr, "lock", "ov", "--ttl", "5", "--", PY, "-c", script, str(log))
        for _ in range(4)
    ]
    try:
        for p in procs:
            _, err = p.communicate(timeout=60)
            assert p.returncode == 0, err
    finally:
        for p in procs:
            stop(p)
    rows = [line.split() for line in log.read_text().splitlines()]
    assert len(rows) == 8
    for i in range(0, 8, 2):  # start, end of one holder, then the next holder
        assert rows[i][0] == "start" and rows[i + 1][0] == "end" and rows[i][2] == rows[i + 1][2]
    times = [float(r[1]) for r in rows]
    assert times == sorted(times)
    tokens = [int(r[2]) for r in rows[::2]]
    assert tokens == sorted(tokens) and len(set(tokens)) == 4


def test_a_lost_lock_sigterms_the_command_and_exits_8(
    shared_cluster: ProcCluster, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    script = (
        "import os, signal, sys, time\n"
        "def term(*_):\n"
        "    open(sys.argv[1], 'a').write('term\\n'); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, term)\n"
        "open(sys.argv[1], 'a').write(os.environ['RKV_LOCK_KEY'] + '\\n')\n"
        "time.sleep(60)\n"
    )
    p = rkv_proc(
        shared_cluster.addr, "lock", "lost", "--ttl", "30", "--", PY, "-c", script, str(out)
    )
    try:
        deadline = time.monotonic() + 30
        while not (out.exists() and out.read_text().endswith("\n")):
            assert time.monotonic() < deadline and p.poll() is None
            time.sleep(0.05)
        key = out.read_text().split()[0]
        with rkv.connect_sync(shared_cluster.addrs) as c:
            assert c.lease_revoke(int(key.split("/")[1], 16)) is True
        _, err = p.communicate(timeout=30)
        assert p.returncode == 8, err
        assert err.startswith(b"rkv: lock lost: ") and b"Traceback" not in err
        assert out.read_text().split() == [key, "term"]
    finally:
        stop(p)


def test_lock_timeout_exits_3(shared_cluster: ProcCluster, run_cli: RunCli) -> None:
    holder = rkv_proc(
        shared_cluster.addr,
        "lock",
        "to",
        "--",
        PY,
        "-c",
        "print('in', flush=True); import time; time.sleep(60)",
    )
    try:
        assert Lines(holder).next() == "in"
        r = run_cli(
            "lock",
            "to",
            "--timeout",
            "0.5",
            "--",
            PY,
            "-c",
            "print('ran')",
            addr=shared_cluster.addr,
        )
        assert r.returncode == 3 and r.stdout == b""
        assert b"not acquired within 0.5 s" in r.stderr
        holder.send_signal(signal.SIGTERM)  # the command is stopped, the lock released
        holder.communicate(timeout=30)
        assert holder.returncode == 128 + signal.SIGTERM
        with rkv.connect_sync(shared_cluster.addrs) as c:
            assert c.scan("to/") == []
    finally:
        stop(holder)


def test_elect_prints_the_leader_and_hands_over(
    shared_cluster: ProcCluster, run_cli: RunCli
) -> None:
    a = rkv_proc(shared_cluster.addr, "elect", "el", "alpha", "--ttl", "5")
    procs = [a]
    try:
        rev_a, value = Lines(a).next().split("\t")
        assert value == "alpha" and int(rev_a) > 0
        listener = rkv_proc(shared_cluster.addr, "elect", "el", "--listen")
        procs.append(listener)
        heard = Lines(listener)
        assert heard.next() == f"{rev_a}\talpha"
        b = rkv_proc(shared_cluster.addr, "elect", "el", "beta", "--ttl", "5")
        procs.append(b)
        time.sleep(1.0)  # b campaigns behind a
        assert b.poll() is None
        a.send_signal(signal.SIGTERM)  # a resigns: b leads
        a.communicate(timeout=30)
        assert a.returncode == 0
        rev_b, value = Lines(b).next().split("\t")
        assert value == "beta" and int(rev_b) > int(rev_a)
        assert heard.next() == f"{rev_b}\tbeta"
        b.send_signal(signal.SIGINT)
        b.communicate(timeout=30)
        assert b.returncode == 0
        listener.send_signal(signal.SIGTERM)
        listener.communicate(timeout=30)
        assert listener.returncode == 0
        r = run_cli("elect", "el", "x", "--listen", addr=shared_cluster.addr)
        assert r.returncode == 2 and b"--listen takes no PROPOSAL" in r.stderr
    finally:
        for p in procs:
            stop(p)
