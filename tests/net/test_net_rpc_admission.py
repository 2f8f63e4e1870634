"""Admission control of rkv.net.rpc.serve over real loopback sockets: the handshake deadline,
shedding at the connection limits, the per-source limit, peer links, and the goodbye frames.

Loopback has many source addresses: connections from 127.0.0.2 count against another source
than those from 127.0.0.1.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest
import trio

from rkv.net import auth
from rkv.net.framing import Frame, FrameDecoder
from rkv.net.rpc import ConnInfo, RemoteError, RpcClient, ServerStats, serve
from rkv.net.stream import FramedStream

HOST = "127.0.0.1"
OTHER = "127.0.0.2"
TOKEN = "admission-test-token-0123456789"
HALF_OPEN = struct.pack(">I", 4096)
"""A frame header promising 4 KiB, and then nothing: the issue's flood."""


async def echo(frame: Frame, info: ConnInfo) -> Frame | None:
    return {"t": "ok", "x": frame.get("x")} if "id" in frame else None


async def start(nursery: trio.Nursery, **kw: Any) -> tuple[int, ServerStats]:
    stats = ServerStats()
    port: int = await nursery.start(partial(serve, echo, HOST, 0, stats=stats, **kw))
    return port, stats


async def frames_until_eof(stream: trio.abc.Stream, timeout: float = 10.0) -> list[Frame]:
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


@dataclass
class Held:
    kind: str
    stream: trio.SocketStream
    fs: FramedStream


async def open_conn(port: int, kind: str, source: str, token: str | None) -> Held:
    """A connection of `kind`: "half_open" (a header, then nothing), "served" (one request
    answered), "quiet" (through its handshake, no request; needs a token) or "peer" (a hello
    naming a node; authenticated as that node when there is a token)."""
    stream = await trio.open_tcp_stream(HOST, port, local_address=source)
    fs = FramedStream(stream)
    if kind == "half_open":
        await stream.send_all(HALF_OPEN)
        return Held(kind, stream, fs)
    role = "n1" if kind == "peer" else auth.CLIENT_ROLE
    if token is not None:
        await auth.client_handshake(fs, token, role)
    if kind == "peer":
        await fs.send({"t": "hello", "id": 1, "node": role})
        assert (await fs.receive() or {}).get("t") == "ok"
    elif kind == "served":
        await fs.send({"t": "echo", "id": 1, "x": 1})
        assert (await fs.receive() or {}).get("x") == 1
    else:
        assert kind == "quiet" and token is not None
    return Held(kind, stream, fs)


async def newcomer(port: int, source: str, token: str | None) -> Frame:
    """Connect and make one request: its answer, or the server's goodbye frame."""
    stream = await trio.open_tcp_stream(HOST, port, local_address=source)
    async with stream:
        fs = FramedStream(stream)
        with trio.fail_after(10):
            try:
                if token is not None:
                    await auth.client_handshake(fs, token)
                await fs.send({"t": "echo", "id": 7, "x": 7})
            except auth.AuthFailed as exc:
                return exc.frame
            except trio.BrokenResourceError:
                pass  # refused before the request went out: the goodbye is still readable
            frames = [f for f in await frames_until_eof_or_answer(fs)]
    assert frames, "the server closed without a word"
    return frames[0]


async def frames_until_eof_or_answer(fs: FramedStream) -> list[Frame]:
    out: list[Frame] = []
    try:
        while (f := await fs.receive()) is not None:
            out.append(f)
            if f.get("id") == 7:
                break
    except trio.BrokenResourceError:
        pass
    return out


