"""A replaced disk on real `rkv serve` processes, seen through the CLI.

Three processes; `precious` is written. Two are killed (SIGKILL); one of them comes back
with its data dir deleted (a new disk, the same flags): it recovers, and with the other
node still down it may not vote, so nothing is elected and `rkv status` lists it as
recovering. The second node returns: a leader is elected, the write is read through every
node, and nobody recovers any more. (tests/e2e/test_replaced_disk.py has the partitioned
variant of issue 20 on in-process nodes.)
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import rkv

if TYPE_CHECKING:  # tests/e2e is not a package; these come from its conftest
    from conftest import ProcCluster, RunCli

pytestmark = pytest.mark.e2e


def wait_for(cond: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout}s")


def statuses(run_cli: RunCli, addr: str) -> list[dict[str, Any]]:
    r = run_cli("--addr", addr, "status", "--json")
    assert r.returncode == 0, r.stderr
    rows: list[dict[str, Any]] = json.loads(r.stdout)
    return rows


def test_a_replaced_disk_is_listed_as_recovering_and_waits_for_the_cluster(
    cluster_factory: Callable[[int], ProcCluster], run_cli: RunCli
) -> None:
    c = cluster_factory(3)
    c.start()
    leader = c.wait_leader(timeout=60)
    wait_for(
        lambda: all(r["recovering"] is False for r in statuses(run_cli, c.addr)),
        "a new cluster recovers",
    )
    with rkv.connect_sync(c.addrs, timeout=20) as client:
        client.put("precious", b"acknowledged")
    a = c.node(leader)
    b, survivor = (n for n in c.nodes if n is not a)
    a.kill()
    b.kill()
    shutil.rmtree(b.data_dir)  # the replaced disk
    b.start()

    def b_recovering() -> bool:
        rows = statuses(run_cli, f"{b.addr},{survivor.addr}")
        return any(r["addr"] == b.addr and r["recovering"] is True for r in rows)

    wait_for(b_recovering, "the new B reports recovering")
    time.sleep(2.0)  # several election timeouts: B votes for nobody, so nobody leads
    rows = statuses(run_cli, f"{b.addr},{survivor.addr}")
    assert not any(r["role"] == "leader" for r in rows), rows
    r = run_cli("--addr", f"{b.addr},{survivor.addr}", "status")
    assert f"{b.addr} recovering" in r.stdout.decode(), r.stdout
    r = run_cli("--addr", f"{b.addr},{survivor.addr}", "--timeout", "3", "get", "precious")
    assert r.returncode == 3, (r.returncode, r.stdout, r.stderr)  # unavailable, not "not found"

    a.start()
    c.wait_leader(timeout=60)
    for n in c.nodes:
        r = run_cli("--addr", n.addr, "--timeout", "20", "get", "precious")
        assert (r.returncode, r.stdout) == (0, b"acknowledged\n"), (n.addr, r.stderr)
    wait_for(
        lambda: all(r["recovering"] is False for r in statuses(run_cli, c.addr)),
        "B caught up and votes again",
    )
    assert (Path(b.data_dir) / "data.mdb").exists()
