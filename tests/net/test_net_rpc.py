"""rkv.net.rpc: serve() and RpcClient over real loopback sockets."""

from __future__ import annotations

import math
import random
import struct
from functools import partial
from typing import Any

import pytest
import trio

from rkv.errors import NotLeader
from rkv.net.framing import E_BAD_MSGPACK, E_FRAME_TIMEOUT, E_TOO_LARGE, FrameDecoder, encode_frame
from rkv.net.rpc import (
    ConnectionLost,
    ConnInfo,
    RemoteError,
    RpcClient,
    RpcError,
    RpcTimeout,
    ServerStats,
    serve,
)
from rkv.net.stream import FramedStream

HOST = "127.0.0.1"
Frame = dict[str, Any]


class App:
    """A test handler whose behaviour is chosen by the frame type."""

    def __init__(self) -> None:
        self.running = 0
        self.max_running = 0
        self.oneway: list[Frame] = []
        self.gate = trio.Event()

    async def __call__(self, frame: Frame, info: ConnInfo) -> Frame | None:
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            return await self.dispatch(frame, info)
        finally:
            self.running -= 1

    async def dispatch(self, frame: Frame, info: ConnInfo) -> Frame | None:
        t = frame["t"]
        if "id" not in frame:
            self.oneway.append(frame)
            return None
        if t == "echo":
            return {"t": "ok", "x": frame.get("x")}
        if t == "sleep":
            await trio.sleep(frame["d"])
            return {"t": "ok", "x": frame["x"]}
        if t == "gate":
            await self.gate.wait()
            return {"t": "ok", "x": frame["x"]}
        if t == "forever":
            await trio.sleep_forever()
        if t == "bad":
            raise RemoteError("bad_request", "nope", {"hint": 42})
        if t == "not_leader":
            raise NotLeader(leader_addr="10.0.0.1:7000")
        if t == "boom":
            raise ValueError("kaboom")
        if t == "unencodable":
            return {"t": "ok", "o": object()}
        if t == "whoami":
            return {"t": "ok", "hello": info.hello, "peer": info.peer}
        raise RemoteError("unknown_type", t)


async def start(nursery: trio.Nursery, app: App, **kw: Any) -> tuple[int, ServerStats]:
    stats = ServerStats()
    port: int = await nursery.start(partial(serve, app, HOST, 0, stats=stats, **kw))
    return port, stats


async def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


async def read_until_eof(stream: trio.abc.Stream, timeout: float = 5.0) -> list[Frame]:
    """Every frame the server sends until it closes the connection."""
    dec = FrameDecoder()
    frames: list[Frame] = []
    with trio.fail_after(timeout):
        while True:
            try:
                data = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                break
            if not data:
                break
            frames.extend(dec.feed(data))
    return frames


# -- calls -----------------------------------------------------------------------------


async def test_concurrent_calls_are_multiplexed_out_of_order(nursery: trio.Nursery) -> None:
    port, stats = await start(nursery, App())
    results: dict[int, Any] = {}
    async with RpcClient(HOST, port) as client:

        async def one(i: int) -> None:
            # Later calls finish first: answers come back out of order.
            reply = await client.call({"t": "sleep", "d": (40 - i) * 0.005, "x": i}, timeout=10)
            results[i] = reply["x"]

        async with trio.open_nursery() as calls:
            for i in range(40):
                calls.start_soon(one, i)
    assert results == {i: i for i in range(40)}
    assert stats.accepted == 1  # all on one connection
    assert stats.requests == 40


