"""redis-cli and redis-benchmark (Debian's redis-tools: `./dev setup` and .ci/run install
them) against a real 3-node `rkv cluster` with the cluster token on: commands through a
follower, RESP3, `-a TOKEN`, `--scan --pattern`, a refusal without the token, a leader
killed under redis-cli, and a short redis-benchmark run that must report no error."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

TOKEN = "resp-e2e-cluster-token-42"


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is missing: `./dev setup` installs Debian's redis-tools")
    return path


def cli(port: int, *args: str, token: str | None = TOKEN, resp3: bool = False) -> str:
    cmd = [need("redis-cli"), "-p", str(port)]
    if token is not None:
        cmd += ["-a", token, "--no-auth-warning"]
    if resp3:
        cmd.append("-3")
    r = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout + r.stderr


def test_redis_cli_and_redis_benchmark(tmp_path: Path, port_range: Callable[[int], int]) -> None:
    from conftest import rkv_env, wait_for_line

    need("redis-cli")
    need("redis-benchmark")
    base, resp = port_range(3), port_range(3)
    cmd = [sys.executable, "-m", "rkv", "cluster", "--base-port", str(base)]
    cmd += ["--resp-base-port", str(resp), "--http-base-port", "0", "--data-dir", "d"]
    proc = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        env=rkv_env(RKV_CLUSTER_TOKEN=TOKEN),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        out = wait_for_line(proc, b"Press Ctrl+C", 60).decode()
        assert f"127.0.0.1:{base} -> 127.0.0.1:{resp}" in out
        leader = int(out.split("leader: 127.0.0.1:")[1].split(".")[0])
        ports = [resp + i for i in range(3)]
        follower = ports[(leader - base + 1) % 3]

        # without the token: refused as Redis refuses
        assert cli(follower, "get", "a", token=None).strip() == "NOAUTH Authentication required."
        assert "WRONGPASS" in cli(follower, "get", "a", token="not-the-token-at-all")
        # through a follower, RESP2 and RESP3
        assert cli(follower, "set", "a", "b").strip() == "OK"
        assert cli(follower, "get", "a").strip() == "b"
        assert cli(follower, "get", "a", resp3=True).strip() == "b"
        assert "proto 3\n" in cli(follower, "hello", "3", resp3=True)
        for i in range(12):
            cli(ports[i % 3], "set", f"user:{i}", str(i))
        scanned = cli(follower, "--scan", "--pattern", "user:1*").split()
        assert sorted(scanned) == ["user:1", "user:10", "user:11"]
        assert cli(follower, "dbsize").strip() == "13"
        assert "rkv_role:follower" in cli(follower, "info", "replication")
        assert "ERR unknown command 'nosuch'" in cli(follower, "nosuch", "x")
        assert cli(follower, "incr", "n").strip() == "1"  # in the state machine (a txn)
        assert cli(follower, "incrby", "n", "41").strip() == "42"
        assert cli(follower, "expire", "n", "100").strip() == "1"  # a lease of its own
        assert cli(follower, "ttl", "n").strip() in ("99", "100")
        assert "does not support 'eval'" in cli(follower, "eval", "return 1", "0")

        # redis-benchmark must run clean (no error replies): its speed is not asserted
        bench = subprocess.run(
            [
                need("redis-benchmark"),
                "-p",
                str(follower),
                "-a",
                TOKEN,
                "-t",
                "ping,set,get,incr,mset",
                "-c",
                "10",
                "-n",
                "2000",
                "-q",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert bench.returncode == 0, bench.stderr
        assert "ERR" not in bench.stdout + bench.stderr, bench.stdout + bench.stderr
        assert bench.stdout.count("requests per second") >= 4, bench.stdout

        # the leader killed: redis-cli through another node keeps working after the election
        children = subprocess.run(
            ["ps", "-ww", "-o", "pid=,args=", "--ppid", str(proc.pid)],
            capture_output=True,
            text=True,
        ).stdout.splitlines()
        leaders = [int(c.split()[0]) for c in children if f"--port {leader} " in c]
        assert len(leaders) == 1, (leader, children)
        (leader_pid,) = leaders
        os.kill(leader_pid, signal.SIGKILL)
        assert cli(follower, "set", "after", "kill").strip() == "OK"
        assert cli(follower, "get", "after").strip() == "kill"
        assert cli(follower, "get", "a").strip() == "b"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
