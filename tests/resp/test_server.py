"""The RESP connection loop (rkv.resp.server) on a real socket, over a fake node: redis-py
(RESP2 and RESP3, pipelines), and the bounds: oversized bulk, too many arguments, garbage
bytes -> one error reply and the connection closes while the server keeps serving others;
the connection cap, the handshake and idle deadlines; many pipelined commands answered in
order through the in-flight bound."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis
import trio

from rkv.resp import RespLimits, RespServer

from .fakes import FakeBackend

TOKEN = "a-cluster-token-of-16+"


@asynccontextmanager
async def resp_server(
    token: str | None = None, **limits: Any
) -> AsyncIterator[tuple[RespServer, FakeBackend]]:
    backend = FakeBackend()
    server = RespServer(backend, token=token, limits=RespLimits(**limits))
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, "127.0.0.1", 0)
        yield server, backend
        nursery.cancel_scope.cancel()


async def in_thread(fn: Callable[[], Any]) -> Any:
    return await trio.to_thread.run_sync(fn)


async def raw(port: int, data: bytes, *, wait: float = 5.0) -> bytes:
    """Send `data`, return everything received until the server closes (or `wait`)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    got = b""
    async with stream:
        await stream.send_all(data)
        with trio.move_on_after(wait):
            while chunk := await stream.receive_some(65536):
                got += chunk
    return got


@pytest.mark.parametrize("protocol", [2, 3])
async def test_redis_py_with_pipelines(protocol: int) -> None:
    async with resp_server() as (server, _backend):

        def client() -> list[Any]:
            r = redis.Redis(port=server.port, protocol=protocol)
            assert r.ping()
            assert r.set("a", "1") and r.get("a") == b"1"
            assert r.set("a", "2", nx=True) is None
            p = r.pipeline(transaction=False)
            for i in range(50):
                p.set(f"k{i}", str(i))
            p.mget("k0", "k49", "nope")
            p.delete("k1", "k2")
            p.exists("k0", "k1")
            out = p.execute()
            assert r.client_id() >= 1
            assert r.config_get("appendonly") == {"appendonly": "yes"} or r.config_get(
                "appendonly"
            ) == {b"appendonly": b"yes"}
            assert sorted(r.scan_iter(match="k4*")) == [
                b"k4",
                b"k40",
                b"k41",
                b"k42",
                b"k43",
                b"k44",
                b"k45",
                b"k46",
                b"k47",
                b"k48",
                b"k49",
            ]
            assert r.incr("n") == 1 and r.incr("n", 5) == 6  # INCRBY: one txn each
            with pytest.raises(redis.ResponseError, match="does not support 'getrange'"):
                r.getrange("n", 0, 1)
            r.close()
            return out[50:]

        assert await in_thread(client) == [[b"0", b"49", None], 2, 1]


async def test_pipelined_commands_are_answered_in_order_past_the_inflight_bound() -> None:
    async with resp_server(max_inflight=4) as (server, _):
        n = 2000
        data = b"".join(b"*2\r\n$4\r\nECHO\r\n$%d\r\n%d\r\n" % (len(str(i)), i) for i in range(n))
        got = await raw(server.port, data + b"*1\r\n$4\r\nQUIT\r\n")
        want = b"".join(b"$%d\r\n%d\r\n" % (len(str(i)), i) for i in range(n)) + b"+OK\r\n"
        assert got == want


