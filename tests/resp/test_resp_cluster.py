"""RESP on an in-process 3-node cluster, with redis-py (a client nobody here wrote): through a
follower (it forwards writes to the leader itself; reads are linearizable), RESP2 and RESP3
pipelines, across the leader's stop (commands keep working through the election; a write
retried by the node is applied once), and with the cluster token on."""

from __future__ import annotations

import subprocess
import time
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
            assert r.expire("greeting", 100) and 98 <= r.ttl("greeting") <= 100
            r.close()

        await in_thread(work)
        # the follower forwarded the writes: the leader holds them
        assert leader.store.get(b"greeting") == b"hello"
        assert follower.statistics()["forward"]["forwarded"] >= 20


@pytest.mark.parametrize("protocol", [2, 3])
async def test_ttls_are_leases_with_redis_py(tmp_path: Path, protocol: int) -> None:
    """TTLs through a follower: a key is gone after its TTL (never before it; a TTL below
    the leases' 1 s minimum is raised to it), PERSIST keeps a key past it, and TTL, PTTL,
    EXPIREAT, SETEX, GETEX and KEEPTTL answer as Redis' do."""
    async with running_cluster(local_configs(tmp_path, 3, resp_port=0)) as nodes:
        leader = await wait_leader(nodes)
        follower = next(n for n in nodes if n is not leader)

        def work() -> None:
            r = client(follower, protocol=protocol)
            sent = time.monotonic()
            assert r.set("short", "v", px=100)
            assert 0 < r.pttl("short") <= 1000  # the lease's real remaining (1 s minimum)
            assert r.set("kept", "v", ex=1) and r.persist("kept") and r.ttl("kept") == -1
            assert r.set("plain", "p") and r.ttl("plain") == -1 and r.ttl("nothing") == -2
            assert r.pexpire("plain", 1500) and r.set("plain", "q", keepttl=True)
            assert 0 < r.pttl("plain") <= 1500
            assert r.set("long", "v", ex=100) and 98 <= r.ttl("long") <= 100
            assert not r.expire("long", 200, lt=True) and r.expire("long", 50, lt=True)
            assert r.setex("sx", 100, "v") and r.expireat("sx", int(time.time()) + 50)
            assert 48 <= r.ttl("sx") <= 50
            assert abs(r.expiretime("sx") - (time.time() + 50)) <= 3
            assert r.getex("sx", persist=True) == b"v" and r.ttl("sx") == -1
            with pytest.raises(redis.ResponseError, match="invalid expire time in 'set' command"):
                r.set("x", "v", ex=0)
            with pytest.raises(redis.ResponseError, match="Unsupported option SOON"):
                r.execute_command("EXPIRE", "sx", "10", "SOON")
            while r.exists("short"):
                assert time.monotonic() - sent < 15, "a 1 s lease outlived 15 s"
                time.sleep(0.05)
            assert time.monotonic() - sent >= 1.0, "gone before the lease's minimum TTL"
            while r.exists("plain"):
                assert time.monotonic() - sent < 15
                time.sleep(0.05)
            assert r.get("kept") == b"v" and r.ttl("long") > 40
            r.close()

        await in_thread(work)
        rec = leader.store.get_record(b"long")
        assert rec is not None and rec.lease >= 1 << 62  # a lease of the door's own
        # every replaced lease was revoked, the others expired with their keys
        assert [(st.id, st.keys) for st in leader.store.leases()] == [(rec.lease, 1)]


