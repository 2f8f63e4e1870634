"""Issue 20's replaced disk, on real node runtimes (real TCP, real LMDB data dirs).

Three nodes A, B, C. C is cut off from A and B; `precious=acknowledged` is acknowledged by
the leader (A or B). A and B stop; B's data dir is deleted (its disk was replaced) and B is
started again with its usual config; C's partition heals; A stays down. B must not act as a
voter before it caught up (rkv.raft.recovery): B and C elect no leader and a linearizable get
of `precious` fails (unavailable / timeout) instead of answering "not found". Once A is back,
a leader is elected, every node serves the write and B recovers.

And a fresh cluster (every store is new, so every node starts recovering) costs nothing: it
elects a leader and serves at once.

Nodes run in-process (rkv.testing.RestartableNode: each in its own cancel scope, a clean
stop and a restart from the same config), reached over RPC like any client.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import trio

from rkv.nemesis.cluster import RPC_ERRORS, rpc_call
from rkv.net.rpc import RemoteError
from rkv.node import Node
from rkv.raft.types import Role
from rkv.testing import RestartableNode, local_configs, wait_leader

pytestmark = pytest.mark.e2e

KEY = b"precious"
VALUE = b"acknowledged"
REQUEST_TIMEOUT = 2.0
"""The nodes' request_timeout: how long a linearizable read waits for a read index."""
RPC_TIMEOUT = REQUEST_TIMEOUT + 2.0
NO_LEADER_WATCH = 3.0
"""How long B and C are watched for an election (election timeout: 0.2-0.4 s)."""
FAILED_READ_CODES = ("unavailable", "timeout", "not_leader")


async def status(node: Node) -> dict[str, Any]:
    return await rpc_call(node.cfg.advertise, {"t": "status"}, timeout=RPC_TIMEOUT)


async def fault(node: Node, drop_to: list[str], drop_from: list[str]) -> None:
    frame = {"t": "fault", "drop_to": drop_to, "drop_from": drop_from}
    reply = await rpc_call(node.cfg.advertise, frame, timeout=RPC_TIMEOUT)
    assert reply["drop_to"] == sorted(drop_to) and reply["drop_from"] == sorted(drop_from)


async def get(node: Node, key: bytes = KEY) -> dict[str, Any]:
    """A linearizable get through `node` (raises one of RPC_ERRORS)."""
    return await rpc_call(node.cfg.advertise, {"t": "get", "k": key}, timeout=RPC_TIMEOUT)


async def get_until_answered(node: Node, key: bytes = KEY, timeout: float = 20.0) -> bytes | None:
    """The value a linearizable get through `node` answers, retrying while it fails
    (right after an election a read may find no leader or no read index yet)."""
    with trio.fail_after(timeout):
        while True:
            try:
                reply = await get(node, key)
            except RPC_ERRORS:
                await trio.sleep(0.1)
                continue
            val = reply["val"]
            assert val is None or isinstance(val, bytes)
            return val


async def wait_statuses(nodes: list[Node], recovering: bool, timeout: float = 15.0) -> None:
    """Until every node's status (over RPC) shows `recovering`."""
    with trio.fail_after(timeout):
        while True:
            flags = [(await status(n))["recovering"] for n in nodes]
            if all(f is recovering for f in flags):
                return
            await trio.sleep(0.05)


