"""The HTTP port's bounds (rkv.httpapi.server): head size, body size, the connection cap, and
the deadlines that close slow and idle clients while the others are served."""

from __future__ import annotations

import trio

from rkv.httpapi import Limits

from .conftest import Client, FakeNode, api_server, request

FAST = Limits(
    max_connections=4,
    max_head=4096,
    head_timeout=0.5,
    idle_timeout=0.5,
    body_grace=0.5,
    min_body_rate=1000,
    write_timeout=1.0,
)


async def raw(port: int, data: bytes, *, wait: float = 5.0) -> bytes:
    """Send `data`, then read until the server closes (or `wait` seconds pass)."""
    s = await trio.open_tcp_stream("127.0.0.1", port)
    async with s:
        await s.send_all(data)
        buf = bytearray()
        with trio.move_on_after(wait):
            while chunk := await s.receive_some(65536):
                buf += chunk
    return bytes(buf)


async def test_oversized_head_is_431_whole_or_trickled() -> None:
    async with api_server(FakeNode(), limits=FAST) as (port, _):
        whole = await raw(
            port, b"GET /v1/status HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 5000 + b"\r\n\r\n"
        )
        assert whole.startswith(b"HTTP/1.1 431 "), whole[:60]
        assert b'"error": "bad_request"' in whole
        s = await trio.open_tcp_stream("127.0.0.1", port)
        await s.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        for _ in range(6):
            await s.send_all(b"X-Pad: " + b"b" * 1000 + b"\r\n")
        with trio.fail_after(5):
            answer = await s.receive_some(65536)
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:60]
        await s.aclose()


async def test_oversized_body_is_413_before_it_is_read() -> None:
    fake = FakeNode()
    async with api_server(fake, limits=FAST, max_value=100) as (port, _):
        head = b"PUT /v1/kv/a HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n"
        answer = await raw(port, head + b"Expect: 100-continue\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:60]
        assert b"HTTP/1.1 100" not in answer  # the body was never asked for
        assert b"Connection: close" in answer
    assert fake.frames == []


async def test_slowloris_is_closed_and_others_are_served() -> None:
    fake = FakeNode(kv={b"a": b"1"})
    async with api_server(fake, limits=FAST) as (port, _):
        slow = await trio.open_tcp_stream("127.0.0.1", port)
        await slow.send_all(b"GET /v1/kv/a HTTP/1.1\r\n")
        t0 = trio.current_time()
        got = bytearray()
        with trio.fail_after(5):
            while True:
                # a good client meanwhile
                assert (await request(port, "GET", "/v1/kv/a")).body == b"1"
                try:
                    await slow.send_all(b"X: y\r\n")  # one header line at a time
                except trio.BrokenResourceError:
                    break
                with trio.move_on_after(0.1):
                    chunk = await slow.receive_some(65536)
                    got += chunk
                    if not chunk:
                        break
        assert trio.current_time() - t0 < 2.0
        assert got.startswith(b"HTTP/1.1 408 "), bytes(got[:60])
        await slow.aclose()


async def test_a_slow_body_is_closed() -> None:
    async with api_server(FakeNode(), limits=FAST) as (port, _):
        s = await trio.open_tcp_stream("127.0.0.1", port)
        await s.send_all(b"PUT /v1/kv/a HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nab")
        with trio.fail_after(5):
            answer = await s.receive_some(65536)
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:60]
        await s.aclose()


async def test_idle_keep_alive_is_closed() -> None:
    async with api_server(FakeNode(kv={b"a": b"1"}), limits=FAST) as (port, _):
        c = await Client.open(port)
        assert (await c.request("GET", "/v1/kv/a")).status == 200
        with trio.fail_after(5):
            assert await c.stream.receive_some(100) == b""  # closed after idle_timeout
        await c.aclose()


async def test_connections_are_capped() -> None:
    async with api_server(FakeNode(kv={b"a": b"1"}), limits=FAST) as (port, _):
        held = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(4)]
        await trio.sleep(0.1)
        refused = await raw(port, b"GET /v1/kv/a HTTP/1.1\r\nHost: x\r\n\r\n")
        assert refused.startswith(b"HTTP/1.1 503 "), refused[:60]
        assert b"Retry-After: 1" in refused and b"too_many_connections" in refused
        for h in held:
            await h.aclose()
        await trio.sleep(0.1)
        assert (await request(port, "GET", "/v1/kv/a")).status == 200


async def test_garbage_is_400() -> None:
    async with api_server(FakeNode(), limits=FAST) as (port, _):
        answer = await raw(port, b"hello there\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:60]


async def test_a_malformed_chunked_body_is_400() -> None:
    async with api_server(FakeNode(), limits=FAST) as (port, _):
        head = b"PUT /v1/kv/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        answer = await raw(port, head + b"zz\r\nabc\r\n")
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:60]


async def test_413_reaches_a_client_that_sends_its_body_anyway() -> None:
    async with api_server(FakeNode(), limits=FAST, max_value=10) as (port, _):
        head = b"PUT /v1/kv/a HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n"
        answer = await raw(port, head + b"x" * 200000)
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:60]