@pytest.mark.parametrize("protocol", [2, 3])
async def test_keyspace_notifications_with_redis_py(tmp_path: Path, protocol: int) -> None:
    """SUBSCRIBE and PSUBSCRIBE on a follower get the keyspace and keyevent messages of the
    writes made through the leader, in revision order, and an expired TTL as a del."""
    async with running_cluster(local_configs(tmp_path, 3, resp_port=0)) as nodes:
        leader = await wait_leader(nodes)
        follower = next(n for n in nodes if n is not leader)

        def work() -> None:
            r, w = client(follower, protocol=protocol), client(leader)
            p = r.pubsub()
            p.subscribe("__keyspace@0__:user:1", "__keyevent@0__:del")
            p.psubscribe("__keyspace@0__:job:*")
            confirms = [p.get_message(timeout=5) for _ in range(3)]
            assert [(m["type"], m["data"]) for m in confirms if m] == [
                ("subscribe", 1),
                ("subscribe", 2),
                ("psubscribe", 3),
            ]
            w.set("user:1", "a")
            w.delete("user:1")
            w.set("job:7", "x")
            w.set("other", "y")
            w.delete("other")
            w.set("tmp", "t", px=100)  # gone with its lease after the 1 s minimum
            want = [
                ("message", b"__keyspace@0__:user:1", b"set"),
                ("message", b"__keyspace@0__:user:1", b"del"),
                ("message", b"__keyevent@0__:del", b"user:1"),
                ("pmessage", b"__keyspace@0__:job:7", b"set"),
                ("message", b"__keyevent@0__:del", b"other"),
                ("message", b"__keyevent@0__:del", b"tmp"),
            ]
            got: list[tuple[str, bytes, bytes]] = []
            deadline = time.monotonic() + 20
            while len(got) < len(want) and time.monotonic() < deadline:
                m = p.get_message(timeout=1)
                if m is not None:
                    got.append((m["type"], m["channel"], m["data"]))
            assert got == want
            p.unsubscribe()
            p.punsubscribe()
            p.close()
            r.close()
            w.close()

        await in_thread(work)


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


def optimistic_increments(r: redis.Redis, key: str, times: int) -> int:
    """The classic WATCH / GET / MULTI / SET / EXEC loop: redis-py retries on WatchError.
    How many retries it took."""
    retries = 0
    for _ in range(times):
        with r.pipeline() as p:
            while True:
                try:
                    p.watch(key)
                    n = int(p.get(key) or 0)
                    p.multi()
                    p.set(key, n + 1)
                    p.execute()
                    break
                except redis.WatchError:
                    retries += 1
    return retries


@pytest.mark.parametrize("protocol", [2, 3])
async def test_multi_exec_and_watch_with_redis_py(tmp_path: Path, protocol: int) -> None:
    """MULTI/EXEC as one txn (pipelines with transaction=True), WATCH's conflicts between
    threads on a follower and the leader (no increment lost), a lock taken with SET NX and
    released under WATCH/MULTI, EXECABORT, and an EXEC whose op fails (nothing applied)."""
    async with running_cluster(local_configs(tmp_path, 3, resp_port=0)) as nodes:
        leader = await wait_leader(nodes)
        follower = next(n for n in nodes if n is not leader)

        def work() -> None:
            r, lr = client(follower, protocol=protocol), client(leader, protocol=protocol)
            r.set("word", "abc")
            p = r.pipeline()  # MULTI ... EXEC
            p.set("a", "1").incr("n").get("a").mget("a", "b").append("s", "xy").getdel("word")
            p.incrbyfloat("f", "0.5").exists("a", "b").delete("a2", "a3")
            assert p.execute() == [True, 1, b"1", [b"1", None], 2, b"abc", 0.5, 1, 0]
            assert lr.get("s") == b"xy" and lr.get("word") is None
            # an op that fails at EXEC: the whole EXEC fails and nothing is applied
            r.set("word", "abc")
            p = r.pipeline()
            p.set("untouched", "1").incr("word")
            with pytest.raises(redis.ResponseError, match="EXEC failed, nothing was applied"):
                p.execute()
            assert r.get("untouched") is None
            # an error while queueing: EXECABORT
            p = r.pipeline()
            p.set("untouched", "1").setnx("x", "1")
            with pytest.raises(redis.ResponseError):
                p.execute()
            assert r.get("untouched") is None
            # WATCH: a write by another client makes EXEC reply nil (WatchError)
            with r.pipeline() as p:
                p.watch("w")
                lr.set("w", "changed")
                p.multi()
                p.set("w", "mine")
                with pytest.raises(redis.WatchError):
                    p.execute()
            assert r.get("w") == b"changed"
            # a lock: SET NX PX (it expires if its holder dies), released under WATCH/MULTI
            # only by its holder
            assert r.set("lock", "token-1", nx=True, px=30_000) is True
            assert lr.set("lock", "token-2", nx=True, px=30_000) is None
            assert 0 < r.pttl("lock") <= 30_000

            def release(c: redis.Redis, token: bytes) -> bool:
                with c.pipeline() as p:
                    p.watch("lock")
                    if p.get("lock") != token:
                        p.unwatch()
                        return False
                    p.multi()
                    p.delete("lock")
                    return p.execute() == [1]

            assert not release(lr, b"token-2") and r.get("lock") == b"token-1"
            assert release(r, b"token-1") and lr.get("lock") is None
            r.close()
            lr.close()

        await in_thread(work)

        # optimistic increments from threads on two nodes: WATCH catches every conflict
        def worker(node: Node) -> int:
            c = client(node, protocol=protocol)
            try:
                return optimistic_increments(c, "counter", 15)
            finally:
                c.close()

        retries: list[int] = []

        async def one(node: Node) -> None:
            retries.append(await in_thread(lambda: worker(node)))

        async with trio.open_nursery() as nursery:
            for node in (leader, follower, follower, leader):
                nursery.start_soon(one, node)
        assert leader.store.get(b"counter") == b"60"  # no increment lost


