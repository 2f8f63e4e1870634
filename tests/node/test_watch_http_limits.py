"""GET /v1/watch streams against the watch limits on a running node (docs/contracts.md, the
GET /v1/watch row): the HTTP port's streams count as one connection, whichever TCP
connections carry them, so past `watch_max_per_conn` of them a new stream gets 429
too_many_watchers; and those streams never take the node's whole `watch_max`: a native
client still watches while they are held."""

from __future__ import annotations

import json
from pathlib import Path

import trio

import rkv
from rkv.http import http_get
from rkv.node import Node
from rkv.testing import local_configs, running_cluster, wait_leader

PER_CONN = 2


async def open_stream(port: int, prefix: str) -> trio.SocketStream:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    req = f"GET /v1/watch?prefix={prefix} HTTP/1.1\r\nHost: x\r\n\r\n"
    await stream.send_all(req.encode())
    return stream


async def read_until(stream: trio.SocketStream, want: bytes) -> bytes:
    buf = b""
    while want not in buf:
        data = await stream.receive_some(65536)
        assert data, f"the stream ended before {want!r}: {buf!r}"
        buf += data
    return buf


async def wait_watching(node: Node, n: int) -> None:
    while node.watch.watching != n:
        await trio.sleep(0.01)


async def test_http_streams_share_one_connections_slots_and_leave_the_rest(
    tmp_path: Path,
) -> None:
    cfg = local_configs(tmp_path, 1, http_port=0, watch_max=4, watch_max_per_conn=PER_CONN)[0]
    async with running_cluster([cfg]) as nodes:
        node = nodes[0]
        await wait_leader(nodes)
        port = node.http_port or 0
        with trio.fail_after(60):
            # two streams on two TCP connections: both polls wait, both count
            streams = [await open_stream(port, "h%2F") for _ in range(PER_CONN)]
            await wait_watching(node, PER_CONN)
            status, body = await http_get("127.0.0.1", port, "/v1/watch?prefix=other%2F")
            assert status == 429, body
            assert json.loads(body)["error"] == "too_many_watchers"
            assert node.watch.watching == PER_CONN  # the refused one took nothing

            # the node's other slots are the native clients'
            async with rkv.connect(cfg.advertise, timeout=10) as c:
                await c.put("h/1", "v")
                _, rev = await c.get_revision("h/1")
                async for ev in c.watch("h/", start_revision=rev):
                    assert (ev.key, ev.value) == (b"h/1", b"v")
                    break
            # and the HTTP streams are live: each has the event (key b"h/1" in base64)
            for s in streams:
                got = await read_until(s, b'"key": "aC8x"')
                assert got.startswith(b"HTTP/1.1 200 "), got[:40]
            # a stream whose client left gives its slot back (at the end of its poll)
            for s in streams:
                await s.aclose()
            async with rkv.connect(cfg.advertise, timeout=10) as c:
                await c.put("h/2", "v")  # wakes the polls: their answers find no client
            await wait_watching(node, 0)
            again = await open_stream(port, "h%2F")
            await wait_watching(node, 1)
            await again.aclose()
