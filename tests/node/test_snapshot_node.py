"""Snapshots end to end in one process: three real nodes (LMDB, loopback TCP) with a small
compaction threshold. A follower that was down while the leader compacted its log several
times catches up through a streamed snapshot, and restarts from snapshot + remaining log."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import trio

from rkv.net.rpc import RpcClient
from rkv.node import Node, run_node
from rkv.raft.types import Role

from .test_node_cluster import CID, configs, free_ports, put

SMALL = {
    "snapshot_entries": 60,
    "snapshot_keep_entries": 10,
    "snapshot_chunk_bytes": 8 << 10,
    # compaction follows the applied index: small apply batches, so that a few hundred
    # writes compact several times
    "apply_max_delay_seconds": 0.02,
    "seed": None,
}


class Cluster:
    """Nodes that can be stopped and restarted one by one (each in its own cancel scope)."""

    def __init__(self, nursery: trio.Nursery, cfgs: list[Any]) -> None:
        self.nursery = nursery
        self.cfgs = cfgs
        self.nodes: dict[int, Node] = {}
        self.scopes: dict[int, trio.CancelScope] = {}
        self.stopped: dict[int, trio.Event] = {}

    async def start(self, i: int) -> Node:
        async def run(task_status: trio.TaskStatus[Node]) -> None:
            with trio.CancelScope() as scope:
                self.scopes[i] = scope
                try:
                    await run_node(self.cfgs[i], task_status=task_status)
                finally:
                    self.stopped[i].set()

        self.stopped[i] = trio.Event()
        node: Node = await self.nursery.start(run)
        self.nodes[i] = node
        return node

    async def stop(self, i: int) -> None:
        self.scopes[i].cancel()
        await self.stopped[i].wait()  # the store is closed
        del self.nodes[i]

    async def leader(self, timeout: float = 10.0) -> Node:
        with trio.fail_after(timeout):
            while True:
                live = list(self.nodes.values())
                leaders = [n for n in live if n.replica.role == Role.LEADER]
                if len(leaders) == 1 and all(n.replica.leader == leaders[0].cfg.id for n in live):
                    return leaders[0]
                await trio.sleep(0.02)


async def caught_up(nodes: list[Node], timeout: float = 20.0) -> None:
    with trio.fail_after(timeout):
        while len({n.replica.applied for n in nodes}) != 1:
            await trio.sleep(0.02)


def everything(n: Node) -> dict[str, Any]:
    s = n.store
    m = s.file_manifest(b"file")
    return {
        "kv": s.scan(b"", 10_000),
        "file": (m, [s.read_chunk(b"file", i) for i in range(m.chunks)] if m else None),
        "session": s.session(CID),
        "applied": s.applied_index(),
    }


async def write(leader: Node, first_seq: int, n: int) -> int:
    """n puts over 40 keys (overwrites), as 8 concurrent writers; returns the next seq."""
    async with RpcClient("127.0.0.1", leader.port) as c:

        async def writer(w: int) -> None:
            for j in range(w, n, 8):
                seq = first_seq + j
                await c.call(put(b"k%02d" % (seq % 40), b"v%d" % seq, seq, b"writer-%08d" % w))

        async with trio.open_nursery() as nursery:
            for w in range(8):
                nursery.start_soon(writer, w)
    return first_seq + n


async def upload(leader: Node, size: int, chunk: int) -> bytes:
    data = bytes(range(256)) * (size // 256)
    parts = [data[i : i + chunk] for i in range(0, len(data), chunk)]
    async with RpcClient("127.0.0.1", leader.port) as c:
        for n, p in enumerate(parts):
            frame = {"t": "file_chunk", "c": CID, "s": n + 1, "k": b"file", "u": b"up", "n": n}
            await c.call({**frame, "data": p})
        sha = hashlib.sha256(data).digest()
        commit = {"t": "file_commit", "c": CID, "s": len(parts) + 1, "k": b"file", "u": b"up"}
        await c.call({**commit, "size": len(data), "chunks": len(parts), "sha": sha})
    return data


async def test_lagging_follower_catches_up_by_snapshot_and_restarts(tmp_path: Path) -> None:
    cfgs = configs(tmp_path, free_ports(3), **SMALL)
    async with trio.open_nursery() as nursery:
        cl = Cluster(nursery, cfgs)
        for i in range(3):
            await cl.start(i)
        leader = await cl.leader()
        lag = next(i for i, n in cl.nodes.items() if n is not leader)
        seq = await write(leader, 1, 50)
        await caught_up(list(cl.nodes.values()))
        behind = cl.nodes[lag].store.last_index()
        await cl.stop(lag)

        # several compactions happen while the follower is down, file chunks included
        data = await upload(leader, 200_000, 16 << 10)
        seq = await write(leader, seq, 300)
        assert leader.snapshot_statistics()["compactions"] >= 3
        assert leader.store.first_index() > behind + 1  # the log no longer reaches it
        # The log is bounded: a compaction may still be due for the last writes (a batch of
        # them can land between two checks), so it may take a moment.
        with trio.fail_after(5):
            while leader.store.stats()["log_entries"] >= 80:
                await trio.sleep(0.02)

        follower = await cl.start(lag)
        live = list(cl.nodes.values())
        await caught_up(live)
        with trio.fail_after(10):  # counted once the install's turn ended (it may lag)
            while follower.snapshot_statistics()["received"] < 1:
                await trio.sleep(0.02)
        st = follower.snapshot_statistics()
        assert st["installed"] >= 1 and st["received"] >= 1 and st["chunks_received"] >= 2
        with trio.fail_after(10):  # the leader counts it once the follower's answer arrives
            while leader.snapshot_statistics()["sent"] < 1:
                await trio.sleep(0.02)
        assert everything(follower) == everything(leader)
        assert follower.store.read_chunk(b"file", 0) == data[: 16 << 10]

        # replication goes on from the log after the snapshot
        seq = await write(leader, seq, 40)
        await caught_up(live)
        assert everything(follower) == everything(leader)

        # a restart replays only what follows the applied index (snapshot + remaining log)
        await cl.stop(lag)
        follower = await cl.start(lag)
        assert follower.replica.applied == follower.store.applied_index() > behind
        await caught_up(list(cl.nodes.values()))
        assert everything(follower) == everything(cl.nodes[next(i for i in cl.nodes if i != lag)])
        nursery.cancel_scope.cancel()


async def test_big_file_upload_compacts_and_streams(tmp_path: Path) -> None:
    """30 MiB of file chunks: the chunks stay in the log's records as file data (pinned, not
    copied: docs/snapshots.md), so they never count as log bytes to compact, while compaction
    by entries goes on; a follower that missed the upload gets the file through a snapshot
    streamed in 256 KiB pieces."""
    cfgs = configs(
        tmp_path,
        free_ports(3),
        snapshot_entries=8,
        snapshot_keep_entries=2,
        snapshot_bytes=4 << 20,
        snapshot_keep_bytes=1 << 20,
        snapshot_chunk_bytes=256 << 10,
        request_timeout=20.0,
    )
    async with trio.open_nursery() as nursery:
        cl = Cluster(nursery, cfgs)
        for i in range(3):
            await cl.start(i)
        leader = await cl.leader()
        lag = next(i for i, n in cl.nodes.items() if n is not leader)
        await cl.stop(lag)
        data = await upload(leader, 30 << 20, 1 << 20)
        assert leader.snapshot_statistics()["compactions"] >= 3
        assert leader.store.log_bytes() < 12 << 20
        assert leader.store.stats()["pinned_bytes"] == 30 << 20
        follower = await cl.start(lag)
        await caught_up(list(cl.nodes.values()), timeout=60)
        assert follower.snapshot_statistics()["installed"] >= 1
        m = follower.store.file_manifest(b"file")
        assert m is not None and m.size == len(data)
        got = hashlib.sha256()
        for n in range(m.chunks):
            got.update(follower.store.read_chunk(b"file", n))
        assert got.digest() == hashlib.sha256(data).digest() == m.sha256
        assert follower.store.stats()["pinned_bytes"] == 0  # a snapshot carries copies
        nursery.cancel_scope.cancel()