async def test_pipelined_big_commands_are_bounded_by_bytes_and_all_answered() -> None:
    async with resp_server(max_request=4096, max_bulk=2048) as (server, _):
        values = [bytes([65 + i % 26]) * 1500 for i in range(60)]
        data = b"".join(b"*2\r\n$4\r\nECHO\r\n$1500\r\n%s\r\n" % v for v in values)
        got = await raw(server.port, data + b"QUIT\r\n")
        assert got == b"".join(b"$1500\r\n%s\r\n" % v for v in values) + b"+OK\r\n"


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"*1\r\n$999999999\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
        (b"*99999999\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
        (b"*1\r\n+garbage\r\n", b"-ERR Protocol error: expected '$', got '+'\r\n"),
        (b"\xff\x00" * (40 << 10), b"-ERR Protocol error: too big inline request\r\n"),
    ],
)
async def test_bad_input_gets_one_error_and_the_connection_closes(
    data: bytes, error: bytes
) -> None:
    async with resp_server(max_bulk=1 << 20, max_args=1000) as (server, _):
        other = await trio.open_tcp_stream("127.0.0.1", server.port)
        # what came before the bad bytes is answered first
        got = await raw(server.port, b"*1\r\n$4\r\nPING\r\n" + data)
        assert got.startswith(b"+PONG\r\n-")
        rest = got[len(b"+PONG\r\n") :]
        assert rest.count(b"\r\n") == 1, rest  # one error reply, then closed
        assert rest == error
        # the server keeps serving the others
        await other.send_all(b"PING\r\n")
        assert await other.receive_some(100) == b"+PONG\r\n"
        await other.aclose()
        assert server.stats.protocol_errors == 1


async def test_the_connection_cap_sheds_a_quiet_connection_for_a_newcomer() -> None:
    async with resp_server(max_connections=2) as (server, _):
        busy = await trio.open_tcp_stream("127.0.0.1", server.port)
        await busy.send_all(b"PING\r\n")
        assert await busy.receive_some(100) == b"+PONG\r\n"
        quiet = await trio.open_tcp_stream("127.0.0.1", server.port)
        await trio.sleep(0.1)
        newcomer = await trio.open_tcp_stream("127.0.0.1", server.port)
        with trio.fail_after(5):
            assert await quiet.receive_some(100) == b"-ERR max number of clients reached\r\n"
        await newcomer.send_all(b"PING\r\n")
        assert await newcomer.receive_some(100) == b"+PONG\r\n"
        # both held connections completed a command: a third is refused
        got = await raw(server.port, b"PING\r\n")
        assert got == b"-ERR max number of clients reached\r\n"
        for s in (busy, quiet, newcomer):
            await s.aclose()


async def test_with_a_token_a_connection_must_authenticate_within_the_handshake_timeout() -> None:
    async with resp_server(TOKEN, handshake_timeout=0.5) as (server, _):
        got = await raw(server.port, b"PING\r\n")
        assert got.startswith(b"-NOAUTH Authentication required.\r\n-ERR rkv: handshake timeout")
        got = await raw(server.port, b"AUTH %s\r\nPING\r\n" % TOKEN.encode(), wait=1.0)
        assert got == b"+OK\r\n+PONG\r\n"  # still open after the handshake timeout


async def test_an_idle_connection_is_closed() -> None:
    async with resp_server(idle_timeout=0.3) as (server, _):
        with trio.fail_after(5):
            got = await raw(server.port, b"PING\r\n", wait=5.0)
        assert got == b"+PONG\r\n-ERR rkv: connection timed out\r\n"


async def test_a_slow_command_is_not_idle_and_the_idle_clock_starts_once_answered() -> None:
    async with resp_server(idle_timeout=0.3) as (server, backend):
        backend.delay = 0.8
        with trio.fail_after(10):
            t0 = trio.current_time()
            got = await raw(server.port, b"GET a\r\n", wait=10.0)
            took = trio.current_time() - t0
        assert got == b"$-1\r\n-ERR rkv: connection timed out\r\n"
        assert 1.0 < took < 5.0


async def test_a_command_that_stops_arriving_is_closed() -> None:
    async with resp_server(frame_timeout=0.3) as (server, _):
        with trio.fail_after(5):
            got = await raw(server.port, b"*2\r\n$4\r\nECHO\r\n$10\r\nabc", wait=5.0)
        assert got == b"-ERR rkv: connection timed out\r\n"


async def test_resp3_types_on_the_wire() -> None:
    async with resp_server() as (server, _):
        got = await raw(
            server.port,
            b"HELLO 3\r\nCONFIG GET save\r\nGET nope\r\nCOMMAND INFO ping\r\nQUIT\r\n",
        )
        assert got.startswith(b"%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n")
        assert b"%1\r\n$4\r\nsave\r\n$0\r\n\r\n_\r\n*1\r\n*10\r\n$4\r\nping\r\n:-1\r\n~2\r\n" in got
