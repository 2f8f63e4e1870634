"""Operations against real `rkv serve` processes: the HTTP endpoints, `rkv status --watch`,
`rkv leader transfer`, `rkv backup` / `rkv restore` / serve the restored dir, and the
SIGTERM hand-over of a leader (rolling restart without an election timeout)."""

from __future__ import annotations

import io
import json
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

import rkv
from rkv.cli.status import watch_status
from rkv.http import http_get

from .conftest import (
    Proc,
    ProcCluster,
    addrs_of,
    cli,
    cluster,
    configs,
    free_ports,
    run_cli,
    wait_leader,
)


@pytest.fixture(scope="module")
def procs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcCluster]:
    c = ProcCluster(tmp_path_factory.mktemp("procs"), 3, http=True)
    c.start()
    try:
        c.wait_leader()
        with rkv.connect_sync(c.addrs, timeout=10) as cl:
            for i in range(10):
                cl.put(f"key{i}", f"val{i}")
        yield c
    finally:
        c.stop_all()


def test_http_endpoints_of_a_serving_process(procs: ProcCluster) -> None:
    async def go() -> None:
        for port in procs.http_ports:
            assert await http_get("127.0.0.1", port, "/livez") == (200, b"ok\n")
            with trio.fail_after(5):
                while (await http_get("127.0.0.1", port, "/readyz"))[0] != 200:
                    await trio.sleep(0.05)
            status, body = await http_get("127.0.0.1", port, "/metrics")
            assert status == 200
            names = {f.name for f in text_string_to_metric_families(body.decode())}
            assert {"rkv_role", "rkv_term", "rkv_commit_latency_seconds"} <= names

    trio.run(go)


def test_status_watch_prints_rows(procs: ProcCluster) -> None:
    r = run_cli("--addr", procs.addr, "status", "--watch", "--interval", "0.1", "--count", "3")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("rkv status") == 3  # one titled table per refresh off a terminal
    for a in procs.addrs:
        assert r.stdout.count(a) >= 3
    assert "leader" in r.stdout and "lag" in r.stdout
    bad = cli("--addr", procs.addr, "status", "--watch", "--json")
    assert bad.exit_code == 2


def test_cli_leader_transfer(procs: ProcCluster) -> None:
    leader = procs.wait_leader()
    target = next(a for a in procs.addrs if a != leader)
    r = cli("--addr", procs.addr, "leader", "transfer", "--to", target)
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip() == f"leader: {target}"
    assert procs.wait_leader() == target
    r = cli("--addr", procs.addr, "leader", "transfer")
    assert r.exit_code == 0, r.stderr
    new = r.stdout.strip().removeprefix("leader: ")
    assert new in procs.addrs and new != target
    assert procs.wait_leader() == new


def test_cli_backup_restore_serve(procs: ProcCluster, tmp_path: Path) -> None:
    dest = tmp_path / "b.rkvbak"
    r = cli("--addr", procs.addr, "backup", str(dest), "--json")
    assert r.exit_code == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["keys"] >= 10
    port = free_ports(1)[0]
    d = tmp_path / "restored"
    r = cli("restore", str(dest), "--data-dir", str(d), "--port", str(port))
    assert r.exit_code == 0, r.stderr
    assert f"rkv serve --host 127.0.0.1 --port {port} --data-dir {d}" in r.stdout
    node = Proc(["--port", str(port), "--data-dir", str(d)], tmp_path / "restored.log")
    node.start()
    try:
        addr = f"127.0.0.1:{port}"
        got = cli("--addr", addr, "get", "key7")
        assert got.exit_code == 0, got.stderr + node.log()
        assert got.stdout == "val7\n"
    finally:
        assert node.stop(signal.SIGTERM) == 0


def test_sigterm_leader_hands_over(proc_cluster: ProcCluster) -> None:
    c = proc_cluster
    leader = c.wait_leader()
    with rkv.connect_sync(c.addrs, timeout=10) as cl:
        cl.put("before", "1")
        term = next(r["term"] for r in cl.status() if r["addr"] == leader)
    t0 = time.monotonic()
    proc = c.nodes[leader]
    assert proc.stop(signal.SIGTERM) == 0
    stopped = time.monotonic() - t0
    new = c.wait_leader(timeout=10, exclude=leader)
    took = time.monotonic() - t0
    log = proc.log()
    assert re.search(rf"handed leadership to {re.escape(new)}", log), log
    assert stopped < 5.0, f"the leader took {stopped:.2f}s to stop"
    assert took < 5.0, f"no successor after {took:.2f}s"
    survivors = [a for a in c.addrs if a != leader]
    with rkv.connect_sync(survivors, timeout=10) as cl:
        cl.put("after", "2")  # writes continue
        assert cl.get("before") == b"1"
        rows = [r for r in cl.status() if r["addr"] == new]
        # a transfer is one election: exactly one term later, no timeout-driven rounds
        assert rows[0]["term"] == term + 1


async def test_watch_renders_live_in_place(tmp_path: Path) -> None:
    async with cluster(configs(tmp_path, http_port=None)) as nodes:
        await wait_leader(nodes)
        buf = io.StringIO()
        console = Console(file=buf, force_terminal=True, width=200)
        async with rkv.connect(addrs_of(nodes), timeout=5) as c:
            done = await watch_status(c, console, 0.05, 3, live=True, probe_timeout=1.0)
        assert done == 3
        out = buf.getvalue()
        for n in nodes:
            assert n.cfg.id in out
        assert "leader" in out and "lag" in out
        assert "\x1b[" in out  # cursor movement: refreshed in place
