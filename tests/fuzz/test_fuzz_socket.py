"""Raw-socket abuse of a live node: random bytes, truncated frames, huge length headers,
deep nesting, too many connections, slowloris, handshake and idle deadlines, and 1,000
garbage connections in a row (memory must stay bounded).

The node runs with small limits and deadlines (NodeConfig's max_connections,
handshake_timeout, frame_timeout and idle_timeout) so that they are cheap to reach.
"""

from __future__ import annotations

import gc
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rkv.node import Node

from .harness import HDR, KNOWN_CODES, SyncConn, configs, encode, rss_bytes, running, wait_leader

MAX_FRAME = 1 << 20
MAX_CONNS = 32
IDLE = 1.0
FRAME_DEADLINE = 0.5
HANDSHAKE = 0.5


@asynccontextmanager
async def small_node(tmp_path: Path) -> AsyncIterator[Node]:
    cfgs = configs(
        tmp_path,
        1,
        max_frame=MAX_FRAME,
        chunk_size=MAX_FRAME // 4,
        snapshot_chunk_bytes=MAX_FRAME // 4,
        max_connections=MAX_CONNS,
        idle_timeout=IDLE,
        frame_timeout=FRAME_DEADLINE,
        handshake_timeout=HANDSHAKE,
    )
    async with running(cfgs) as (node,):
        await wait_leader([node])
        yield node


def read_all(sock: socket.socket, limit: float = 5.0) -> bytes:
    """Everything the server sends until it closes (or `limit` seconds)."""
    sock.settimeout(limit)
    out = b""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        out += chunk
    return out


def frames_in(data: bytes) -> list[dict[str, Any]]:
    import msgpack

    out = []
    while len(data) >= 4:
        (n,) = HDR.unpack_from(data)
        if len(data) < 4 + n:
            break
        out.append(msgpack.unpackb(data[4 : 4 + n], raw=False))
        data = data[4 + n :]
    return out


def assert_clean_close(data: bytes) -> None:
    """At most an error frame with a known code, then the close."""
    for f in frames_in(data):
        assert f.get("t") == "error" and f.get("code") in KNOWN_CODES, f


def healthy(node: Node) -> None:
    with SyncConn(node.port) as c:
        assert c.call({"v": 1, "t": "status", "id": 1})["t"] == "ok"  # type: ignore[index]


def nested(depth: int) -> bytes:
    # fixarray(1) ... nil: msgpack-python refuses to pack this deep, so it is built by hand
    body = (
        b"\x84"
        + b"\xa1v\x01"
        + b"\xa1t\xa3get"
        + b"\xa2id\x01"
        + b"\xa1k"
        + b"\x91" * depth
        + b"\xc0"
    )
    return HDR.pack(len(body)) + body


CASES: list[tuple[str, bytes, set[str | None]]] = [
    ("undecodable body", HDR.pack(5) + b"\xc1" * 5, {"bad_msgpack"}),
    # the first frame of a connection: its handshake deadline, not the frame one
    ("bytes announcing 66 KB", bytes(range(256)) * 4, {"handshake_timeout"}),
    ("huge length header", b"\xff\xff\xff\xff" + b"x" * 10, {"frame_too_large"}),
    ("length over the cap", HDR.pack(MAX_FRAME + 1) + b"x", {"frame_too_large"}),
    ("not a map", encode([1, 2, 3]), {"not_a_map"}),
    ("no type", encode({"v": 1, "id": 1}), {"bad_type"}),
    ("wrong version", encode({"v": 2, "t": "get", "id": 1, "k": b"k"}), {"bad_version"}),
    ("no version", encode({"t": "get", "id": 1, "k": b"k"}), {"bad_version"}),
    ("string id", encode({"v": 1, "t": "get", "id": "1", "k": b"k"}), {"bad_id"}),
    ("int map keys", encode({1: 1, "t": "get"}), {"bad_msgpack"}),
    ("deep nesting", nested(100_000), {"bad_msgpack"}),
    ("ext type", HDR.pack(4) + b"\xd4\x01\x00\x00", {"bad_msgpack", "not_a_map"}),
]


@pytest.mark.parametrize(("name", "data", "codes"), CASES, ids=[c[0] for c in CASES])
async def test_garbage_gets_an_error_frame_and_a_close(
    tmp_path: Path, name: str, data: bytes, codes: set[str]
) -> None:
    async with small_node(tmp_path) as node:

        def go() -> None:
            with socket.create_connection(("127.0.0.1", node.port)) as s:
                s.sendall(data)
                got = frames_in(read_all(s))
            assert len(got) == 1 and got[0]["t"] == "error", got
            assert got[0]["code"] in codes, got
            healthy(node)

        await trio.to_thread.run_sync(go)


async def test_moderate_nesting_is_a_bad_request(tmp_path: Path) -> None:
    async with small_node(tmp_path) as node:

        def go() -> None:
            with socket.create_connection(("127.0.0.1", node.port)) as s:
                s.sendall(nested(200))
                s.settimeout(5)
                (answer,) = frames_in(s.recv(65536))
            assert answer["code"] == "bad_request", answer

        await trio.to_thread.run_sync(go)