async def test_timeout_leaves_connection_usable(nursery: trio.Nursery) -> None:
    port, _ = await start(nursery, App())
    async with RpcClient(HOST, port) as client:
        start_t = trio.current_time()
        with pytest.raises(RpcTimeout):
            await client.call({"t": "forever"}, timeout=0.2)
        assert trio.current_time() - start_t < 3
        assert (await client.call({"t": "echo", "x": 1}))["x"] == 1
        stats = client.statistics()
        assert stats["timeouts"] == 1 and stats["pending"] == 0 and stats["connected"]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param(10.0, 0.2, id="shorter-than-any-before"),
        pytest.param(0.3, 0.3, id="same-timeout"),
        pytest.param(math.inf, 0.2, id="after-a-call-without-timeout"),
    ],
)
async def test_watchdog_times_out_each_call_at_its_own_deadline(
    nursery: trio.Nursery, first: float, second: float
) -> None:
    """Calls are timed out by the connection's watchdog (no cancel scope per call): a call due
    before the watchdog's next wake-up must wake it, and one call's timeout must not touch
    another's."""
    app = App()
    port, _ = await start(nursery, app)
    async with RpcClient(HOST, port) as client, trio.open_nursery() as calls:
        outcome: dict[str, Any] = {}

        async def long_call() -> None:
            try:
                outcome["first"] = await client.call({"t": "gate", "x": 1}, timeout=first)
            except RpcTimeout:
                outcome["first"] = "timeout"

        calls.start_soon(long_call)
        await wait_for(lambda: app.running == 1)
        t0 = trio.current_time()
        with pytest.raises(RpcTimeout):
            await client.call({"t": "forever"}, timeout=second)
        waited = trio.current_time() - t0
        assert second * 0.9 <= waited < second + 3  # on time, within a generous margin
        if first > second + 3:
            assert "first" not in outcome  # still waiting: its deadline is far off
            app.gate.set()
            await wait_for(lambda: "first" in outcome)
            assert outcome["first"]["x"] == 1
        else:
            await wait_for(lambda: "first" in outcome)
            assert outcome["first"] == "timeout"
            app.gate.set()
    assert client.statistics()["pending"] == 0


@pytest.mark.parametrize(
    ("t", "code", "fields"),
    [
        ("bad", "bad_request", {"hint": 42}),
        ("not_leader", "not_leader", {"leader_addr": "10.0.0.1:7000"}),
        ("boom", "internal", {}),
        ("unencodable", "internal", {}),
        ("no_such_type", "unknown_type", {}),
    ],
)
async def test_error_frames(nursery: trio.Nursery, t: str, code: str, fields: Frame) -> None:
    port, _ = await start(nursery, App())
    async with RpcClient(HOST, port) as client:
        with pytest.raises(RemoteError) as info:
            await client.call({"t": t})
        assert info.value.code == code
        assert info.value.fields == fields
        assert info.value.frame["t"] == "error"
        # A request-level error keeps the connection.
        assert (await client.call({"t": "echo", "x": "still"}))["x"] == "still"


async def test_oneway_frames_get_no_reply(nursery: trio.Nursery) -> None:
    app = App()
    port, stats = await start(nursery, app)
    async with RpcClient(HOST, port) as client:
        await client.send_oneway({"t": "raft", "m": [1, 2]})
        await client.send_oneway({"t": "bad"})  # a failing one-way frame answers nothing
        assert (await client.call({"t": "echo", "x": 3}))["x"] == 3
        await wait_for(lambda: len(app.oneway) == 2)
        with pytest.raises(ValueError):
            await client.send_oneway({"t": "x", "id": 1})
    assert stats.oneway == 2
    assert [f["t"] for f in app.oneway] == ["raft", "bad"]


async def test_local_misuse_raises_locally(nursery: trio.Nursery) -> None:
    port, stats = await start(nursery, App(), max_frame=1000)
    async with RpcClient(HOST, port, max_frame=1000) as client:
        with pytest.raises(TypeError):
            await client.call({"t": "echo", "x": object()})
        with pytest.raises(ValueError):
            await client.call({"t": "echo", "x": b"y" * 2000})
        assert (await client.call({"t": "echo", "x": 5}))["x"] == 5
    assert stats.requests == 1


async def test_responses_ready_together_go_out_in_one_write(nursery: trio.Nursery) -> None:
    app = App()
    port, stats = await start(nursery, app)
    async with RpcClient(HOST, port) as client, trio.open_nursery() as calls:
        for i in range(10):
            calls.start_soon(partial(client.call, {"t": "gate", "x": i}, timeout=10))
        await wait_for(lambda: app.running == 10)
        before = stats.writes
        app.gate.set()
    assert stats.writes - before == 1


# -- server limits ---------------------------------------------------------------------


