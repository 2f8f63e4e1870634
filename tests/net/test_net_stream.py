"""rkv.net.stream: FramedStream over in-memory and loopback streams."""

from __future__ import annotations

import socket
import struct
from functools import partial

import pytest
import trio
import trio.testing

from rkv.net.framing import E_FRAME_TIMEOUT, E_TOO_LARGE, E_TRUNCATED, FrameError, encode_frame
from rkv.net.stream import FramedStream, IdleTimeout, open_framed


class CountingStream(trio.abc.Stream):
    """Delegates to a stream and counts send_all calls."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.writes = 0

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.writes += 1
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


def pair(max_frame: int = 1 << 20) -> tuple[FramedStream, FramedStream]:
    a, b = trio.testing.memory_stream_pair()
    return FramedStream(a, max_frame), FramedStream(b, max_frame)


async def test_send_receive_and_clean_eof() -> None:
    left, right = pair()
    await left.send({"t": "a", "id": 1, "k": b"\x00"})
    frame = await right.receive()
    assert frame == {"t": "a", "id": 1, "k": b"\x00", "v": 1}
    await left.aclose()
    assert await right.receive() is None
    assert await right.receive() is None


async def test_send_many_is_one_write() -> None:
    a, b = trio.testing.memory_stream_pair()
    counting = CountingStream(a)
    left, right = FramedStream(counting), FramedStream(b)
    await left.send_many([{"t": "x", "n": i} for i in range(50)])
    assert counting.writes == 1
    got = [await right.receive() for _ in range(50)]
    assert [f["n"] for f in got if f is not None] == list(range(50))
    await left.send_many([])
    assert counting.writes == 1


async def test_local_misuse_writes_nothing() -> None:
    a, _b = trio.testing.memory_stream_pair()
    counting = CountingStream(a)
    left = FramedStream(counting, max_frame=100)
    with pytest.raises(ValueError):
        await left.send_many([{"t": "ok"}, {"t": "big", "b": b"x" * 200}])
    with pytest.raises(TypeError):
        await left.send({"no": "type"})
    assert counting.writes == 0


async def test_eof_inside_a_frame_is_truncated() -> None:
    a, b = trio.testing.memory_stream_pair()
    right = FramedStream(b)
    await a.send_all(encode_frame({"t": "x", "pad": b"p" * 50})[:20])
    await a.aclose()
    with pytest.raises(FrameError) as info:
        await right.receive()
    assert info.value.code == E_TRUNCATED


async def test_good_frames_then_garbage() -> None:
    a, b = trio.testing.memory_stream_pair()
    right = FramedStream(b, max_frame=1000)
    await a.send_all(
        encode_frame({"t": "one"}) + encode_frame({"t": "two"}) + struct.pack(">I", 5000)
    )
    assert (await right.receive() or {})["t"] == "one"
    assert (await right.receive() or {})["t"] == "two"
    with pytest.raises(FrameError) as info:
        await right.receive()
    assert info.value.code == E_TOO_LARGE


async def test_idle_timeout_loses_nothing(autojump_clock: trio.testing.MockClock) -> None:
    left, right = pair()
    start = trio.current_time()
    with pytest.raises(IdleTimeout):
        await right.receive(idle_timeout=5)
    assert trio.current_time() - start == pytest.approx(5)

    async def late_sender() -> None:
        await trio.sleep(3)
        await left.send({"t": "late"})

    async with trio.open_nursery() as nursery:
        nursery.start_soon(late_sender)
        frame = await right.receive(idle_timeout=5)
    assert frame is not None and frame["t"] == "late"


async def test_slowloris_frame_timeout(autojump_clock: trio.testing.MockClock) -> None:
    a, b = trio.testing.memory_stream_pair()
    right = FramedStream(b)
    data = encode_frame({"t": "slow", "pad": b"p" * 100})

    async def dribble() -> None:
        for i in range(len(data)):
            await a.send_all(data[i : i + 1])
            await trio.sleep(1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(dribble)
        start = trio.current_time()
        with pytest.raises(FrameError) as info:
            # The idle deadline would allow an hour; the frame deadline does not.
            await right.receive(idle_timeout=3600, frame_timeout=10)
        assert info.value.code == E_FRAME_TIMEOUT
        assert trio.current_time() - start == pytest.approx(10, abs=1.5)
        nursery.cancel_scope.cancel()


async def test_bare_header_starts_the_frame_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a, b = trio.testing.memory_stream_pair()
    right = FramedStream(b)
    await a.send_all(encode_frame({"t": "x"})[:4])
    with pytest.raises(FrameError) as info:
        await right.receive(idle_timeout=3600, frame_timeout=2)
    assert info.value.code == E_FRAME_TIMEOUT


async def test_frame_deadline_counts_only_time_spent_receiving(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a, b = trio.testing.memory_stream_pair()
    right = FramedStream(b)
    second = encode_frame({"t": "second", "pad": b"z" * 40})
    await a.send_all(encode_frame({"t": "first"}) + second[:10])
    assert (await right.receive(frame_timeout=2) or {})["t"] == "first"
    await trio.sleep(100)  # the caller is busy (back-pressure); the partial frame waits

    async def finish() -> None:
        await trio.sleep(1)
        await a.send_all(second[10:])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(finish)
        frame = await right.receive(frame_timeout=2)
    assert frame is not None and frame["t"] == "second"


async def test_concurrent_senders_keep_frames_whole() -> None:
    left, right = pair(max_frame=1 << 20)
    senders, per_sender = 8, 25
    received: list[tuple[int, int]] = []

    async def sender(s: int) -> None:
        for i in range(per_sender):
            await left.send({"t": "x", "s": s, "i": i, "pad": bytes([s]) * 5000})

    async def receiver() -> None:
        for _ in range(senders * per_sender):
            frame = await right.receive()
            assert frame is not None
            assert frame["pad"] == bytes([frame["s"]]) * 5000
            received.append((frame["s"], frame["i"]))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receiver)
        for s in range(senders):
            nursery.start_soon(sender, s)
    for s in range(senders):
        assert [i for (ss, i) in received if ss == s] == list(range(per_sender))


async def test_open_framed_over_loopback() -> None:
    async def echo(stream: trio.SocketStream) -> None:
        fs = FramedStream(stream)
        while (frame := await fs.receive()) is not None:
            await fs.send({**frame, "echo": True})

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, echo, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        async with await open_framed("127.0.0.1", port, timeout=5) as fs:
            await fs.send_many([{"t": "a", "id": 1}, {"t": "b", "id": 2}])
            one, two = await fs.receive(), await fs.receive()
            assert one is not None and two is not None
            assert (one["t"], two["t"], one["echo"]) == ("a", "b", True)
        nursery.cancel_scope.cancel()


async def test_open_framed_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connections are refused
        with pytest.raises(OSError):
            await open_framed("127.0.0.1", port, timeout=5)


@pytest.mark.parametrize(
    ("case", "sends", "cancelled", "in_frame", "after"),
    [
        # a frame in time: returned, the guard untouched
        ("frame in time", [(1, encode_frame({"t": "ok"}))], False, False, 5),
        # nothing within the idle deadline: the guard's scope is cancelled, between frames
        ("idle", [], True, False, 5),
        # half a frame, then silence: the frame deadline (2 s) fires first, inside a frame
        ("stalled frame", [(1, encode_frame({"t": "x", "pad": b"p" * 50})[:10])], True, True, 3),
    ],
)
async def test_guarded_receive_cancels_the_callers_scope(
    autojump_clock: trio.testing.MockClock,
    case: str,
    sends: list[tuple[float, bytes]],
    cancelled: bool,
    in_frame: bool,
    after: float,
) -> None:
    a, b = trio.testing.memory_stream_pair()
    right = FramedStream(b)
    got: list[dict[str, object] | None] = []

    async def sender() -> None:
        for delay, data in sends:
            await trio.sleep(delay)
            await a.send_all(data)

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        with trio.CancelScope() as guard:
            got.append(await right.receive(idle_timeout=5, frame_timeout=2, guard=guard))
    assert guard.cancelled_caught is cancelled, case
    assert right.in_frame is in_frame, case
    assert trio.current_time() - start == pytest.approx(after if cancelled else 1), case
    if not cancelled:
        assert len(got) == 1 and got[0] is not None and got[0]["t"] == "ok"


def _frame_of(size: int) -> bytes:
    """An encoded frame of exactly `size` bytes on the wire."""
    data = encode_frame({"t": "x", "pad": b""})
    pad = size - len(data)
    data = encode_frame({"t": "x", "pad": b"p" * pad})
    # msgpack's bin length prefix grows with the pad; trim it back to `size`
    return encode_frame({"t": "x", "pad": b"p" * (pad - (len(data) - size))})


@pytest.mark.parametrize(
    ("case", "size", "chunk", "every", "min_rate", "timeout_at"),
    [
        # frame_timeout is 10 s in every case; timeout_at None: the frame arrives whole
        ("1 byte per second", 5_000, 1, 1.0, 1000.0, 10.0),
        ("big frame, good link, past the grace", 100_000, 500, 0.1, 1000.0, None),
        ("the same without a rate: cut at the flat deadline", 100_000, 500, 0.1, None, 10.0),
        ("half the rate: cut once the grace is used up", 100_000, 50, 0.1, 1000.0, 20.0),
        ("a burst, then a stall: cut after one grace of silence", 100_000, 50_000, 1000, 1e3, 10.0),
    ],
)
async def test_started_frame_must_keep_a_minimum_rate(
    autojump_clock: trio.testing.MockClock,
    case: str,
    size: int,
    chunk: int,
    every: float,
    min_rate: float | None,
    timeout_at: float | None,
) -> None:
    a, b = trio.testing.memory_stream_pair()
    right = FramedStream(b, max_frame=1 << 20)
    data = _frame_of(size)
    assert len(data) == size

    async def dribble() -> None:
        for i in range(0, len(data), chunk):
            await a.send_all(data[i : i + chunk])
            await trio.sleep(every)

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(dribble)
        if timeout_at is None:
            frame = await right.receive(idle_timeout=3600, frame_timeout=10, min_rate=min_rate)
            assert frame is not None and len(frame["pad"]) > size - 100, case
        else:
            with pytest.raises(FrameError) as info:
                await right.receive(idle_timeout=3600, frame_timeout=10, min_rate=min_rate)
            assert info.value.code == E_FRAME_TIMEOUT, case
            assert trio.current_time() - start == pytest.approx(timeout_at, abs=1.5), case
        nursery.cancel_scope.cancel()


async def test_receive_limit_caps_frames_not_yet_started() -> None:
    left, right = pair(max_frame=1 << 20)
    right.receive_limit = 1024
    await left.send({"t": "small"})
    assert (await right.receive() or {})["t"] == "small"
    right.receive_limit = 1 << 20  # restored: a large frame is fine again
    await left.send({"t": "big", "pad": b"p" * 5000})
    assert (await right.receive() or {})["t"] == "big"
    right.receive_limit = 1024
    await left.send({"t": "big", "pad": b"p" * 5000})
    with pytest.raises(FrameError) as info:
        await right.receive()
    assert info.value.code == E_TOO_LARGE
    with pytest.raises(ValueError):
        right.receive_limit = 0


async def test_peek_leaves_the_frame_for_receive() -> None:
    left, right = pair()
    await left.send_many([{"t": "first"}, {"t": "second"}])
    assert (await right.peek() or {})["t"] == "first"
    assert (await right.peek() or {})["t"] == "first"
    assert (await right.receive() or {})["t"] == "first"
    assert (await right.receive() or {})["t"] == "second"
    await left.aclose()
    assert await right.peek() is None
