"""The `rkv` command line against real node processes.

Most cases run the typer app in-process (CliRunner: same code path, fast); the ones about the
process itself (python -m rkv, RKV_ADDR, `rkv serve` as the README shows it, `rkv cluster`
and its signal handling) run real subprocesses.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import trio
from typer.testing import CliRunner

import rkv
from rkv.cli import Exit, app, exit_code_for
from rkv.http import http_get

if TYPE_CHECKING:  # tests/e2e is not a package; these come from its conftest
    from conftest import ProcCluster, RunCli

pytestmark = pytest.mark.e2e

STATUS_KEYS = {
    "id",
    "addr",
    "role",
    "term",
    "leader",
    "commit",
    "applied",
    "last_index",
    "degraded",
    "recovering",
}


def closed_addr() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def cli(addr: str | None, *args: str) -> Any:
    pre = ["--addr", addr] if addr is not None else []
    return CliRunner().invoke(app, [*pre, "--timeout", "20", *args])


def test_every_client_command(shared_cluster: ProcCluster, tmp_path: Path) -> None:
    a = shared_cluster.addr
    r = cli(a, "set", "greeting", "Hello World")
    assert (r.exit_code, r.stdout) == (0, "OK\n"), r.stderr
    r = cli(a, "get", "greeting")
    assert (r.exit_code, r.stdout) == (0, "Hello World\n")
    for node in shared_cluster.addrs:  # any single node serves reads, also --stale ones
        assert cli(f"http://{node}", "get", "greeting").stdout == "Hello World\n"
        assert cli(node, "get", "--stale", "greeting").exit_code == 0
    assert cli(a, "cas", "greeting", "Hi", "--expect", "Hello World").exit_code == 0
    assert cli(a, "cas", "fresh", "1", "--absent").exit_code == 0
    assert cli(a, "set", "scan/b", "2").exit_code == 0
    assert cli(a, "set", "scan/a", "1").exit_code == 0
    r = cli(a, "scan", "scan/")
    assert (r.exit_code, r.stdout) == (0, "scan/a\t1\nscan/b\t2\n")
    r = cli(a, "scan", "scan/", "--limit", "1", "--json")
    assert json.loads(r.stdout) == [{"key": "scan/a", "value": "1"}]
    assert cli(a, "delete", "scan/a").stdout == "OK\n"
    assert cli(a, "get", "greeting").stdout == "Hi\n"

    data = os.urandom(1_500_000)
    (tmp_path / "in.bin").write_bytes(data)
    r = cli(a, "upload", "blob", str(tmp_path / "in.bin"))
    assert r.exit_code == 0 and "1500000 bytes, 2 chunks" in r.stdout, r.stderr
    r = cli(a, "download", "blob", str(tmp_path / "out.bin"))
    assert r.exit_code == 0 and "(verified)" in r.stdout, r.stderr
    assert (tmp_path / "out.bin").read_bytes() == data

    r = cli(a, "status", "--json")
    assert r.exit_code == 0
    rows = json.loads(r.stdout)
    assert sorted(row["addr"] for row in rows) == sorted(shared_cluster.addrs)
    assert all(set(row) == STATUS_KEYS for row in rows)
    assert all(row["degraded"] is None for row in rows)
    assert all(row["recovering"] is False for row in rows)
    assert sorted(row["role"] for row in rows) == ["follower", "follower", "leader"]
    leader = next(row["addr"] for row in rows if row["role"] == "leader")
    assert all(row["leader"] == leader for row in rows)
    r = cli(a, "status")
    assert r.exit_code == 0
    assert all(addr in r.stdout for addr in shared_cluster.addrs) and "leader" in r.stdout


# (args, expected exit code, expected stderr fragment); "{a}" is the cluster, "{dead}" a
# closed port, "{tmp}" the test's tmp dir.
EXIT_CASES = [
    (["--addr", "{a}", "get", "no-such-key"], Exit.NOT_FOUND, "not found: no-such-key"),
    (["--addr", "{a}", "delete", "no-such-key"], Exit.NOT_FOUND, "not found"),
    (
        ["--addr", "{a}", "cas", "exit/k", "x", "--expect", "wrong"],
        Exit.NOT_FOUND,
        "compare failed",
    ),
    (["--addr", "{a}", "cas", "exit/k", "x", "--absent"], Exit.NOT_FOUND, "compare failed"),
    (["--addr", "{a}", "cas", "exit/k", "x"], Exit.USAGE, "--expect OLD or --absent"),
    (
        ["--addr", "{a}", "cas", "exit/k", "x", "--expect", "v", "--absent"],
        Exit.USAGE,
        "exactly one",
    ),
    (["--addr", "{a}", "download", "no-such-file", "{tmp}/x"], Exit.NOT_FOUND, "not found"),
    (["--addr", "{a}", "download", "k", "{tmp}/missing-dir/x"], Exit.USAGE, "no such directory"),
    (["--addr", "{a}", "upload", "k", "{tmp}/no-such-file"], Exit.USAGE, "no such file"),
    (["--addr", "{a}", "get", ""], Exit.USAGE, "key must not be empty"),
    (["--addr", "{a}", "get", "k" * 401], Exit.USAGE, "limit is 400"),
    (["--addr", "not-an-address", "get", "k"], Exit.USAGE, "invalid address"),
    (["--addr", "127.0.0.1:99999", "get", "k"], Exit.USAGE, "out of range"),
    (["--addr", "{a}", "get"], Exit.USAGE, "Missing argument"),
    (["--addr", "{a}", "frobnicate"], Exit.USAGE, "No such command"),
    (["--addr", "{dead}", "--timeout", "0.5", "get", "k"], Exit.UNAVAILABLE, "unavailable"),
    (["--addr", "{dead}", "--timeout", "0.5", "set", "k", "v"], Exit.UNAVAILABLE, "unavailable"),
    (["--addr", "{dead}", "--timeout", "0.5", "status"], Exit.UNAVAILABLE, "no node answered"),
    (["serve", "--port", "70000"], Exit.USAGE, "port"),
    (["serve", "--peers", "nope"], Exit.USAGE, "invalid address"),
]


@pytest.mark.parametrize(("args", "code", "fragment"), EXIT_CASES, ids=lambda v: str(v)[:40])
def test_exit_codes(
    shared_cluster: ProcCluster, tmp_path: Path, args: list[str], code: int, fragment: str
) -> None:
    if "exit/k" in args:
        with rkv.connect_sync(shared_cluster.addrs, timeout=20) as c:
            c.put("exit/k", "v")
    subst = {"{a}": shared_cluster.addr, "{dead}": closed_addr(), "{tmp}": str(tmp_path)}
    argv = [_subst(x, subst) for x in args]
    r = CliRunner().invoke(app, argv)
    assert r.exit_code == code, (r.stdout, r.stderr)
    assert fragment in r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    if code != Exit.USAGE or ("Missing" not in fragment and "No such command" not in fragment):
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr  # one line, no noise


def _subst(arg: str, table: dict[str, str]) -> str:
    for k, v in table.items():
        arg = arg.replace(k, v)
    return arg


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (rkv.NotFound(), Exit.NOT_FOUND),
        (rkv.BadRequest(), Exit.USAGE),
        (ValueError(), Exit.USAGE),
        (FileNotFoundError(), Exit.USAGE),
        (rkv.Unavailable(), Exit.UNAVAILABLE),
        (rkv.Timeout(), Exit.UNAVAILABLE),
        (rkv.IntegrityError(), Exit.INTEGRITY),
        (rkv.Changed(), Exit.INTEGRITY),
        (rkv.CorruptData(), Exit.CORRUPT),
        (rkv.StoreFull(), Exit.SERVER),
        (rkv.InternalError(), Exit.SERVER),
    ],
)
def test_exit_code_table(exc: BaseException, code: Exit) -> None:
    assert exit_code_for(exc) == code


def test_real_process_entry_points(shared_cluster: ProcCluster, run_cli: RunCli) -> None:
    """`python -m rkv` with RKV_ADDR; binary-safe stdout; user mistakes exit without a
    traceback in a real process too."""
    r = run_cli("set", "proc-key", "Hello World", addr=shared_cluster.addr)
    assert r.returncode == 0, r.stderr
    r = run_cli("--addr", f"http://{shared_cluster.addrs[1]}", "get", "proc-key")
    assert (r.returncode, r.stdout) == (0, b"Hello World\n")
    r = run_cli("get", "proc-missing", addr=shared_cluster.addr)
    assert (r.returncode, r.stdout) == (1, b"")
    r = run_cli("--addr", "bad", "get", "k")
    assert r.returncode == 2 and b"invalid address" in r.stderr
    r = run_cli("--timeout", "0.5", "get", "k", addr=closed_addr())
    assert r.returncode == 3 and b"unavailable" in r.stderr
    assert b"Traceback" not in r.stderr


def test_serve_port_in_use(run_cli: RunCli, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = run_cli(
            "serve",
            "--port",
            str(port),
            "--peers",
            "127.0.0.1:1",
            "--data-dir",
            str(tmp_path / "d"),
        )
    assert r.returncode == 10, r.stderr
    assert b"Traceback" not in r.stderr


def test_readme_serve_commands(tmp_path: Path, run_cli: RunCli) -> None:
    """The product description's commands, verbatim but for the ports: three `rkv serve
    --port P --peers http://...` in one directory (default data dirs), then set/get."""
    from conftest import free_ports, rkv_env

    ports = free_ports(3)
    procs = []
    try:
        for p in ports:
            peers = ",".join(f"http://127.0.0.1:{q}" for q in ports if q != p)
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "rkv", "serve", "--port", str(p), "--peers", peers],
                    cwd=tmp_path,
                    env=rkv_env(),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        first = f"http://127.0.0.1:{ports[0]}"
        r = run_cli("--addr", first, "--timeout", "30", "set", "my_key", "Hello World")
        assert r.returncode == 0, r.stderr
        r = run_cli("--addr", first, "get", "my_key")
        assert r.stdout == b"Hello World\n"
        assert sorted(os.listdir(tmp_path / "rkv-data")) == sorted(f"127.0.0.1_{p}" for p in ports)
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_cluster_command(tmp_path: Path, port_range: Callable[[int], int], run_cli: RunCli) -> None:
    """`rkv cluster` starts 3 nodes, prints the leader, stops them all on SIGTERM (exit 0),
    reports a node that dies, and a second run recovers the same data."""
    from conftest import rkv_env, wait_for_line

    base, resp, http = port_range(3), port_range(3), port_range(3)
    addrs = ",".join(f"127.0.0.1:{base + i}" for i in range(3))
    cmd = [sys.executable, "-m", "rkv", "cluster", "--base-port", str(base), "--data-dir", "d"]
    cmd += ["--resp-base-port", str(resp), "--http-base-port", str(http)]

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            cmd, cwd=tmp_path, env=rkv_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )

    proc = start()
    try:
        out = wait_for_line(proc, b"Press Ctrl+C", 60)
        assert b"leader: 127.0.0.1:" in out
        assert f"127.0.0.1:{base} -> 127.0.0.1:{http}".encode() in out  # the HTTP ports
        assert run_cli("set", "survives", "restart", addr=addrs).returncode == 0
        for i in range(3):  # every node serves the HTTP API: a linearizable read of the write
            got = trio.run(http_get, "127.0.0.1", http + i, "/v1/kv/survives")
            assert got == (200, b"restart"), (i, got)
        children = [int(line.split()[1]) for line in _ps_children(proc.pid)]
        assert len(children) == 3
        # A child dying unexpectedly is reported by name; the others keep serving.
        os.kill(children[0], signal.SIGKILL)
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert b"exited unexpectedly" in err and b"Traceback" not in err
        for pid in children:
            assert not _alive(pid), f"child {pid} survived the cluster's SIGTERM"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    proc = start()
    try:
        wait_for_line(proc, b"Press Ctrl+C", 60)
        r = run_cli("get", "survives", addr=addrs)
        assert (r.returncode, r.stdout) == (0, b"restart\n"), r.stderr
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _ps_children(pid: int) -> list[str]:
    out = subprocess.run(
        ["ps", "-o", "ppid=,pid=", "--ppid", str(pid)], capture_output=True, text=True
    ).stdout
    return [line for line in out.splitlines() if line.strip()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes (its parent, the cluster, has exited).
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_progress_bar_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from rkv.cli.app import progress_bar

    class FakeTTY(io.StringIO):
        def isatty(self) -> bool:
            return True

    for tty, size, shown in [(False, 10 << 20, False), (True, 10, False), (True, 10 << 20, True)]:
        err = FakeTTY() if tty else io.StringIO()
        monkeypatch.setattr(sys, "stderr", err)
        with progress_bar("upload k", size) as progress:
            assert (progress is not None) == shown
            if progress is not None:
                progress(5 << 20, size)
                progress(size, size)
        assert ("upload k" in err.getvalue()) == shown