async def test_inflight_bound_per_connection(nursery: trio.Nursery) -> None:
    app = App()
    port, stats = await start(nursery, app, max_inflight_per_conn=4)
    async with RpcClient(HOST, port, max_inflight=64) as client, trio.open_nursery() as calls:
        for i in range(40):
            calls.start_soon(partial(client.call, {"t": "sleep", "d": 0.02, "x": i}, timeout=20))
    assert app.max_running == 4
    assert stats.max_inflight_seen == 4
    assert stats.requests == 40


async def test_client_inflight_bound_waiters_block(nursery: trio.Nursery) -> None:
    app = App()
    port, stats = await start(nursery, app)
    async with RpcClient(HOST, port, max_inflight=2) as client:
        async with trio.open_nursery() as calls:
            for i in range(6):
                calls.start_soon(
                    partial(client.call, {"t": "sleep", "d": 0.05, "x": i}, timeout=10)
                )
        assert app.max_running == 2
        assert stats.requests == 6


async def test_waiting_for_a_client_slot_counts_in_the_timeout(nursery: trio.Nursery) -> None:
    app = App()
    port, stats = await start(nursery, app)
    async with RpcClient(HOST, port, max_inflight=1) as client, trio.open_nursery() as calls:
        calls.start_soon(partial(client.call, {"t": "gate", "x": 1}, timeout=10))
        await wait_for(lambda: app.running == 1)
        with pytest.raises(RpcTimeout):
            await client.call({"t": "echo"}, timeout=0.2)
        app.gate.set()
    assert stats.requests == 1  # the second call never left the client


async def test_garbage_closes_only_that_connection(nursery: trio.Nursery) -> None:
    port, stats = await start(nursery, App())
    async with RpcClient(HOST, port) as good:
        assert (await good.call({"t": "echo", "x": 1}))["x"] == 1
        raw = await trio.open_tcp_stream(HOST, port)
        await raw.send_all(struct.pack(">I", 3) + b"\xc1\xc1\xc1" + b"more garbage")
        frames = await read_until_eof(raw)
        await raw.aclose()
        assert [(f["t"], f["code"]) for f in frames] == [("error", E_BAD_MSGPACK)]
        assert "id" not in frames[0]
        assert (await good.call({"t": "echo", "x": 2}))["x"] == 2
    assert stats.frame_errors == 1


async def test_oversize_header_answered_before_any_body(nursery: trio.Nursery) -> None:
    port, _ = await start(nursery, App(), max_frame=1 << 16)
    raw = await trio.open_tcp_stream(HOST, port)
    await raw.send_all(struct.pack(">I", 1 << 30))  # claims 1 GiB and sends nothing more
    frames = await read_until_eof(raw)
    await raw.aclose()
    assert [f["code"] for f in frames] == [E_TOO_LARGE]


async def test_slowloris_frame_deadline(nursery: trio.Nursery) -> None:
    port, _ = await start(nursery, App(), frame_timeout=0.3, idle_timeout=60)
    raw = await trio.open_tcp_stream(HOST, port)
    await raw.send_all(encode_frame({"t": "echo", "id": 1, "x": b"p" * 100})[:10])
    start_t = trio.current_time()
    frames = await read_until_eof(raw)
    await raw.aclose()
    assert [f["code"] for f in frames] == [E_FRAME_TIMEOUT]
    assert 0.25 <= trio.current_time() - start_t < 4


async def test_idle_connections_closed_but_slow_calls_are_not(nursery: trio.Nursery) -> None:
    port, stats = await start(nursery, App(), idle_timeout=0.3)
    async with RpcClient(HOST, port) as busy:
        # A call outlasting the idle timeout is not idleness.
        assert (await busy.call({"t": "sleep", "d": 0.8, "x": 1}))["x"] == 1
    async with RpcClient(HOST, port) as idle:
        await wait_for(lambda: stats.idle_closed == 1)
        await wait_for(lambda: not idle.connected)
        with pytest.raises(ConnectionLost, match="idle_timeout"):
            await idle.call({"t": "echo"})
    await wait_for(lambda: stats.active == 0)


async def test_eof_after_requests_still_answers_them(nursery: trio.Nursery) -> None:
    port, _ = await start(nursery, App())
    stream = await trio.open_tcp_stream(HOST, port)
    fs = FramedStream(stream)
    await fs.send_many(
        [{"t": "sleep", "id": 1, "d": 0.2, "x": "a"}, {"t": "echo", "id": 2, "x": "b"}]
    )
    await stream.send_eof()
    frames = await read_until_eof(stream)
    await stream.aclose()
    assert sorted((f["id"], f["x"]) for f in frames) == [(1, "a"), (2, "b")]