async def test_random_and_truncated_bytes(tmp_path: Path) -> None:
    async with small_node(tmp_path) as node:
        valid = encode(
            {"v": 1, "t": "put", "id": 1, "c": b"c" * 16, "s": 1, "k": b"k", "val": b"v"}
        )

        @settings(
            max_examples=80, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        @given(
            prefix=st.binary(max_size=2000),
            cut=st.integers(0, len(valid)),
            mode=st.sampled_from(["random", "truncated", "valid-then-random"]),
        )
        def run(prefix: bytes, cut: int, mode: str) -> None:
            with socket.create_connection(("127.0.0.1", node.port)) as s:
                if mode == "random":
                    s.sendall(prefix)
                elif mode == "truncated":
                    s.sendall(valid[:cut])
                else:
                    s.sendall(valid + prefix)
                s.shutdown(socket.SHUT_WR)  # EOF: a truncated frame must not hang
                data = read_all(s)
            for f in frames_in(data):
                assert f.get("t") in ("ok", "error"), f
                if f["t"] == "error":
                    assert f["code"] in KNOWN_CODES, f

        await trio.to_thread.run_sync(run)
        await trio.to_thread.run_sync(healthy, node)
        assert node.server_stats.handler_errors == 0


async def test_connections_over_the_maximum_are_refused_cleanly(tmp_path: Path) -> None:
    async with small_node(tmp_path) as node:

        def go() -> None:
            held = [SyncConn(node.port) for _ in range(MAX_CONNS)]
            try:
                # each is really being served
                for c in held:
                    assert c.call({"v": 1, "t": "status", "id": 1})["t"] == "ok"  # type: ignore[index]
                extra = [socket.create_connection(("127.0.0.1", node.port)) for _ in range(5)]
                for s in extra:
                    got = frames_in(read_all(s))
                    s.close()
                    assert [f["code"] for f in got] == ["too_many_connections"], got
            finally:
                for c in held:
                    c.close()
            # once they are gone, new connections are served again
            deadline = time.monotonic() + 5
            while True:
                try:
                    healthy(node)
                    break
                except (AssertionError, TypeError, OSError):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)

        await trio.to_thread.run_sync(go)
        assert node.server_stats.refused >= 5


async def test_handshake_slowloris_and_idle_deadlines(tmp_path: Path) -> None:
    async with small_node(tmp_path) as node:
        status = encode({"v": 1, "t": "status", "id": 1})

        def go() -> None:
            # Before the first complete frame: the handshake deadline.
            t0 = time.monotonic()
            with socket.create_connection(("127.0.0.1", node.port)) as silent:
                got = frames_in(read_all(silent, limit=10))
            assert [f["code"] for f in got] == ["handshake_timeout"], got
            assert HANDSHAKE * 0.9 <= time.monotonic() - t0 < HANDSHAKE + 4
            # After it, a stalled frame: the frame deadline.
            with socket.create_connection(("127.0.0.1", node.port)) as slow:
                slow.sendall(status)
                t0 = time.monotonic()
                slow.sendall(HDR.pack(100) + b"\x85")  # a header, one byte, then nothing
                got = frames_in(read_all(slow, limit=10))
            assert [(f["t"], f.get("code")) for f in got] == [
                ("ok", None),
                ("error", "frame_timeout"),
            ]
            assert time.monotonic() - t0 < FRAME_DEADLINE + 4
            # ... and nothing at all: the idle deadline.
            with socket.create_connection(("127.0.0.1", node.port)) as idle:
                idle.sendall(status)
                t0 = time.monotonic()
                got = frames_in(read_all(idle, limit=10))
            assert [(f["t"], f.get("code")) for f in got] == [
                ("ok", None),
                ("error", "idle_timeout"),
            ]
            assert IDLE * 0.9 <= time.monotonic() - t0 < IDLE + 4

        await trio.to_thread.run_sync(go)
        stats = node.connection_statistics()["closed"]
        assert stats["handshake_timeout"] >= 1
        assert stats["frame_timeout"] >= 1
        assert stats["idle_timeout"] >= 1
        assert node.server_stats.active <= 1


async def test_memory_stays_bounded_after_1000_garbage_connections(tmp_path: Path) -> None:
    async with small_node(tmp_path) as node:
        junk = [
            b"\xff\xff\xff\xff",
            HDR.pack(MAX_FRAME) + b"x" * 60_000,  # a big partial frame, then EOF
            bytes(range(256)) * 8,
            encode({"v": 1, "t": "get", "id": 1, "k": "not bytes"}),
        ]

        def go(n: int) -> None:
            for i in range(n):
                with socket.create_connection(("127.0.0.1", node.port)) as s:
                    s.sendall(junk[i % len(junk)])
                    s.shutdown(socket.SHUT_WR)
                    assert_clean_close(read_all(s))

        await trio.to_thread.run_sync(go, 200)  # warm-up: allocator pools, caches
        gc.collect()
        before = rss_bytes()
        await trio.to_thread.run_sync(go, 1000)
        gc.collect()
        grown = rss_bytes() - before
        assert grown < 64 << 20, f"RSS grew by {grown >> 20} MiB over 1000 connections"
        with trio.fail_after(5):
            while node.server_stats.active:
                await trio.sleep(0.05)
        await trio.to_thread.run_sync(healthy, node)
        assert node.server_stats.handler_errors == 0
