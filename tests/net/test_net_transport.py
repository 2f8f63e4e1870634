"""rkv.net.transport: PeerTransport against real rpc.serve() servers on loopback."""

from __future__ import annotations

import random
from functools import partial
from typing import Any

import pytest
import trio

from rkv.net.rpc import ConnInfo, RemoteError, ServerStats, serve
from rkv.net.transport import PeerTransport

HOST = "127.0.0.1"
Frame = dict[str, Any]


class Sink:
    """A node's inbound side: records one-way frames and hellos."""

    def __init__(self, cluster: str | None = None) -> None:
        self.frames: list[Frame] = []
        self.hellos: list[Frame] = []
        self.cluster = cluster

    async def __call__(self, frame: Frame, info: ConnInfo) -> Frame | None:
        self.frames.append(frame)
        return None

    def on_hello(self, frame: Frame) -> None:
        if self.cluster is not None and frame.get("cluster") != self.cluster:
            raise RemoteError("wrong_cluster", f"this is cluster {self.cluster}")
        self.hellos.append(frame)


async def start_sink(nursery: trio.Nursery, sink: Sink, port: int = 0) -> int:
    bound: int = await nursery.start(
        partial(serve, sink, HOST, port, on_hello=sink.on_hello, stats=ServerStats())
    )
    return bound


async def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


def closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
    return port


async def test_delivers_in_order_after_hello(nursery: trio.Nursery) -> None:
    sink = Sink(cluster="c1")
    port = await start_sink(nursery, sink)
    tr = PeerTransport(
        "a", {"a": (HOST, 1), "b": (HOST, port)}, hello={"cluster": "c1", "node": "a"}
    )
    await nursery.start(tr.run)
    for i in range(20):
        assert tr.send("b", {"t": "raft", "n": i})
    await wait_for(lambda: len(sink.frames) == 20)
    assert [f["n"] for f in sink.frames] == list(range(20))
    assert sink.hellos == [{"v": 1, "t": "hello", "cluster": "c1", "node": "a"}]
    stats = tr.statistics()
    assert list(stats) == ["b"]  # self is never a peer
    assert stats["b"]["sent"] == 20 and stats["b"]["dropped"] == 0 and stats["b"]["connected"]


async def test_send_rejects_unknown_peers_and_misuse() -> None:
    tr = PeerTransport("a", {"b": (HOST, 1)}, max_frame=100)
    assert tr.send("zz", {"t": "raft"}) is False
    assert tr.unknown_dropped == 1
    with pytest.raises(ValueError):
        tr.send("b", {"t": "raft", "id": 3})
    with pytest.raises(ValueError):
        tr.send("b", {"t": "raft", "pad": b"x" * 200})
    with pytest.raises(TypeError):
        tr.send("b", {"no": "type"})
    assert tr.statistics()["b"]["queued"] == 0


def test_full_queue_drops_and_counts() -> None:
    tr = PeerTransport("a", {"b": (HOST, 1)}, queue_size=3)
    assert [tr.send("b", {"t": "raft", "n": i}) for i in range(5)] == [True] * 3 + [False] * 2
    stats = tr.statistics()["b"]
    assert (stats["queued"], stats["dropped"], stats["sent"]) == (3, 2, 0)


async def test_everything_queued_goes_in_one_write(nursery: trio.Nursery) -> None:
    sink = Sink()
    port = await start_sink(nursery, sink)
    tr = PeerTransport("a", {"b": (HOST, port)})
    await nursery.start(tr.run)
    tr.send("b", {"t": "raft", "n": -1})
    await wait_for(lambda: len(sink.frames) == 1)
    before = tr.statistics()["b"]["writes"]
    for i in range(100):  # no checkpoint in between: one batch
        tr.send("b", {"t": "raft", "n": i})
    await wait_for(lambda: len(sink.frames) == 101)
    assert tr.statistics()["b"]["writes"] - before == 1
    assert [f["n"] for f in sink.frames[1:]] == list(range(100))