async def test_max_connections(nursery: trio.Nursery) -> None:
    port, stats = await start(nursery, App(), max_connections=2)
    async with RpcClient(HOST, port) as c1, RpcClient(HOST, port) as c2:
        await c1.call({"t": "echo"})
        await c2.call({"t": "echo"})
        async with RpcClient(HOST, port) as c3:
            with pytest.raises(RpcError, match="too_many_connections"):
                await c3.call({"t": "echo"})
        assert stats.refused == 1
    await wait_for(lambda: stats.active == 0)
    async with RpcClient(HOST, port) as c4:
        assert (await c4.call({"t": "echo", "x": 4}))["x"] == 4


async def test_port_in_use_is_a_clear_oserror() -> None:
    listeners = await trio.open_tcp_listeners(0, host=HOST)
    port = listeners[0].socket.getsockname()[1]
    try:
        with pytest.raises(OSError, match=f"{HOST}:{port}"):
            await serve(App(), HOST, port)
    finally:
        await listeners[0].aclose()


async def test_server_shutdown_fails_pending_calls() -> None:
    async with trio.open_nursery() as outer:
        server_scope = trio.CancelScope()

        async def run_server(task_status: trio.TaskStatus[int]) -> None:
            with server_scope:
                await serve(App(), HOST, 0, task_status=task_status)

        port = await outer.start(run_server)
        async with RpcClient(HOST, port) as client:
            async with trio.open_nursery() as n:
                n.start_soon(partial(trio.sleep, 0.1))
                errors: list[BaseException] = []

                async def pending() -> None:
                    try:
                        await client.call({"t": "forever"}, timeout=10)
                    except RpcError as exc:
                        errors.append(exc)

                n.start_soon(pending)
                await trio.sleep(0.1)
                server_scope.cancel()
            assert len(errors) == 1 and isinstance(errors[0], ConnectionLost)
            with pytest.raises(ConnectionLost):
                await client.call({"t": "echo"})


async def test_connect_refused_is_connection_lost() -> None:
    listeners = await trio.open_tcp_listeners(0, host=HOST)
    port = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()
    with pytest.raises(ConnectionLost, match=str(port)):
        async with RpcClient(HOST, port, connect_timeout=2):
            pass


# -- hello -------------------------------------------------------------------------------


def only_cluster(name: str) -> Any:
    def check(frame: Frame) -> None:
        if frame.get("cluster") != name:
            raise RemoteError("wrong_cluster", f"this node belongs to {name!r}")

    return check


async def test_hello_accepted_and_visible_to_handler(nursery: trio.Nursery) -> None:
    port, _ = await start(nursery, App(), on_hello=only_cluster("c1"))
    async with RpcClient(HOST, port, hello={"cluster": "c1", "node": "n2"}) as client:
        reply = await client.call({"t": "whoami"})
    assert reply["hello"]["node"] == "n2"
    assert reply["peer"].startswith(HOST)


async def test_hello_refused(nursery: trio.Nursery) -> None:
    app = App()
    port, _ = await start(nursery, app, on_hello=only_cluster("c1"))
    async with RpcClient(HOST, port, hello={"cluster": "other", "node": "n9"}) as client:
        with pytest.raises(RpcError, match="wrong_cluster"):
            await client.call({"t": "echo"})
    assert app.max_running == 0


async def test_hello_with_id_is_acknowledged(nursery: trio.Nursery) -> None:
    port, _ = await start(nursery, App(), on_hello=only_cluster("c1"))
    async with FramedStream(await trio.open_tcp_stream(HOST, port)) as fs:
        await fs.send({"t": "hello", "id": 5, "cluster": "c1", "node": None})
        assert await fs.receive() == {"v": 1, "t": "ok", "id": 5}
        await fs.send({"t": "hello", "cluster": "c1"})  # only the first frame may be a hello
        frames = await read_until_eof(fs.stream)
    assert [f["code"] for f in frames] == ["bad_hello"]


