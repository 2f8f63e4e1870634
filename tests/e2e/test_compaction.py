"""Log compaction and snapshot catch-up with real processes: a follower SIGKILLed while the
leader compacts its log several times comes back, receives a streamed snapshot, and ends up
with the leader's data; killed again, it restarts from snapshot + remaining log.

The nodes run `rkv.node.serve_main` with small compaction thresholds (a tiny launcher, since
the CLI has no flags for them yet)."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pytest
from conftest import ProcCluster  # tests/e2e is not a package (rootdir-relative import)

import rkv

pytestmark = pytest.mark.e2e

LAUNCH = """
import sys
from rkv.config import NodeConfig
from rkv.node import serve_main
addr, peers, data = sys.argv[1:4]
cfg = NodeConfig.create(addr, peers.split(","), data_dir=data, snapshot_entries=30,
                        snapshot_keep_entries=5, snapshot_chunk_bytes=4096)
sys.exit(serve_main(cfg))
"""


def small_threshold_cluster(root: Path) -> ProcCluster:
    c = ProcCluster(root, 3)
    for n in c.nodes:
        n.args = [sys.executable, "-c", LAUNCH, n.addr, ",".join(c.addrs), str(n.data_dir)]
    return c


def applied(c: ProcCluster, addr: str) -> int:
    with rkv.connect_sync([addr], timeout=2.0) as cl:
        rows = cl.status(timeout=2.0)
    value = next((r.get("applied") for r in rows if r["addr"] == addr), None)
    return -1 if value is None else int(value)  # None: not answering (yet)


def wait_caught_up(c: ProcCluster, addr: str, leader: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if applied(c, addr) >= applied(c, leader):
                return
        except rkv.RkvError:
            pass
        time.sleep(0.1)
    pytest.fail(f"{addr} did not catch up with {leader}:\n{c.node(addr).log()}")


def local_scan(addr: str) -> list[tuple[bytes, bytes]]:
    with rkv.connect_sync([addr], timeout=5.0) as cl:
        return list(cl.scan(b"", limit=10_000, stale=True))


def test_sigkilled_follower_catches_up_by_snapshot(tmp_path: Path) -> None:
    c = small_threshold_cluster(tmp_path)
    try:
        c.start()
        leader = c.wait_leader()
        lagger = c.followers(leader)[0]
        with rkv.connect_sync(c.addrs, timeout=10.0) as cl:
            for i in range(20):
                cl.put(b"k%03d" % i, b"first")
            c.node(lagger).kill(signal.SIGKILL)
            for i in range(150):  # several compactions while it is down (overwrites)
                cl.put(b"k%03d" % (i % 60), b"v%d" % i)
        c.node(lagger).start()
        wait_caught_up(c, lagger, leader)
        assert "sent to " + lagger in c.node(leader).log(), "no snapshot was streamed"
        assert local_scan(lagger) == local_scan(leader)
        assert len(local_scan(leader)) == 60

        # killed again: it restarts from its snapshot plus the log after it
        c.node(lagger).kill(signal.SIGKILL)
        with rkv.connect_sync(c.addrs, timeout=10.0) as cl:
            cl.put(b"after", b"restart")
        c.node(lagger).start()
        wait_caught_up(c, lagger, leader)
        assert local_scan(lagger) == local_scan(leader)
    finally:
        c.kill_all()
