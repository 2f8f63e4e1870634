"""The async client against the in-memory fake cluster: routing, retries, exactly-once."""

from __future__ import annotations

import random
import socket
from typing import Any

import pytest
import trio

import rkv
from rkv.client import Client, normalize_address, parse_addresses

from .fake import FakeCluster

FAST: dict[str, Any] = {"timeout": 3.0, "attempt_timeout": 0.3, "backoff_base": 0.01}


def closed_port() -> int:
    """A loopback port nothing listens on (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:50051", "127.0.0.1:50051"),
        ("http://127.0.0.1:50052", "127.0.0.1:50052"),
        ("http://127.0.0.1:50052/", "127.0.0.1:50052"),
        (" localhost:1 ", "localhost:1"),
        ("[::1]:7000", "[::1]:7000"),
        ("tcp://node-1.example:65535", "node-1.example:65535"),
    ],
)
def test_address_normalization(text: str, expected: str) -> None:
    assert normalize_address(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536", "host:port", "::1:80", "a b:1", "h:1/x"],
)
def test_bad_addresses_are_value_errors(text: str) -> None:
    with pytest.raises(ValueError, match="address"):
        normalize_address(text)


def test_address_lists() -> None:
    assert parse_addresses("http://a:1,b:2,,a:1") == ["a:1", "b:2"]
    assert parse_addresses(["a:1", "http://a:1"]) == ["a:1"]
    with pytest.raises(ValueError):
        parse_addresses(",")
    with pytest.raises(ValueError):
        Client("a:1", timeout=0)


async def test_basic_operations(cluster: FakeCluster) -> None:
    async with rkv.connect(cluster.addrs, **FAST) as c:
        await c.put("k1", b"v1")
        await c.put(b"k2", "v2")
        assert await c.get("k1") == b"v1"
        assert await c.get("missing") is None
        assert await c.cas("k1", b"nope", b"x") is False
        assert await c.cas("k1", "v1", "v1b") is True
        assert await c.cas("k3", None, "new") is True
        assert await c.cas("k3", None, "again") is False
        assert await c.scan("k", limit=2) == [(b"k1", b"v1b"), (b"k2", b"v2")]
        assert await c.delete("k2") is True
        assert await c.delete("k2") is False
        assert await c.scan(b"k") == [(b"k1", b"v1b"), (b"k3", b"new")]


@pytest.mark.parametrize("hide_hint", [False, True])
async def test_follows_redirect_and_remembers_leader(cluster: FakeCluster, hide_hint: bool) -> None:
    cluster.leader = 2
    cluster.hide_leader_hint = hide_hint
    async with rkv.connect(cluster.addrs[0], **FAST) as c:
        await c.put("a", "1")
        assert c.leader == cluster.addrs[2]
        assert cluster.requests[(0, "put")] == 1
        for i in range(5):
            await c.put(f"b{i}", "2")
        # Later writes go straight to the remembered leader.
        assert cluster.requests[(0, "put")] == 1
        assert cluster.requests[(2, "put")] == 6
        assert c.stats["redirects"] == 1
        # The hint comes with the error; only without it does the client ask for status.
        assert cluster.requests[(0, "status")] == int(hide_hint)


async def test_retry_after_dropped_reply_applies_once(cluster: FakeCluster) -> None:
    async with rkv.connect(cluster.addrs, **FAST) as c:
        cluster.drop_write_replies = 2
        await c.put("k", "v")
        assert cluster.requests[(0, "put")] == 3
        # Same client id and seq on every attempt, so the state machine applied it once.
        assert list(cluster.state.applied.items()) == [((c.client_id, 1), 1)]
        cluster.drop_write_replies = 1
        assert await c.delete("k") is True  # the retry gets the remembered result
        assert cluster.state.applied[(c.client_id, 2)] == 1
        assert await c.get("k") is None


async def test_new_leader_after_failover(cluster: FakeCluster) -> None:
    async with rkv.connect(cluster.addrs, **FAST) as c:
        await c.put("k", "1")
        assert c.leader == cluster.addrs[0]
        cluster.stop(0)
        cluster.leader = 1
        await c.put("k", "2")
        assert c.leader == cluster.addrs[1]
        assert await c.get("k") == b"2"


async def test_unavailable_nodes_are_retried_with_backoff(cluster: FakeCluster) -> None:
    cluster.unavailable = {0, 1, 2}

    async def heal() -> None:
        await trio.sleep(0.3)
        cluster.unavailable.clear()

    async with rkv.connect(cluster.addrs, **FAST) as c, trio.open_nursery() as n:
        n.start_soon(heal)
        await c.put("k", "v")
        assert c.stats["retries"] >= 1
    assert sum(cluster.state.applied.values()) == 1


async def test_deadline_raises_unavailable(cluster: FakeCluster) -> None:
    cluster.unavailable = {0, 1, 2}
    async with rkv.connect(cluster.addrs, timeout=0.5, backoff_base=0.01) as c:
        t0 = trio.current_time()
        with pytest.raises(rkv.Unavailable) as info:
            await c.get("k")
        assert trio.current_time() - t0 < 5.0  # generous: the deadline was 0.5 s
    msg = str(info.value)
    assert "\n" not in msg and "0.5s" in msg and "unavailable" in msg


async def test_unreachable_cluster_raises_unavailable() -> None:
    addrs = [f"127.0.0.1:{closed_port()}" for _ in range(3)]
    async with rkv.connect(addrs, timeout=0.5, backoff_base=0.01) as c:
        with pytest.raises(rkv.Unavailable, match="cluster unavailable"):
            await c.put("k", "v")
        rows = await c.status()
    assert [r["role"] for r in rows] == ["unreachable"] * 3


async def test_silent_node_times_out_and_client_moves_on(cluster: FakeCluster) -> None:
    cluster.silent = {1}
    async with rkv.connect([cluster.addrs[1], cluster.addrs[2]], **FAST) as c:
        assert await c.get("k") is None
        assert cluster.requests[(2, "get")] == 1


@pytest.mark.parametrize(
    ("code", "exc"),
    [
        ("not_found", rkv.NotFound),
        ("bad_request", rkv.BadRequest),
        ("store_full", rkv.StoreFull),
        ("internal", rkv.RkvError),
        ("something_new", rkv.RkvError),
    ],
)
async def test_definite_errors_are_not_retried(
    cluster: FakeCluster, code: str, exc: type[Exception]
) -> None:
    async def refuse(i: int, frame: dict[str, Any]) -> dict[str, Any]:
        cluster.requests[(i, frame["t"])] += 1
        return {"t": "error", "code": code, "msg": "nope"}

    cluster.handle = refuse  # type: ignore[method-assign]
    async with rkv.connect(cluster.addrs, **FAST) as c:
        with pytest.raises(exc, match="nope"):
            await c.put("k", "v")
    assert sum(cluster.requests.values()) == 1


async def test_concurrent_writes_use_separate_sessions(cluster: FakeCluster) -> None:
    """Many writes in flight from one Client never reuse a session concurrently (the state
    machine keeps one result per client id), and all are applied exactly once."""
    async with rkv.connect(cluster.addrs, **FAST) as c:
        cluster.drop_write_replies = 5
        async with trio.open_nursery() as n:
            for i in range(40):
                n.start_soon(c.put, f"k{i:02}", str(i))
        assert len(await c.scan("k")) == 40
    assert cluster.state.stale_seqs == 0
    assert len(cluster.state.applied) == 40
    assert set(cluster.state.applied.values()) == {1}


async def test_status_lists_every_node(cluster: FakeCluster) -> None:
    cluster.leader = 1
    async with rkv.connect(cluster.addrs[0], **FAST) as c:
        rows = await c.status()
        assert c.leader == cluster.addrs[1]
    assert sorted(r["addr"] for r in rows) == sorted(cluster.addrs)
    roles = {r["addr"]: r["role"] for r in rows}
    assert roles[cluster.addrs[1]] == "leader"
    assert sorted(roles.values()) == ["follower", "follower", "leader"]
    for r in rows:
        keys = {"id", "addr", "role", "term", "leader", "commit", "applied", "last_index"}
        assert keys <= r.keys()


async def test_status_marks_stopped_nodes_unreachable(cluster: FakeCluster) -> None:
    cluster.stop(2)
    await trio.sleep(0.05)
    async with rkv.connect(cluster.addrs, **FAST) as c:
        rows = await c.status()
    roles = {r["addr"]: r["role"] for r in rows}
    assert roles[cluster.addrs[2]] == "unreachable"
    assert roles[cluster.addrs[0]] == "leader"


@pytest.mark.parametrize("bad", ["", b"", "x" * 401])
async def test_bad_keys_raise_before_sending(cluster: FakeCluster, bad: str | bytes) -> None:
    async with rkv.connect(cluster.addrs, **FAST) as c:
        with pytest.raises(ValueError, match="key"):
            await c.put(bad, "v")
    assert sum(cluster.requests.values()) == 0


async def test_backoff_is_bounded_and_jittered() -> None:
    c = Client("a:1", backoff_base=0.1, backoff_max=1.0, rng=random.Random(1))
    delays = [c._backoff(a) for a in range(1, 30)]
    assert all(0 < d <= 1.0 for d in delays)
    assert delays[0] <= 0.2
    assert len(set(delays)) > 20