async def test_scan_pages_and_multi_with_redis_cli(tmp_path: Path) -> None:
    """redis-cli (a client nobody here wrote): --scan pages through 300 keys (COUNT 10)
    while another client writes and deletes other keys; a MULTI/EXEC session on its stdin."""
    async with running_cluster(local_configs(tmp_path, 3, resp_port=0)) as nodes:
        leader = await wait_leader(nodes)
        follower = next(n for n in nodes if n is not leader)
        port = str(follower.resp_port)
        keys = {f"user:{i:04d}" for i in range(300)}

        def load() -> None:
            c = client(leader)
            for i in range(0, 300, 100):
                c.mset({k: "v" for k in sorted(keys)[i : i + 100]})
            c.close()

        await in_thread(load)
        stop = trio.Event()

        def churn() -> None:
            c = client(leader)
            i = 0
            while not stop.is_set():
                c.set(f"user:{i % 300:04d}x", "new")
                c.delete(f"user:{(i + 150) % 300:04d}x")
                i += 1
            c.close()

        def cli(*args: str, stdin: str | None = None) -> str:
            r = subprocess.run(
                ["redis-cli", "-p", port, *args],
                input=stdin,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert r.returncode == 0, r.stderr
            return r.stdout

        async with trio.open_nursery() as nursery:
            nursery.start_soon(in_thread, churn)
            try:
                scanned = await in_thread(lambda: cli("--scan", "--pattern", "user:*"))
            finally:
                stop.set()  # the thread cannot be cancelled: it must end by itself
        got = scanned.split()
        assert keys <= set(got)  # every key present for the whole scan
        assert len(got) == len(set(got))
        out = await in_thread(
            lambda: cli(stdin="MULTI\nSET a 1\nINCR n\nGET a\nMGET a nope\nEXEC\nGET n\n")
        )
        assert out.split("\n") == [
            "OK",
            "QUEUED",
            "QUEUED",
            "QUEUED",
            "QUEUED",
            "OK",
            "1",
            "1",
            "1",
            "",
            "1",
            "",
        ]
        out = await in_thread(lambda: cli(stdin="MULTI\nSETNX b 1\nEXEC\nEXISTS b\n"))
        assert "ERR rkv cannot queue 'setnx'" in out
        assert "EXECABORT Transaction discarded because of previous errors." in out
        assert out.rstrip().endswith("0")
        ttl = "SET t v EX 100\nTTL t\nPERSIST t\nTTL t\nEXPIRE t 50 XX\nTTL nope\nDEL a b t\n"
        out = await in_thread(lambda: cli(stdin=ttl))
        lines = out.split("\n")
        assert lines[0] == "OK" and lines[1] in ("99", "100"), out
        assert lines[2:] == ["1", "-1", "0", "-2", "2", ""], out  # b was never set
