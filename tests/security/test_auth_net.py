"""The token handshake over real sockets: rpc.serve / RpcClient / PeerTransport.

Every refusal is an `auth_failed` error frame and a close, and the handler never sees a
frame from a connection that did not prove the token.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio

from rkv.net import auth
from rkv.net.framing import Frame
from rkv.net.rpc import ConnInfo, RemoteError, RpcClient, serve
from rkv.net.stream import FramedStream, open_framed
from rkv.net.transport import PeerTransport

from .conftest import TOKEN, WRONG


class Echo:
    def __init__(self) -> None:
        self.seen: list[tuple[Frame, str | None]] = []

    async def __call__(self, frame: Frame, info: ConnInfo) -> Frame | None:
        self.seen.append((frame, info.auth))
        return {"t": "ok", "echo": frame.get("x"), "auth": info.auth}


@asynccontextmanager
async def server(token: str | None, **kw: Any) -> AsyncIterator[tuple[int, Echo]]:
    echo = Echo()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(serve, echo, "127.0.0.1", 0, token=token, **kw))
        yield port, echo
        nursery.cancel_scope.cancel()


CASES = [
    # server token, client token, expected error code (None: the call works)
    pytest.param(TOKEN, TOKEN, None, id="right token"),
    pytest.param(None, None, None, id="no token anywhere"),
    pytest.param(TOKEN, WRONG, "auth_failed", id="wrong token"),
    pytest.param(TOKEN, None, "auth_failed", id="client without token"),
    pytest.param(None, TOKEN, "auth_failed", id="token on client, not on server"),
]


@pytest.mark.parametrize(("server_token", "client_token", "error"), CASES)
async def test_rpc_client_table(
    server_token: str | None, client_token: str | None, error: str | None
) -> None:
    async with server(server_token) as (port, echo):
        with trio.fail_after(5):
            if error is None:
                async with RpcClient("127.0.0.1", port, token=client_token) as c:
                    reply = await c.call({"t": "ping", "x": 1})
                assert reply["echo"] == 1
                assert reply["auth"] == ("client" if server_token else None)
                return
            with pytest.raises(RemoteError) as info:
                async with RpcClient("127.0.0.1", port, token=client_token) as c:
                    await c.call({"t": "ping", "x": 1})
            assert info.value.code == error
            assert "\n" not in info.value.msg
            assert echo.seen == []  # nothing was served on that connection


async def test_unauthenticated_frames_are_never_handled() -> None:
    async with server(TOKEN) as (port, echo):
        fs = await open_framed("127.0.0.1", port)
        async with fs:
            with trio.fail_after(5):
                challenge = await fs.receive()
                assert challenge is not None and challenge["t"] == "challenge"
                await fs.send({"t": "ping", "id": 1, "x": 1})
                await fs.send({"t": "raft", "m": []})
                last = await fs.receive()
                assert last is not None
                assert (last["t"], last["code"]) == ("error", "auth_failed")
                assert await fs.receive() is None  # closed
        assert echo.seen == []


async def test_handshake_deadline() -> None:
    async with server(TOKEN, handshake_timeout=0.3) as (port, echo):
        fs = await open_framed("127.0.0.1", port)
        async with fs:
            with trio.fail_after(5):
                assert (await fs.receive() or {}).get("t") == "challenge"
                await fs.send(auth.start()[0])  # then nothing
                last = await fs.receive()
                # Not auth_failed: a slow client has not shown a wrong token; it may retry.
                assert last is not None and last["code"] == "handshake_timeout"
                assert "within 0.3 seconds" in last["msg"]
        assert echo.seen == []


async def test_hello_must_name_the_authenticated_node() -> None:
    async with server(TOKEN) as (port, echo):
        with trio.fail_after(5):
            hello = {"cluster": "c", "node": "127.0.0.1:2"}
            # RpcClient proves the hello's node as its role: accepted.
            async with RpcClient("127.0.0.1", port, token=TOKEN, hello=hello) as c:
                assert (await c.call({"t": "ping", "x": 2}))["auth"] == "127.0.0.1:2"
            # Authenticated as one node, claiming another in the hello: refused.
            fs = await open_framed("127.0.0.1", port)
            async with fs:
                await auth.client_handshake(fs, TOKEN, "127.0.0.1:1")
                await fs.send({"t": "hello", **hello})
                await fs.send({"t": "ping", "id": 1})
                last = await fs.receive()
                assert last is not None and last["code"] == "bad_hello"
        assert [f["x"] for f, _ in echo.seen] == [2]


async def recording_proxy(
    target: int, log: list[bytes], task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """A TCP proxy to 127.0.0.1:target that records every byte, both directions."""

    async def pipe(src: trio.abc.Stream, dst: trio.abc.Stream) -> None:
        try:
            while data := await src.receive_some(65536):
                log.append(bytes(data))
                await dst.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def handle(stream: trio.SocketStream) -> None:
        up = await trio.open_tcp_stream("127.0.0.1", target)
        async with stream, up, trio.open_nursery() as n:
            n.start_soon(pipe, stream, up)
            n.start_soon(pipe, up, stream)

    await trio.serve_tcp(handle, 0, host="127.0.0.1", task_status=task_status)  # type: ignore[arg-type]


async def test_the_token_never_crosses_the_wire(nursery: trio.Nursery) -> None:
    log: list[bytes] = []
    async with server(TOKEN) as (port, _echo):
        listeners = await nursery.start(recording_proxy, port, log)
        proxy_port = listeners[0].socket.getsockname()[1]
        with trio.fail_after(5):
            async with RpcClient("127.0.0.1", proxy_port, token=TOKEN) as c:
                assert (await c.call({"t": "ping", "x": 3}))["echo"] == 3
    wire = b"".join(log)
    assert b"auth_start" in wire and b"auth_ok" in wire  # the capture saw the handshake
    assert TOKEN.encode() not in wire
    # ... nor any long piece of it.
    assert not any(TOKEN[i : i + 8].encode() in wire for i in range(len(TOKEN) - 8))


async def test_client_refuses_a_server_that_does_not_know_the_token(
    nursery: trio.Nursery,
) -> None:
    """A fake server that plays the protocol but cannot compute the proof."""
    captured: list[Frame] = []

    async def fake(stream: trio.SocketStream) -> None:
        fs = FramedStream(stream)
        async with fs:
            challenge, _ = auth.make_challenge()
            await fs.send(challenge)
            for _ in range(2):
                f = await fs.receive()
                if f is None:
                    return
                captured.append(f)
            await fs.send({"t": "auth_ok", "mac": bytes(32)})
            captured.extend([f async for f in _rest(fs)])

    listeners = await nursery.start(partial(trio.serve_tcp, fake, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    with trio.fail_after(5), pytest.raises(RemoteError) as info:
        async with RpcClient("127.0.0.1", port, token=TOKEN) as c:
            await c.call({"t": "get", "k": b"secret-key"})
    assert info.value.code == "auth_failed"
    assert "did not prove" in info.value.msg
    assert [f["t"] for f in captured] == ["auth_start", "auth"]  # no request was sent


async def _rest(fs: FramedStream) -> Any:
    try:
        while (f := await fs.receive()) is not None:
            yield f
    except trio.BrokenResourceError:
        return


@pytest.mark.parametrize(
    ("peer_token", "delivered"),
    [
        pytest.param(TOKEN, True, id="peer with the token"),
        pytest.param(WRONG, False, id="peer with a wrong token"),
        pytest.param(None, False, id="peer without a token"),
    ],
)
async def test_peer_transport_table(peer_token: str | None, delivered: bool) -> None:
    async with server(TOKEN) as (port, echo):
        t = PeerTransport(
            "127.0.0.1:1",
            {"b": ("127.0.0.1", port)},
            hello={"cluster": "c", "node": "127.0.0.1:1"},
            token=peer_token,
            backoff_min=0.02,
            backoff_max=0.1,
        )
        async with trio.open_nursery() as n:
            await n.start(t.run)
            with trio.move_on_after(1.0 if not delivered else 5.0):
                while not echo.seen:
                    t.send("b", {"t": "raft", "x": 7})
                    await trio.sleep(0.05)
            n.cancel_scope.cancel()
        if delivered:
            assert echo.seen and echo.seen[0] == ({"v": 1, "t": "raft", "x": 7}, "127.0.0.1:1")
        else:
            assert echo.seen == []
            assert "auth_failed" in (t.statistics()["b"]["last_error"] or "")