async def test_reconnects_after_the_server_restarts(nursery: trio.Nursery) -> None:
    first = Sink()
    server1 = trio.CancelScope()

    async def run_first(task_status: trio.TaskStatus[int]) -> None:
        with server1:
            await serve(first, HOST, 0, task_status=task_status)

    port = await nursery.start(run_first)
    tr = PeerTransport("a", {"b": (HOST, port)}, backoff_min=0.02, backoff_max=0.2)
    await nursery.start(tr.run)
    tr.send("b", {"t": "raft", "n": 0})
    await wait_for(lambda: len(first.frames) == 1)

    server1.cancel()
    await wait_for(lambda: not tr.statistics()["b"]["connected"])
    second = Sink()
    await start_sink(nursery, second, port)
    # Raft resends; so does this loop, until the new server hears from us.
    with trio.fail_after(10):
        while not second.frames:
            tr.send("b", {"t": "raft", "n": 1})
            await trio.sleep(0.05)
    stats = tr.statistics()["b"]
    assert stats["reconnects"] >= 1 and stats["connected"]
    assert len(first.frames) == 1


async def test_backoff_grows_to_the_cap_while_peer_is_down(nursery: trio.Nursery) -> None:
    tr = PeerTransport(
        "a", {"b": (HOST, closed_port())}, backoff_min=0.01, backoff_max=0.08, rng=random.Random(7)
    )
    await nursery.start(tr.run)
    seen: list[float] = []
    with trio.move_on_after(1.5):
        while not seen or seen[-1] < 0.08:
            tr.send("b", {"t": "raft"})
            backoff = tr.statistics()["b"]["backoff"]
            if backoff and (not seen or seen[-1] != backoff):
                seen.append(backoff)
            await trio.sleep(0.002)
    assert seen == sorted(seen)
    assert seen[-1] == 0.08
    assert len(seen) >= 3
    stats = tr.statistics()["b"]
    assert stats["sent"] == 0 and not stats["connected"]
    assert stats["dropped"] > 0  # frames for an unreachable peer are dropped, not hoarded
    assert "connect" in (stats["last_error"] or "")


async def test_membership_changes(nursery: trio.Nursery) -> None:
    one, two = Sink(), Sink()
    port1 = await start_sink(nursery, one)
    port2 = await start_sink(nursery, two)
    tr = PeerTransport("a", {"b": (HOST, port1)})
    await nursery.start(tr.run)
    tr.add_peer("c", (HOST, port2))
    assert tr.send("c", {"t": "raft", "to": "c"})
    await wait_for(lambda: len(two.frames) == 1)

    tr.remove_peer("c")
    assert tr.send("c", {"t": "raft"}) is False
    assert "c" not in tr.statistics()

    tr.set_peers({"a": (HOST, 1), "b": (HOST, port2)})  # b moved to the second server
    assert tr.peers == {"b": (HOST, port2)}
    assert tr.send("b", {"t": "raft", "to": "b"})
    await wait_for(lambda: len(two.frames) == 2)
    assert two.frames[-1]["to"] == "b"
    assert one.frames == []


async def test_refused_hello_is_reported(nursery: trio.Nursery) -> None:
    sink = Sink(cluster="c1")
    port = await start_sink(nursery, sink)
    tr = PeerTransport(
        "a", {"b": (HOST, port)}, hello={"cluster": "c2", "node": "a"}, backoff_max=0.1
    )
    await nursery.start(tr.run)
    with trio.fail_after(5):
        while "wrong_cluster" not in (tr.statistics()["b"]["last_error"] or ""):
            tr.send("b", {"t": "raft"})
            await trio.sleep(0.02)
    assert sink.frames == [] and sink.hellos == []


class Refuser(Sink):
    """Refuses the hello of node "gone"; answers node "later"'s frames with an error."""

    async def __call__(self, frame: Frame, info: ConnInfo) -> Frame | None:
        if info.hello is not None and info.hello.get("node") == "later":
            raise RemoteError("removed_node", "later was removed")
        return await super().__call__(frame, info)

    def on_hello(self, frame: Frame) -> None:
        if frame.get("node") == "gone":
            raise RemoteError("removed_node", "gone was removed")
        super().on_hello(frame)


@pytest.mark.parametrize("me", ["gone", "later"])
async def test_refusals_reach_on_refused(nursery: trio.Nursery, me: str) -> None:
    # at the hello, or as the error frame a peer answers a one-way frame with
    port = await start_sink(nursery, Refuser())
    heard: list[tuple[str, str]] = []
    tr = PeerTransport(
        me,
        {"b": (HOST, port)},
        hello={"cluster": "c1", "node": me},
        on_refused=lambda peer, code: heard.append((peer, code)),
    )
    await nursery.start(tr.run)
    tr.send("b", {"t": "raft", "n": 1})
    await wait_for(lambda: bool(heard))
    assert heard[0] == ("b", "removed_node")