CASES = [
    # (case, token, limits, held connections as (kind, source), newcomer's source,
    #  what the newcomer gets: "ok" or the refusal's reason, indexes shed -> reason)
    (
        "at the cap a half-open connection gives way",
        None,
        {"max_connections": 3},
        [("served", HOST), ("half_open", HOST), ("half_open", OTHER)],
        HOST,
        "ok",
        {1: "max_connections"},
    ),
    (
        "served clients and peer links are never shed: refused",
        None,
        {"max_connections": 2},
        [("served", HOST), ("peer", OTHER)],
        OTHER,
        "max_connections",
        {},
    ),
    (
        "per source: the source's own half-open connection gives way",
        None,
        {"max_connections_per_source": 2},
        [("half_open", OTHER), ("half_open", HOST), ("served", HOST)],
        HOST,
        "ok",
        {1: "per_source"},
    ),
    (
        "per source: refused when the source has nothing to shed; others unaffected",
        None,
        {"max_connections_per_source": 2},
        [("served", HOST), ("served", HOST), ("half_open", OTHER)],
        HOST,
        "per_source",
        {},
    ),
    (
        "with a token: a client that completed no request gives way, not a peer link",
        TOKEN,
        {"max_connections": 3},
        [("quiet", HOST), ("peer", HOST), ("served", OTHER)],
        OTHER,
        "ok",
        {0: "max_connections"},
    ),
    (
        "with a token: authenticated peer links do not count against their source",
        TOKEN,
        {"max_connections_per_source": 2},
        [("peer", HOST), ("peer", HOST), ("served", HOST)],
        HOST,
        "ok",
        {},
    ),
    (
        "without a token a peer's hello is a claim: it counts against its source",
        None,
        {"max_connections_per_source": 2},
        [("peer", HOST), ("served", HOST)],
        HOST,
        "per_source",
        {},
    ),
]


@pytest.mark.parametrize(
    ("case", "token", "limits", "held", "source", "expect", "shed"),
    CASES,
    ids=[c[0] for c in CASES],
)
async def test_limits_shed_or_refuse(
    nursery: trio.Nursery,
    case: str,
    token: str | None,
    limits: dict[str, int],
    held: list[tuple[str, str]],
    source: str,
    expect: str,
    shed: dict[int, str],
) -> None:
    port, stats = await start(nursery, token=token, **limits)
    conns = [await open_conn(port, kind, src, token) for kind, src in held]
    got = await newcomer(port, source, token)
    if expect == "ok":
        assert (got.get("t"), got.get("x")) == ("ok", 7), case
    else:
        assert (got.get("code"), got.get("reason")) == ("too_many_connections", expect), case
        assert "maximum" in got["msg"], case
    for i, reason in shed.items():
        frames = await frames_until_eof(conns[i].stream)
        assert [(f.get("code"), f.get("reason")) for f in frames] == [
            ("too_many_connections", reason)
        ], case
        assert "closed to make room" in frames[0]["msg"]
    assert sum(stats.admission.shed.values()) == len(shed), case
    assert sum(stats.admission.refused.values()) == (expect != "ok"), case
    assert stats.refused == (expect != "ok"), case
    # Whoever was not shed is still served.
    for i, c in enumerate(conns):
        if i not in shed and c.kind in ("served", "peer"):
            await c.fs.send({"t": "echo", "id": 2, "x": 2})
            with trio.fail_after(10):
                assert (await c.fs.receive() or {}).get("x") == 2, (case, i)
    for c in conns:
        await c.stream.aclose()


@pytest.mark.parametrize(
    ("token", "sends", "says"),
    [
        (None, b"", "complete first frame"),
        (None, HALF_OPEN, "complete first frame"),
        (TOKEN, b"", "authentication"),
    ],
)
async def test_handshake_deadline(
    nursery: trio.Nursery, token: str | None, sends: bytes, says: str
) -> None:
    port, stats = await start(nursery, token=token, handshake_timeout=0.5, idle_timeout=60)
    stream = await trio.open_tcp_stream(HOST, port)
    t0 = trio.current_time()
    await stream.send_all(sends)
    frames = await frames_until_eof(stream)
    took = trio.current_time() - t0
    await stream.aclose()
    assert [f["code"] for f in frames if f["t"] == "error"] == ["handshake_timeout"]
    assert f"no {says} within 0.5 seconds" in frames[-1]["msg"]
    assert 0.4 <= took < 5  # generous: it is the deadline that closed it, not the idle one
    assert stats.admission.handshake_timeouts == 1


