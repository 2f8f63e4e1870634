"""An in-process 3-node cluster: three run_node in one trio nursery, real LMDB, loopback TCP.

Requests are sent as client-protocol frames with rkv.net's RpcClient / FramedStream (the real
client is tested elsewhere), so these tests pin the server side of docs/contracts.md.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import trio

from rkv.codec import message_to_wire
from rkv.config import NodeConfig
from rkv.net.rpc import RemoteError, RpcClient
from rkv.net.stream import open_framed
from rkv.node import Node, NodeStartError, Waiter, run_node
from rkv.raft.types import Message, MessageType
from rkv.testing import free_ports as free_ports
from rkv.testing import local_configs
from rkv.testing import running_cluster as cluster
from rkv.testing import wait_leader as wait_leader

CID = b"client-0000000001"[:16]


def configs(tmp: Path, ports: list[int], **kw: Any) -> list[NodeConfig]:
    return local_configs(tmp, ports, **kw)


def put(k: bytes, v: bytes, seq: int, client: bytes = CID) -> dict[str, Any]:
    return {"t": "put", "c": client, "s": seq, "k": k, "val": v}


async def raw_call(port: int, frame: dict[str, Any]) -> dict[str, Any]:
    """One request over a bare framed stream: returns the answer frame as is (error fields
    included, which RpcClient folds into an exception)."""
    fs = await open_framed("127.0.0.1", port)
    async with fs:
        await fs.send({**frame, "id": 1})
        with trio.fail_after(10):
            answer = await fs.receive()
    assert answer is not None
    return answer


async def test_writes_reads_redirect_and_status(tmp_path: Path) -> None:
    async with cluster(configs(tmp_path, free_ports(3))) as nodes:
        leader = await wait_leader(nodes)
        follower = next(n for n in nodes if n is not leader)
        async with RpcClient("127.0.0.1", leader.port) as c:
            assert (await c.call(put(b"a", b"1", 1)))["t"] == "ok"
            d = await c.call({"t": "delete", "c": CID, "s": 2, "k": b"nope"})
            assert d["existed"] is False
            cas = {"t": "cas", "c": CID, "s": 3, "k": b"a", "exp": b"1", "val": b"2"}
            assert (await c.call(cas))["swapped"] is True
            bad_cas = {**cas, "s": 4, "exp": None}
            assert (await c.call(bad_cas))["swapped"] is False
        # A follower serves linearizable reads: the write it has not necessarily applied yet
        # is visible because it waits for the leader's read index.
        async with RpcClient("127.0.0.1", follower.port) as f:
            got = await f.call({"t": "get", "k": b"a"})
            assert got["val"] == b"2"
            scan = await f.call({"t": "scan", "p": b"", "limit": 10})
            assert scan["items"] == [[b"a", b"2"]]
            missing = await f.call({"t": "get", "k": b"zz", "stale": True})
            assert missing["val"] is None
            st = await f.call({"t": "status"})
            assert st["role"] == "follower"
            assert st["leader"] == leader.cfg.id and st["leader_addr"] == leader.cfg.advertise
            assert st["addr"] == follower.cfg.advertise
            assert sorted(st["peers"]) == sorted(n.cfg.id for n in nodes if n is not follower)
            assert st["applied"] <= st["commit"] <= st["last_index"]
        # Writes on a follower are forwarded to the leader (rkv.forward), which it names;
        answer = await raw_call(follower.port, put(b"b", b"x", 1, client=b"f" * 16))
        assert answer["t"] == "ok" and answer["leader_addr"] == leader.cfg.advertise
        # one forwarded already is refused with the leader's address (no second hop), and
        # not applied.
        fwd = {**put(b"c", b"y", 1, client=b"g" * 16), "fwd": True}
        answer = await raw_call(follower.port, fwd)
        assert answer["t"] == "error" and answer["code"] == "not_leader"
        assert answer["leader_addr"] == leader.cfg.advertise
        # malformed requests are refused with a one-line reason
        # (puts take the rpc front door, without a task each: the same answers)
        for bad in (
            {"t": "put", "c": CID, "s": 0, "k": b"k", "val": b"v"},  # seq must be >= 1
            {"t": "put", "c": CID, "s": 1, "k": b"k"},  # no value
            {"t": "put", "c": CID, "s": 1, "k": "k", "val": b"v"},  # key not bytes
            {"t": "put", "c": CID, "s": 1, "k": b"", "val": b"v"},  # empty key
            {"t": "put", "s": 1, "k": b"k", "val": b"v"},  # no session id
            {"t": "put", "c": CID, "s": True, "k": b"k", "val": b"v"},  # seq not an int
        ):
            answer = await raw_call(leader.port, bad)
            assert answer["t"] == "error" and answer["code"] == "bad_request", bad
            assert answer["msg"] and "\n" not in answer["msg"]
        answer = await raw_call(leader.port, {"t": "frobnicate"})
        assert answer["code"] == "bad_request"
        # file_meta of a missing file
        answer = await raw_call(leader.port, {"t": "file_meta", "k": b"nofile"})
        assert answer["code"] == "not_found"
        for n in nodes:
            assert n.store.get(b"c") is None


async def test_same_client_seq_is_applied_once(tmp_path: Path) -> None:
    async with cluster(configs(tmp_path, free_ports(3))) as nodes:
        leader = await wait_leader(nodes)
        async with RpcClient("127.0.0.1", leader.port) as c:
            await c.call(put(b"k", b"1", 1))
            cas = {"t": "cas", "c": CID, "s": 2, "k": b"k", "exp": b"1", "val": b"2"}
            first = await c.call(cas)
            # The retry (same client, same seq) gets the saved result without re-applying...
            again = await c.call(cas)
            assert first["swapped"] is True and again["swapped"] is True
            # ...and a retried put with the same seq but another value changes nothing.
            await c.call(put(b"k", b"clobber", 2))
            got = await c.call({"t": "get", "k": b"k"})
            assert got["val"] == b"2"
        with trio.fail_after(5):
            while any(n.replica.applied < leader.replica.applied for n in nodes):
                await trio.sleep(0.02)
        for n in nodes:
            rec = n.store.get_record(b"k")
            assert rec is not None and rec.value == b"2" and rec.version == 2


async def test_group_commit_batches_concurrent_writes(tmp_path: Path) -> None:
    puts = 200
    async with cluster(configs(tmp_path, free_ports(3))) as nodes:
        leader = await wait_leader(nodes)
        before = leader.statistics()
        async with RpcClient("127.0.0.1", leader.port, max_inflight=puts) as c:

            async def one(i: int) -> None:
                await c.call(put(b"g%03d" % i, b"v", 1, client=b"%016d" % i))

            async with trio.open_nursery() as n:
                for i in range(puts):
                    n.start_soon(one, i)
            # Puts are answered once committed; a linearizable read waits until the store
            # applied them all.
            got = await c.call({"t": "get", "k": b"g%03d" % (puts - 1)})
            assert got["val"] == b"v"
        after = leader.statistics()
        saves = after["saves"] - before["saves"]
        applies = after["applies"] - before["applies"]
        assert after["store"]["kv_keys"] == puts
        # one durable write and one apply transaction per batch, not per put
        assert 0 < saves < puts // 2
        assert 0 < applies < puts // 2
        assert after["max_batch"] > 1


async def test_restart_all_nodes_keeps_data(tmp_path: Path) -> None:
    cfgs = configs(tmp_path, free_ports(3))
    async with cluster(cfgs) as nodes:
        leader = await wait_leader(nodes)
        async with RpcClient("127.0.0.1", leader.port) as c:
            for i in range(20):
                await c.call(put(b"r%02d" % i, b"%d" % i, i + 1))
    async with cluster(cfgs) as nodes:
        leader = await wait_leader(nodes)
        async with RpcClient("127.0.0.1", leader.port) as c:
            got = await c.call({"t": "scan", "p": b"r", "limit": 100})
            assert [v for _, v in got["items"]] == [b"%d" % i for i in range(20)]
            # the client session survived the restart: a retry of seq 20 is not re-applied
            await c.call(put(b"r19", b"changed", 20))
            assert (await c.call({"t": "get", "k": b"r19"}))["val"] == b"19"


async def test_foreign_cluster_hello_is_refused(tmp_path: Path) -> None:
    async with cluster(configs(tmp_path, free_ports(3))) as nodes:
        port = nodes[0].port
        fs = await open_framed("127.0.0.1", port)
        async with fs:
            await fs.send({"t": "hello", "cluster": "rkv-someoneelse", "node": nodes[1].cfg.id})
            with trio.fail_after(5):
                answer = await fs.receive()
            assert answer is not None and answer["t"] == "error"
            assert answer["code"] == "wrong_cluster"
        # A node outside our configuration is heard (the cluster's may be newer than ours,
        # and the sender may be a voter there), vote requests included; while a leader is
        # known, the lease makes a node ignore an unforced election, so it cannot disrupt one.
        await wait_leader(nodes)
        with trio.fail_after(10):
            while nodes[0].replica.raw.raft.leader == "":
                await trio.sleep(0.01)
        term = nodes[0].replica.raw.status().term
        fs = await open_framed("127.0.0.1", port)
        async with fs:
            await fs.send({"t": "hello", "cluster": nodes[0].cfg.cluster_id, "node": "x:1"})
            vote = Message(MessageType.VOTE, to=nodes[0].cfg.id, frm="x:1", term=term + 50)
            await fs.send({"t": "raft", "m": [message_to_wire(vote)]})
            with trio.move_on_after(0.5):
                answer = await fs.receive()
                assert answer is None or answer["t"] != "error", answer
        assert nodes[0].replica.raw.status().term < term + 50
        # Raft frames without a hello are dropped, not stepped.
        dropped = nodes[0].dropped_peer_frames
        fs = await open_framed("127.0.0.1", port)
        async with fs:
            await fs.send({"t": "raft", "m": []})
            with trio.fail_after(5):
                while nodes[0].dropped_peer_frames == dropped:
                    await trio.sleep(0.01)


async def test_port_in_use_and_foreign_data_dir_fail_with_exit_codes(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        cfg = NodeConfig.create(f"127.0.0.1:{port}", data_dir=tmp_path / "a")
        with pytest.raises(NodeStartError) as ei:
            await run_node(cfg)
        assert ei.value.code == 10 and str(port) in ei.value.msg
    other = NodeConfig.create(f"127.0.0.1:{port}", data_dir=tmp_path / "a", cluster_id="rkv-other")
    with pytest.raises(NodeStartError) as ei:
        await run_node(other)
    assert ei.value.code == 11 and "\n" not in ei.value.msg


async def test_single_node_cluster_commits_alone(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    cfg = NodeConfig.create(f"127.0.0.1:{port}", data_dir=tmp_path / "solo")
    async with cluster([cfg]) as nodes:
        await wait_leader(nodes)
        async with RpcClient("127.0.0.1", port) as c:
            await c.call(put(b"solo", b"1", 1))
            assert (await c.call({"t": "get", "k": b"solo"}))["val"] == b"1"
            with pytest.raises(RemoteError) as ei:
                await c.call({"t": "file_read", "k": b"f", "n": 0, "sha": b"x" * 32})
            assert ei.value.code == "not_found"


async def test_file_upload_meta_read_and_overwrite_detection(tmp_path: Path) -> None:
    import hashlib

    async with cluster(configs(tmp_path, free_ports(3))) as nodes:
        leader = await wait_leader(nodes)
        follower = next(n for n in nodes if n is not leader)
        chunks = [b"a" * 1000, b"b" * 1000, b"c" * 10]
        sha = hashlib.sha256(b"".join(chunks)).digest()
        async with RpcClient("127.0.0.1", leader.port) as c:
            for n, data in enumerate(chunks):
                frame = {"t": "file_chunk", "c": CID, "s": n + 1, "k": b"f", "u": b"up1"}
                await c.call({**frame, "n": n, "data": data})
            commit = {"t": "file_commit", "c": CID, "s": 4, "k": b"f", "u": b"up1"}
            await c.call({**commit, "size": 2010, "chunks": 3, "sha": sha})
            # a commit whose digest does not match is refused with a reason
            with pytest.raises(RemoteError) as ei:
                await c.call({**commit, "s": 5, "u": b"up2", "size": 0, "chunks": 0, "sha": sha})
            assert ei.value.code == "bad_request"
        async with RpcClient("127.0.0.1", follower.port) as f:
            meta = await f.call({"t": "file_meta", "k": b"f"})
            assert (meta["size"], meta["chunks"], meta["sha"]) == (2010, 3, sha)
            got = [
                (await f.call({"t": "file_read", "k": b"f", "n": n, "sha": sha}))["data"]
                for n in range(3)
            ]
            assert got == chunks
            with pytest.raises(RemoteError) as ei:
                await f.call({"t": "file_read", "k": b"f", "n": 0, "sha": b"\0" * 32})
            assert ei.value.code == "changed"
        async with RpcClient("127.0.0.1", leader.port) as c:
            d = await c.call({"t": "file_delete", "c": CID, "s": 6, "k": b"f"})
            assert d["existed"] is True


async def leader_alone(nursery: trio.Nursery, cfgs: list[NodeConfig]) -> Node:
    """Start the cluster, then stop every node but the leader: it is left without quorum."""
    scopes: list[trio.CancelScope] = []
    nodes: list[Node] = []

    async def run_one(cfg: NodeConfig, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope() as scope:
            scopes.append(scope)
            await run_node(cfg, task_status=task_status)

    for cfg in cfgs:
        nodes.append(await nursery.start(run_one, cfg))
    leader = await wait_leader(nodes)
    for node, scope in zip(nodes, scopes, strict=True):
        if node is not leader:
            scope.cancel()
    return leader


async def test_leader_without_quorum_answers_instead_of_hanging(tmp_path: Path) -> None:
    cfgs = configs(tmp_path, free_ports(3), request_timeout=1.0)
    async with trio.open_nursery() as nursery:
        leader = await leader_alone(nursery, cfgs)
        async with RpcClient("127.0.0.1", leader.port) as c:
            with trio.fail_after(5), pytest.raises(RemoteError) as ei:
                await c.call(put(b"k", b"v", 1))
            assert ei.value.code in {"timeout", "unavailable", "not_leader"}
            # a linearizable read cannot be confirmed either; a stale one is served
            with trio.fail_after(5), pytest.raises(RemoteError) as ei:
                await c.call({"t": "get", "k": b"k"})
            assert ei.value.code in {"timeout", "unavailable"}
            stale = await c.call({"t": "get", "k": b"k", "stale": True})
            assert stale["t"] == "ok"
        nursery.cancel_scope.cancel()


async def test_raft_loop_answers_timeout_and_stops_tracking(tmp_path: Path) -> None:
    """Request deadlines are kept by the raft loop (no cancel scope per request): a write that
    cannot commit gets `timeout` naming request_timeout, and the leader forgets it."""
    cfgs = configs(tmp_path, free_ports(3), request_timeout=1.0, check_quorum=False)
    async with trio.open_nursery() as nursery:
        leader = await leader_alone(nursery, cfgs)  # without CheckQuorum it stays leader
        async with RpcClient("127.0.0.1", leader.port) as c:
            with trio.fail_after(10), pytest.raises(RemoteError) as ei:
                await c.call(put(b"k", b"v", 1))
        assert ei.value.code == "timeout", ei.value
        assert "write not committed within 1.0 s" in ei.value.msg
        assert leader.replica.role.name == "LEADER"
        assert leader.replica.pending_proposals == 0
        nursery.cancel_scope.cancel()


def test_a_failing_answer_callback_does_not_escape_the_raft_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Waiter.finish runs in the raft loop (puts are answered from there): a bug in one
    answer is logged, the waiter is still done, and the loop goes on."""
    calls: list[Waiter] = []

    def broken(w: Waiter) -> None:
        calls.append(w)
        raise RuntimeError("boom")

    w = Waiter(on_done=broken)
    w.finish()
    assert w.done() and calls == [w]
    assert "answering a request failed" in caplog.text
