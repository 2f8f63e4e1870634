"""The README's walkthrough against real node processes, through the public client API:
set/get through every node, a binary file up and down, SIGKILL of every node then recovery
with a download from a follower, SIGKILL of the leader then more writes; and the client's
memory stays bounded for a large file."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import rkv

if TYPE_CHECKING:  # tests/e2e is not a package; the fixtures come from its conftest
    from conftest import ProcCluster

pytestmark = pytest.mark.e2e

T = 20.0  # generous per-operation deadline: the CI machine is small and shared


def test_walkthrough(cluster_factory: Callable[[int], ProcCluster], tmp_path: Path) -> None:
    c = cluster_factory(3)
    leader = c.wait_leader()

    # Writes and linearizable reads through every node (followers redirect writes).
    for i, addr in enumerate(c.addrs):
        with rkv.connect_sync(addr, timeout=T) as cl:
            cl.put(f"key-{i}", f"value from {addr}")
            assert cl.leader == leader
    for addr in c.addrs:
        with rkv.connect_sync(addr, timeout=T) as cl:
            for i in range(3):
                assert cl.get(f"key-{i}") == f"value from {c.addrs[i]}".encode()
            assert cl.get("never-set") is None

    # A binary file (not a multiple of the chunk size), byte-identical on the way back.
    data = os.urandom(3 * (1 << 20) + 12345) + bytes(range(256))
    src = tmp_path / "avatar.bin"
    src.write_bytes(data)
    with rkv.connect_sync(c.addrs, timeout=T) as cl:
        info = cl.upload("profile_pic", src)
        assert info["chunks"] == 4 and info["size"] == len(data)
        cl.download("profile_pic", tmp_path / "restored.bin")
    assert (tmp_path / "restored.bin").read_bytes() == data

    # Crash every node (no clean shutdown), restart, read from a follower.
    c.kill_all(signal.SIGKILL)
    c.start()
    leader = c.wait_leader()
    follower = c.followers(leader)[0]
    with rkv.connect_sync(follower, timeout=T) as cl:
        got = cl.download("profile_pic", tmp_path / "after-crash.bin")
        assert cl.get("key-0") == f"value from {c.addrs[0]}".encode()
    assert got["sha256"] == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "after-crash.bin").read_bytes() == data

    # Kill the leader: a new one is elected and writes continue through the same client.
    with rkv.connect_sync(c.addrs, timeout=T) as cl:
        cl.put("before-failover", "1")
        assert cl.leader == leader
        c.node(leader).kill(signal.SIGKILL)
        cl.put("after-failover", "2")
        assert cl.leader is not None and cl.leader != leader
        assert cl.get("before-failover") == b"1"
        assert cl.get("after-failover") == b"2"
        assert cl.cas("after-failover", "2", "3") is True
        rows = {r["addr"]: r for r in cl.status()}
    assert rows[leader]["role"] == "unreachable"
    assert sorted(r["role"] for a, r in rows.items() if a != leader) == ["follower", "leader"]


RSS_SCRIPT = textwrap.dedent(
    """
    import resource, sys
    import rkv
    addrs, key, path, out, n = sys.argv[1:6]
    with rkv.connect_sync(addrs, timeout=60) as c:
        if int(n):
            c.upload(key, path)
            c.download(key, out)
        else:
            c.put(key, "x")
            c.get(key)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux
    """
)


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss units differ off Linux")
def test_large_file_memory_is_bounded(
    cluster_factory: Callable[[int], ProcCluster], tmp_path: Path
) -> None:
    """A client process moving a 20 MiB file peaks far below the file size above a client
    that moved a few bytes (the file is streamed in 1 MiB chunks, a few in flight)."""
    c = cluster_factory(3)
    c.wait_leader()
    size = 20 << 20
    src = tmp_path / "big.bin"
    with src.open("wb") as f:
        for _ in range(size >> 20):
            f.write(os.urandom(1 << 20))

    def peak_kib(n: int) -> int:
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                RSS_SCRIPT,
                c.addr,
                f"big{n}",
                str(src),
                str(tmp_path / "o"),
                str(n),
            ],
            capture_output=True,
            timeout=120,
            check=True,
        )
        return int(out.stdout.split()[-1])

    base = peak_kib(0)
    big = peak_kib(1)
    assert (tmp_path / "o").read_bytes() == src.read_bytes()
    growth_mib = (big - base) / 1024
    print(f"client peak RSS: {base / 1024:.0f} MiB baseline, +{growth_mib:.0f} MiB for 20 MiB")
    assert growth_mib < 14, f"client RSS grew by {growth_mib:.0f} MiB for a 20 MiB file"