async def test_require_hello(nursery: trio.Nursery) -> None:
    port, _ = await start(nursery, App(), require_hello=True)
    async with RpcClient(HOST, port) as client:
        with pytest.raises(RpcError, match="hello_required"):
            await client.call({"t": "echo"})
    async with RpcClient(HOST, port, hello={"cluster": "any"}) as client:
        assert (await client.call({"t": "echo", "x": 1}))["x"] == 1


async def test_oneway_frames_are_handled_in_arrival_order(nursery: trio.Nursery) -> None:
    rng = random.Random(3)
    seen: list[int] = []

    async def handler(frame: Frame, info: ConnInfo) -> Frame | None:
        await trio.sleep(rng.random() * 0.005)  # would reorder concurrent handlers
        if "id" in frame:
            return {"t": "ok"}
        seen.append(frame["n"])
        return None

    port: int = await nursery.start(partial(serve, handler, HOST, 0))
    async with RpcClient(HOST, port) as client:
        for n in range(60):
            await client.send_oneway({"t": "raft", "n": n})
        await wait_for(lambda: len(seen) == 60)
    assert seen == list(range(60))


async def test_client_that_never_reads_is_cut_off(nursery: trio.Nursery) -> None:
    async def big(frame: Frame, info: ConnInfo) -> Frame | None:
        return {"t": "ok", "pad": b"x" * (1 << 20)}

    stats = ServerStats()
    port: int = await nursery.start(partial(serve, big, HOST, 0, write_timeout=0.3, stats=stats))
    raw = await trio.open_tcp_stream(HOST, port)
    # 24 MiB of answers: more than loopback socket buffers hold, and we read none of it.
    await raw.send_all(b"".join(encode_frame({"t": "get", "id": i}) for i in range(24)))
    await wait_for(lambda: stats.accepted == 1 and stats.active == 0, timeout=10)
    assert stats.requests == 24
    await raw.aclose()


# -- the front door: requests answered without a task each -------------------------------------


class FrontDoor:
    """Takes "fast*" frames: answers them later, from another task, as the frame says."""

    def __init__(self) -> None:
        self.taken: list[tuple[Frame, Any]] = []
        self.offered = 0

    def __call__(self, frame: Frame, info: ConnInfo, answer: Any) -> bool:
        self.offered += 1
        t = frame["t"]
        if t == "fast_raise":
            raise NotLeader(leader_addr="10.0.0.9:7000")
        if t == "fast_bug":
            raise ZeroDivisionError("front door bug")
        if not t.startswith("fast"):
            return False
        self.taken.append((frame, answer))
        return True

    def answer_all(self) -> None:
        taken, self.taken = self.taken, []
        for frame, answer in taken:
            t = frame["t"]
            if t == "fast_error":
                answer(RemoteError("bad_request", "refused", {"hint": 1}))
            elif t == "fast_twice":
                answer({"t": "ok", "n": 1})
                answer({"t": "ok", "n": 2})  # ignored: one answer per request
            else:
                answer({"t": "ok", "x": frame.get("x")})


@pytest.mark.parametrize(
    ("frame", "expect"),
    [
        pytest.param({"t": "fast", "x": 7}, {"t": "ok", "x": 7}, id="answered-later"),
        pytest.param({"t": "fast_twice"}, {"t": "ok", "n": 1}, id="first-answer-wins"),
        pytest.param(
            {"t": "fast_error"},
            {"t": "error", "code": "bad_request", "msg": "refused", "hint": 1},
            id="error-answer",
        ),
        pytest.param(
            {"t": "fast_raise"},
            {"t": "error", "code": "not_leader", "leader_addr": "10.0.0.9:7000"},
            id="front-door-raises",
        ),
        pytest.param({"t": "fast_bug"}, {"t": "error", "code": "internal"}, id="front-door-bug"),
        pytest.param({"t": "echo", "x": 3}, {"t": "ok", "x": 3}, id="declined-goes-to-handler"),
    ],
)
async def test_front_door_answers_like_the_handler(
    nursery: trio.Nursery, frame: Frame, expect: Frame
) -> None:
    door = FrontDoor()
    port, stats = await start(nursery, App(), front_door=door)
    async with RpcClient(HOST, port) as client:
        async with trio.open_nursery() as calls:
            got: dict[str, Frame] = {}

            async def call() -> None:
                try:
                    got["reply"] = await client.call(frame, timeout=10)
                except RemoteError as e:
                    got["reply"] = e.frame

            calls.start_soon(call)
            await wait_for(lambda: door.offered == 1)
            door.answer_all()
        reply = got["reply"]
        assert {k: reply.get(k) for k in expect} == expect
        assert door.offered == 1
        # the slot came back: the connection still serves
        assert (await client.call({"t": "echo", "x": 9}))["x"] == 9
    await wait_for(lambda: stats.inflight == 0)
    assert stats.requests == 2


