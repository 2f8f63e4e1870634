"""Writes through any node: a follower forwards them to the leader (rkv.forward, issue 19).

On an in-process cluster: every write type through a follower is answered (not redirected),
with the leader's address; a retry of the same session and sequence through another follower
is applied once; a write forwarded while the leader is cut off from its peers is retried at
the next leader; and with the leader's client port flooded by half-open connections, a
client that only knows a follower keeps writing.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

import rkv
from rkv.nemesis.cluster import rpc_call
from rkv.node import Node
from rkv.testing import RestartableNode, flood, local_configs, running_cluster, wait_leader

CID = b"forwarding-test1"


async def read(node: Node, key: bytes) -> bytes | None:
    """A linearizable get through `node` (the store may apply committed puts later)."""
    reply = await rpc_call(node.cfg.advertise, {"t": "get", "k": key}, timeout=10.0)
    val: bytes | None = reply["val"]
    return val


def write(t: str, seq: int, **fields: Any) -> dict[str, Any]:
    return {"t": t, "c": CID, "s": seq, **fields}


WRITES = [
    pytest.param(write("put", 1, k=b"k", val=b"v"), {}, id="put"),
    pytest.param(write("cas", 2, k=b"k", exp=b"v", val=b"w"), {"swapped": True}, id="cas"),
    pytest.param(write("delete", 3, k=b"k"), {"existed": True}, id="delete"),
]


async def test_every_write_through_a_follower_is_answered(tmp_path: Path) -> None:
    async with running_cluster(local_configs(tmp_path, 3)) as nodes:
        leader = await wait_leader(nodes)
        follower = next(n for n in nodes if n is not leader)
        for p in WRITES:
            frame, expect = p.values
            reply = await rpc_call(follower.cfg.advertise, frame, timeout=10.0)
            assert reply["t"] == "ok", reply
            assert {k: reply[k] for k in expect} == expect
            assert reply["leader_addr"] == leader.cfg.advertise
        assert await read(leader, b"k") is None  # put, cas, delete: all applied, in order
        # what only the leader answers besides writes: the membership, as the leader sees it
        members = await rpc_call(follower.cfg.advertise, {"t": "members"}, timeout=10.0)
        assert members["leader"] == leader.cfg.id and len(members["voters"]) == 3
        assert members["leader_addr"] == leader.cfg.advertise
        assert follower.statistics()["forward"]["forwarded"] == 4


async def test_a_retry_through_another_follower_is_applied_once(tmp_path: Path) -> None:
    async with running_cluster(local_configs(tmp_path, 3)) as nodes:
        leader = await wait_leader(nodes)
        f1, f2 = (n for n in nodes if n is not leader)
        first = write("put", 7, k=b"once", val=b"first")
        assert (await rpc_call(f1.cfg.advertise, first, timeout=10.0))["t"] == "ok"
        # the same session and sequence (a client retrying after a lost answer), another body
        again = write("put", 7, k=b"once", val=b"second")
        assert (await rpc_call(f2.cfg.advertise, again, timeout=10.0))["t"] == "ok"
        assert await read(leader, b"once") == b"first"


async def fault(node: Node, peers: list[str]) -> None:
    frame = {"t": "fault", "drop_to": peers, "drop_from": peers}
    await rpc_call(node.cfg.advertise, frame, timeout=5.0)


async def test_a_forward_to_a_deposed_leader_is_retried_at_the_next(tmp_path: Path) -> None:
    cfgs = local_configs(tmp_path, 3, fault_injection=True, request_timeout=8.0)
    async with running_cluster(cfgs) as nodes:
        old = await wait_leader(nodes)
        rest = [n for n in nodes if n is not old]
        await fault(old, [n.cfg.id for n in rest])  # Raft traffic only: clients still reach it
        # The follower still believes in the old leader for an election timeout: the write
        # goes there, cannot commit, and is tried again once a new leader is known.
        reply = await rpc_call(
            rest[0].cfg.advertise, write("put", 1, k=b"moved", val=b"on"), timeout=10.0
        )
        assert reply["t"] == "ok", reply
        new = next(n for n in rest if n.replica.role.name == "LEADER")
        # forwarded to the new leader, or taken by the node itself once it was elected
        assert reply.get("leader_addr", rest[0].cfg.advertise) == new.cfg.advertise
        assert await read(new, b"moved") == b"on"
        assert old.store.get(b"moved") is None  # cut off: it never committed it


async def test_writes_through_a_follower_go_on_while_the_leader_is_flooded(
    tmp_path: Path,
) -> None:
    cfgs = local_configs(tmp_path, 3, max_connections=64)
    async with running_cluster(cfgs) as nodes:
        leader = await wait_leader(nodes)
        follower = next(n for n in nodes if n is not leader)
        async with trio.open_nursery() as nursery:
            stats = await nursery.start(partial(flood, "127.0.0.1", leader.port, connections=96))
            await trio.sleep(0.5)  # the flood holds the leader's connection cap
            async with rkv.connect([follower.cfg.advertise], timeout=20) as c:
                for i in range(20):
                    await c.put(f"f{i}", b"x")
            nursery.cancel_scope.cancel()
        assert stats.opened > 64
        assert follower.statistics()["forward"]["forwarded"] >= 1
        # read through whichever node leads now (a starved leader may have lost an election)
        async with rkv.connect([n.cfg.advertise for n in nodes], timeout=20) as c:
            for i in range(20):
                assert await c.get(f"f{i}") == b"x"


async def test_the_client_goes_to_the_leader_a_forwarded_answer_names(tmp_path: Path) -> None:
    async with running_cluster(local_configs(tmp_path, 3)) as nodes:
        leader = await wait_leader(nodes)
        follower = next(n for n in nodes if n is not leader)
        async with rkv.connect([follower.cfg.advertise], timeout=20) as c:
            for i in range(5):
                await c.put(f"k{i}", b"v")
            assert c.leader == leader.cfg.advertise
        # the first write was forwarded; the client wrote the others to the leader itself
        assert follower.statistics()["forward"]["forwarded"] == 1


async def test_a_forward_across_a_leader_kill_is_applied_once(tmp_path: Path) -> None:
    """The leader stops while a follower still believes in it: the follower's forward finds
    no leader there, waits for the election, and writes through the new one; the client's
    retry of the same session and sequence through the other follower is applied once."""
    cfgs = local_configs(tmp_path, 3, request_timeout=8.0)
    handles = [RestartableNode(cfg) for cfg in cfgs]
    async with trio.open_nursery() as nursery:
        nodes = [await h.start(nursery) for h in handles]
        leader = await wait_leader(nodes)
        f1, f2 = (n for n in nodes if n is not leader)
        await handles[nodes.index(leader)].stop()
        assert f1.replica.leader == leader.cfg.id, "the follower has not noticed yet"
        frame = write("put", 1, k=b"killed", val=b"once")
        reply = await rpc_call(f1.cfg.advertise, frame, timeout=10.0)
        assert reply["t"] == "ok", reply
        assert f1.statistics()["forward"]["retries"] >= 1
        # the client did not see the answer and retries elsewhere: the same write, once
        again = write("put", 1, k=b"killed", val=b"twice")
        assert (await rpc_call(f2.cfg.advertise, again, timeout=10.0))["t"] == "ok"
        for n in (f1, f2):
            assert await read(n, b"killed") == b"once"
        nursery.cancel_scope.cancel()
