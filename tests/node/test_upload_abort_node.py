"""Abandoned uploads end to end (three real nodes in one process): the leader aborts an
upload that staged nothing for upload_ttl_seconds, on every node, and keeps one that goes on;
a client whose upload fails aborts it at once."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import pytest
import trio

import rkv
from rkv.net.rpc import RpcClient
from rkv.node import Node

from .test_node_cluster import CID, configs, free_ports
from .test_snapshot_node import Cluster

CHUNK = 8 << 10


def in_progress(nodes: list[Node]) -> list[Any]:
    return [(n.store.uploads_in_progress(), n.store.stats()["pinned_bytes"]) for n in nodes]


async def until(pred: Any, timeout: float) -> None:
    with trio.fail_after(timeout):
        while not pred():
            await trio.sleep(0.05)


@pytest.mark.parametrize("going_on", [False, True])
async def test_the_leader_aborts_an_idle_upload_and_keeps_a_live_one(
    tmp_path: Path, going_on: bool
) -> None:
    ttl = 2.0
    cfgs = configs(tmp_path, free_ports(3), upload_ttl_seconds=ttl, seed=None)
    async with trio.open_nursery() as nursery:
        cl = Cluster(nursery, cfgs)
        for i in range(3):
            await cl.start(i)
        leader = await cl.leader()
        nodes = list(cl.nodes.values())
        parts = [bytes([n]) * CHUNK for n in range(12)]
        async with RpcClient("127.0.0.1", leader.port) as c:

            async def chunk(n: int) -> None:
                frame = {"t": "file_chunk", "c": CID, "s": n + 1, "k": b"f", "u": b"up", "n": n}
                await c.call({**frame, "data": parts[n]})

            await chunk(0)
            await chunk(1)
            await until(lambda: all(p[0] for p in in_progress(nodes)), 5)
            if going_on:
                # a chunk every 0.4 s for 4 s: never idle for ttl (5x margin)
                for n in range(2, len(parts)):
                    await trio.sleep(0.4)
                    await chunk(n)
                data = b"".join(parts)
                commit = {"t": "file_commit", "c": CID, "s": 99, "k": b"f", "u": b"up"}
                sha = hashlib.sha256(data).digest()
                await c.call({**commit, "size": len(data), "chunks": len(parts), "sha": sha})
                assert leader.store.read_chunk(b"f", 11) == parts[11]
                assert leader.store.uploads_in_progress() == []
            else:
                t0 = trio.current_time()
                await until(lambda: in_progress(nodes) == [([], 0)] * 3, 15 * ttl)
                assert trio.current_time() - t0 >= ttl * 0.5  # not before it was idle
        nursery.cancel_scope.cancel()


class _Breaks(io.RawIOBase):
    """A source that fails after three chunks (a disk error, a closed pipe)."""

    def __init__(self) -> None:
        self.reads = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        self.reads += 1
        if self.reads > 3:
            raise OSError("source went away")
        b[: len(b)] = b"x" * len(b)
        return len(b)


async def test_a_failed_upload_is_aborted_by_its_client(tmp_path: Path) -> None:
    cfgs = configs(tmp_path, free_ports(3), seed=None)  # the default ttl: one hour
    async with trio.open_nursery() as nursery:
        cl = Cluster(nursery, cfgs)
        for i in range(3):
            await cl.start(i)
        await cl.leader()
        nodes = list(cl.nodes.values())
        addrs = [f"127.0.0.1:{n.port}" for n in nodes]
        async with rkv.connect(addrs) as c:
            with pytest.raises(OSError, match="source went away"):
                await c.upload("f", io.BufferedReader(_Breaks(), CHUNK), chunk_size=CHUNK)
        await until(lambda: in_progress(nodes) == [([], 0)] * 3, 10)
        nursery.cancel_scope.cancel()
