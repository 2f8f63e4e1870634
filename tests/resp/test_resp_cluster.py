"""RESP on an in-process 3-node cluster, with redis-py (a client nobody here wrote): through a
follower (it forwards writes to the leader itself; reads are linearizable), RESP2 and RESP3
pipelines, across the leader's stop (commands keep working through the election; a write
retried by the node is applied once), and with the cluster token on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import trio

from rkv.node import Node
from rkv.testing import RestartableNode, local_configs, running_cluster, wait_leader

TOKEN = "resp-cluster-token-0123"


async def in_thread(fn: Callable[[], Any]) -> Any:
    return await trio.to_thread.run_sync(fn)


def client(node: Node, **kw: Any) -> redis.Redis:
    assert node.resp_port is not None
    return redis.Redis(port=node.resp_port, socket_timeout=30, **kw)


@pytest.mark.parametrize("protocol", [2, 3])
async def test_redis_py_through_a_follower(tmp_path: Path, protocol: int) -> None:
    async with running_cluster(local_configs(tmp_path, 3, resp_port=0)) as nodes:
        leader = await wait_leader(nodes)
        follower = next(n for n in nodes if n is not leader)

        def work() -> None:
            r = client(follower, protocol=protocol)
            assert r.set("greeting", "hello")
            assert r.get("greeting") == b"hello"  # linearizable: sees its own write
            assert r.set("greeting", "other", nx=True) is None
            assert r.setnx("fresh", "1")
            p = r.pipeline(transaction=False)
            for i in range(20):
                p.set(f"user:{i:02d}", f"v{i}")
            p.mget("user:00", "user:19", "missing")
            p.exists("user:00", "missing")
            p.delete("fresh")
            p.dbsize()
            out = p.execute()
            assert out[20:] == [[b"v0", b"v19", None], 1, 1, 21]
            assert sorted(r.keys("user:1*")) == [f"user:{i}".encode() for i in range(10, 20)]
            assert len(list(r.scan_iter(match="user:*", count=5))) == 20
            info = r.info("replication")
            assert info["role"] == "slave" and info["rkv_role"] == "follower"
            assert info["rkv_leader"] == leader.cfg.advertise
            with pytest.raises(redis.ResponseError, match="does not support 'expire'"):
                r.expire("greeting", 10)
            r.close()

        await in_thread(work)
        # the follower forwarded the writes: the leader holds them
        assert leader.store.get(b"greeting") == b"hello"
        assert follower.statistics()["forward"]["forwarded"] >= 20


async def test_read_modify_write_commands_with_redis_py(tmp_path: Path) -> None:
    """INCR and friends, APPEND, GETDEL, SET NX/XX/GET, MSET and MSETNX: each one txn in the
    state machine, through a follower (forwarded) and the leader, with Redis' error texts."""
    async with running_cluster(local_configs(tmp_path, 3, resp_port=0)) as nodes:
        leader = await wait_leader(nodes)
        follower = next(n for n in nodes if n is not leader)

        def work() -> None:
            r, lr = client(follower, protocol=3), client(leader, protocol=2)
            assert r.incr("hits") == 1
            assert lr.incrby("hits", 41) == 42
            assert r.decr("hits") == 41 and r.decrby("hits", 40) == 1
            assert r.incrbyfloat("price", "10.5") == 10.5
            assert r.incrbyfloat("price", "0.1") == 10.6 and r.get("price") == b"10.6"
            r.set("word", "abc")
            with pytest.raises(
                redis.ResponseError, match=r"^value is not an integer or out of range$"
            ):
                r.incr("word")
            assert r.append("word", "def") == 6 and lr.get("word") == b"abcdef"
            assert r.set("word", "x", nx=True, get=True) == b"abcdef"  # exists: not set
            assert r.get("word") == b"abcdef"
            assert r.set("new", "1", nx=True, get=True) is None and r.get("new") == b"1"
            assert r.set("new", "2", xx=True) is True and r.set("nope", "2", xx=True) is None
            assert r.getdel("new") == b"2" and r.get("new") is None
            assert r.mset({"m1": "a", "m2": "b"}) is True
            assert r.msetnx({"m2": "x", "m3": "y"}) is False  # m2 exists: nothing set
            assert r.get("m3") is None and r.get("m2") == b"b"
            assert lr.msetnx({"m3": "y", "m4": "z"}) is True
            assert lr.mget("m1", "m2", "m3", "m4") == [b"a", b"b", b"y", b"z"]
            # a pipeline of INCRs: each applied once, in order
            p = r.pipeline(transaction=False)
            for _ in range(30):
                p.incr("ctr")
            assert p.execute() == list(range(1, 31))
            r.close()
            lr.close()

        await in_thread(work)
        assert leader.store.get(b"hits") == b"1"
        assert follower.statistics()["forward"]["forwarded"] >= 10


async def test_across_a_leader_stop(tmp_path: Path) -> None:
    cfgs = local_configs(tmp_path, 3, resp_port=0)
    async with trio.open_nursery() as nursery:
        rnodes = [RestartableNode(c) for c in cfgs]
        nodes = [await r.start(nursery) for r in rnodes]
        leader = await wait_leader(nodes)
        follower = next(n for n in nodes if n is not leader)
        r = client(follower, protocol=3)
        stop = trio.Event()
        counts = {"ok": 0}

        def writer() -> None:
            i = 0
            while not stop.is_set() or i < 50:
                # no error reply across the election: the node retries "try again" answers
                assert r.set(f"k{i}", str(i)) is True
                assert r.get(f"k{i}") == str(i).encode()
                # a txn in the state machine, retried through the election: applied once
                assert r.incr("ctr") == i + 1
                i += 1
                counts["ok"] = i

        async with trio.open_nursery() as inner:
            inner.start_soon(in_thread, writer)
            while counts["ok"] < 20:
                await trio.sleep(0.05)
            await next(rn for rn in rnodes if rn.node is leader).stop()
            rest = [n for n in nodes if n is not leader]
            new_leader = await wait_leader(rest)
            assert new_leader is not leader
            before = counts["ok"]
            while counts["ok"] < before + 20:
                await trio.sleep(0.05)
            stop.set()
        n = counts["ok"]

        def check() -> None:
            assert r.mget([f"k{i}" for i in range(n)]) == [str(i).encode() for i in range(n)]
            assert r.get("ctr") == str(n).encode()
            r.close()

        await in_thread(check)
        nursery.cancel_scope.cancel()


async def test_with_the_cluster_token(tmp_path: Path) -> None:
    cfgs = local_configs(tmp_path, 3, resp_port=0, cluster_token=TOKEN)
    async with running_cluster(cfgs) as nodes:
        leader = await wait_leader(nodes)
        follower = next(n for n in nodes if n is not leader)

        def work() -> None:
            anon = client(follower)
            with pytest.raises(redis.AuthenticationError):
                anon.get("a")
            with pytest.raises(redis.AuthenticationError):
                client(follower, password="wrong-token-xxxxxxxx").ping()
            for protocol in (2, 3):
                r = client(follower, password=TOKEN, protocol=protocol)
                assert r.set("a", "b") and r.get("a") == b"b"
                r.close()
            r = client(follower, username="default", password=TOKEN, protocol=3)
            assert r.ping()
            r.close()

        await in_thread(work)