async def test_handshake_deadline_is_lifted_once_through(nursery: trio.Nursery) -> None:
    port, _ = await start(nursery, handshake_timeout=0.3)
    async with RpcClient(HOST, port) as client:
        assert (await client.call({"t": "echo", "x": 1}))["x"] == 1
        await trio.sleep(0.6)  # past the handshake deadline; far from the idle one
        assert (await client.call({"t": "echo", "x": 2}))["x"] == 2


async def test_a_slow_sender_after_its_handshake_is_cut_off(nursery: trio.Nursery) -> None:
    """1 byte per second: closed by the minimum frame rate after the grace (0.5 s), long
    before the frame could complete."""
    port, stats = await start(nursery, frame_timeout=0.5, min_frame_rate=1000, idle_timeout=60)
    stream = await trio.open_tcp_stream(HOST, port)
    fs = FramedStream(stream)
    await fs.send({"t": "echo", "id": 1, "x": 1})
    assert (await fs.receive() or {}).get("x") == 1
    frame = HALF_OPEN + b"\x00" * 4096
    t0 = trio.current_time()

    async def dribble() -> None:
        for i in range(len(frame)):
            await stream.send_all(frame[i : i + 1])
            await trio.sleep(1 / 8)  # 8 bytes/s: under the rate

    async with trio.open_nursery() as n:
        n.start_soon(dribble)
        frames = await frames_until_eof(stream)
        n.cancel_scope.cancel()
    assert [f["code"] for f in frames] == ["frame_timeout"]
    assert "1000 bytes/s" in frames[0]["msg"]
    assert trio.current_time() - t0 < 5
    assert stats.frame_timeouts == 1
    await stream.aclose()


async def test_a_shed_or_timed_out_client_is_told_to_retry_not_that_its_token_is_wrong(
    nursery: trio.Nursery,
) -> None:
    """Errors that end a token handshake other than auth_failed keep their code: the client
    library retries them (a wrong token it does not)."""
    port, _ = await start(nursery, token=TOKEN, max_connections=1)
    async with RpcClient(HOST, port, token=TOKEN) as first:
        assert (await first.call({"t": "echo", "x": 1}))["x"] == 1
        with pytest.raises(RemoteError) as info:
            async with RpcClient(HOST, port, token=TOKEN) as second:
                await second.call({"t": "echo"})
        assert info.value.code == "too_many_connections"


async def test_frames_before_the_proof_are_small(nursery: trio.Nursery) -> None:
    port, _ = await start(nursery, token=TOKEN)
    stream = await trio.open_tcp_stream(HOST, port)
    await stream.send_all(HALF_OPEN)  # 4 KiB promised before authenticating
    frames = await frames_until_eof(stream)
    await stream.aclose()
    assert [f["t"] for f in frames] == ["challenge", "error"]
    assert frames[-1]["code"] == "auth_failed" and "frame_too_large" in frames[-1]["msg"]


async def test_a_flood_does_not_flood_the_log(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rkv.net.rpc")
    port, stats = await start(nursery, max_connections=8, handshake_timeout=0.2)
    streams = []
    for _ in range(40):
        s = await trio.open_tcp_stream(HOST, port)
        await s.send_all(HALF_OPEN)
        streams.append(s)
    adm = stats.admission
    with trio.fail_after(10):
        while adm.handshake_timeouts + sum(adm.shed.values()) < 40:
            await trio.sleep(0.05)
    for s in streams:
        await s.aclose()
    lines = [r.getMessage() for r in caplog.records if r.name == "rkv.net.rpc"]
    # One line per 10 s, the rest counted in the next one: 40 closes, not 40 lines.
    assert 1 <= len(lines) <= 2, lines