async def test_replaced_disk_waits_for_the_cluster_instead_of_forgetting_a_write(
    tmp_path: Path,
) -> None:
    cfgs = local_configs(tmp_path, 3, fault_injection=True, request_timeout=REQUEST_TIMEOUT)
    a, b, c = (RestartableNode(cfg) for cfg in cfgs)
    a_id, b_id = cfgs[0].id, cfgs[1].id
    async with trio.open_nursery() as nursery:
        na, nb, nc = [await h.start(nursery) for h in (a, b, c)]
        # A fresh cluster: every node recovers at once (all answers are term 0); C must have
        # answered A and B before it is cut off.
        await wait_leader([na, nb, nc])
        await wait_statuses([na, nb, nc], recovering=False)

        # C is cut off from A and B (its own hooks drop both directions).
        await fault(nc, [a_id, b_id], [a_id, b_id])
        with trio.fail_after(15):
            while True:
                leaders = [n for n in (na, nb) if n.replica.role == Role.LEADER]
                if (
                    len(leaders) == 1
                    and nc.replica.role != Role.LEADER
                    and all(n.replica.leader == leaders[0].cfg.id for n in (na, nb))
                ):
                    break
                await trio.sleep(0.02)
        leader = leaders[0]
        put = {"t": "put", "c": os.urandom(16), "s": 1, "k": KEY, "val": VALUE}
        assert (await rpc_call(leader.cfg.advertise, put, timeout=RPC_TIMEOUT))["t"] == "ok"
        assert nc.store.get(KEY) is None  # only A and B have it
        assert nc.replica.raw.status().last_index < leader.replica.raw.status().last_index

        # A and B lose power; B's disk is replaced; B comes back with its usual config.
        await a.stop()
        await b.stop()
        shutil.rmtree(b.cfg.data_dir)
        nb = await b.start(nursery)
        assert nb.store.get(KEY) is None and nb.replica.raw.status().last_index == 0
        await fault(nc, [], [])  # the partition heals (A stays down)

        # B knows it may have forgotten votes and entries: it neither votes nor campaigns,
        # so B and C (C lacks the write) elect nobody.
        assert (await status(nb))["recovering"] is True
        with trio.move_on_after(NO_LEADER_WATCH):
            while True:
                leading = [n.cfg.id for n in (nb, nc) if n.replica.role == Role.LEADER]
                assert not leading, f"{leading} elected while A is down and B recovering"
                await trio.sleep(0.02)
        st_b, st_c = await status(nb), await status(nc)
        assert st_b["recovering"] is True, st_b
        assert st_b["role"] != "leader" and st_c["role"] != "leader", (st_b, st_c)
        assert st_c["recovering"] is False, st_c
        # A linearizable get fails (no leader) instead of answering "not found".
        for n in (nb, nc):
            try:
                reply = await get(n)
            except RemoteError as e:
                assert e.code in FAILED_READ_CODES, (n.cfg.id, e.code, e.msg)
            except RPC_ERRORS:
                pass  # no answer in time: unavailable too
            else:
                pytest.fail(f"linearizable get of {KEY!r} through {n.cfg.id} answered {reply!r}")

        # A returns: a leader is elected, the write is served everywhere, B caught up.
        na = await a.start(nursery)
        nodes = [na, nb, nc]
        await wait_leader(nodes, timeout=20.0)
        for n in nodes:
            val = await get_until_answered(n)
            assert val == VALUE, f"linearizable get through {n.cfg.id} answered {val!r}"
        await wait_statuses(nodes, recovering=False, timeout=20.0)
        assert nb.store.get(KEY) == VALUE
        assert nc.store.get(KEY) == VALUE
        nursery.cancel_scope.cancel()


async def test_fresh_cluster_elects_and_serves_at_once(tmp_path: Path) -> None:
    handles = [RestartableNode(cfg) for cfg in local_configs(tmp_path, 3)]
    async with trio.open_nursery() as nursery:
        nodes = [await h.start(nursery) for h in handles]
        # Every store is new (all start recovering); the recovery round trip answers term 0
        # from everyone, so the cluster is as available as before.
        leader = await wait_leader(nodes, timeout=15.0)
        put = {"t": "put", "c": os.urandom(16), "s": 1, "k": b"fresh", "val": b"ok"}
        assert (await rpc_call(leader.cfg.advertise, put, timeout=RPC_TIMEOUT))["t"] == "ok"
        for n in nodes:
            assert await get_until_answered(n, b"fresh", timeout=10.0) == b"ok", n.cfg.id
        await wait_statuses(nodes, recovering=False, timeout=5.0)
        nursery.cancel_scope.cancel()


async def test_no_voter_is_removed_while_another_member_recovers(tmp_path: Path) -> None:
    """A recovering member counts on answers from the voters it knows: removing one of them
    (which then stops) could leave it waiting forever, so the leader refuses, naming it. The
    recovering member itself may be removed."""
    cfgs = local_configs(tmp_path, 3, fault_injection=True, request_timeout=REQUEST_TIMEOUT)
    a, b, c = (RestartableNode(cfg) for cfg in cfgs)
    c_id = c.cfg.id
    async with trio.open_nursery() as nursery:
        na, nb, nc = [await h.start(nursery) for h in (a, b, c)]
        await wait_leader([na, nb, nc])
        await wait_statuses([na, nb, nc], recovering=False)
        # C's disk is replaced; A and B drop its Raft messages, so it stays recovering.
        await c.stop()
        shutil.rmtree(c.cfg.data_dir)
        for n in (na, nb):
            await fault(n, [], [c_id])
        nc = await c.start(nursery)
        assert (await status(nc))["recovering"] is True
        leader = await wait_leader([na, nb])
        other = nb if leader is na else na

        def member(op: str, node: str) -> dict[str, Any]:
            return {"t": "member", "op": op, "node": node}

        with pytest.raises(RemoteError) as refused:
            await rpc_call(
                leader.cfg.advertise, member("remove", other.cfg.id), timeout=RPC_TIMEOUT
            )
        assert refused.value.code == "bad_request"
        assert f"{c_id} is recovering from a replaced disk" in refused.value.msg
        assert other.cfg.id in leader.replica.raw.conf_state().voters

        reply = await rpc_call(leader.cfg.advertise, member("remove", c_id), timeout=RPC_TIMEOUT)
        assert c_id not in reply["voters"], reply
        nursery.cancel_scope.cancel()