async def test_front_door_slots_bound_what_is_taken(nursery: trio.Nursery) -> None:
    door = FrontDoor()
    port, stats = await start(nursery, App(), front_door=door, max_inflight_per_conn=3)
    async with RpcClient(HOST, port) as client, trio.open_nursery() as calls:
        for i in range(5):
            calls.start_soon(partial(client.call, {"t": "fast", "x": i}, timeout=10))
        await wait_for(lambda: len(door.taken) == 3)
        await trio.sleep(0.1)
        assert len(door.taken) == 3  # the reader waits for a slot: back-pressure
        while door.offered < 5 or door.taken:
            door.answer_all()
            await trio.sleep(0.01)
    assert stats.max_inflight_seen <= 3
    await wait_for(lambda: stats.inflight == 0)


async def test_eof_after_front_door_requests_still_answers_them(nursery: trio.Nursery) -> None:
    door = FrontDoor()
    port, _ = await start(nursery, App(), front_door=door)
    stream = await trio.open_tcp_stream(HOST, port)
    fs = FramedStream(stream)
    await fs.send_many([{"t": "fast", "id": 1, "x": "a"}, {"t": "fast", "id": 2, "x": "b"}])
    await stream.send_eof()
    await wait_for(lambda: len(door.taken) == 2)
    await trio.sleep(0.1)  # the server saw the EOF and still waits for the answers
    door.answer_all()
    frames = await read_until_eof(stream)
    await stream.aclose()
    assert sorted((f["id"], f["x"]) for f in frames) == [(1, "a"), (2, "b")]


async def test_oneway_door_keeps_arrival_order_with_the_queued_frames(
    nursery: trio.Nursery,
) -> None:
    """Frames the one-way door declines go to the handler's task; the door is not offered a
    frame while an earlier one still waits there, so the order of all of them holds."""
    seen: list[tuple[str, int]] = []
    slow = {n for n in range(40) if n % 7 == 3}

    async def handler(frame: Frame, info: ConnInfo) -> Frame | None:
        await trio.sleep(0.005)  # a one-way frame in the task is still queued meanwhile
        seen.append(("task", frame["n"]))
        return None

    def door(frame: Frame, info: ConnInfo) -> bool:
        if frame["n"] in slow:
            return False
        seen.append(("door", frame["n"]))
        return True

    stats = ServerStats()
    port: int = await nursery.start(partial(serve, handler, HOST, 0, oneway_door=door, stats=stats))
    async with RpcClient(HOST, port) as client:
        for n in range(40):
            await client.send_oneway({"t": "raft", "n": n})
        await wait_for(lambda: len(seen) == 40)
    assert [n for _, n in seen] == list(range(40))
    assert {n for how, n in seen if how == "task"} >= slow
    assert any(how == "door" for how, _ in seen)
    assert stats.oneway == 40
    await wait_for(lambda: stats.inflight == 0)


async def test_oneway_door_refusal_is_sent_like_the_handlers(nursery: trio.Nursery) -> None:
    def door(frame: Frame, info: ConnInfo) -> bool:
        raise RemoteError("removed_node", "go away")

    async def handler(frame: Frame, info: ConnInfo) -> Frame | None:
        raise AssertionError("the door took it")

    port: int = await nursery.start(partial(serve, handler, HOST, 0, oneway_door=door))
    stream = await trio.open_tcp_stream(HOST, port)
    fs = FramedStream(stream)
    await fs.send({"t": "raft", "m": []})
    with trio.fail_after(5):
        got = await fs.receive()
    await stream.aclose()
    assert got is not None and got["code"] == "removed_node"
