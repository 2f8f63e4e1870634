"""Shared helpers of tests/fuzz and tests/faults: in-process nodes on loopback and a blocking
framed client that can also send bytes the real client never would.

The blocking client runs in a worker thread (trio.to_thread) while the node runs on the trio
loop of the test, so hypothesis (which is synchronous) can drive a live node.
"""

from __future__ import annotations

import os
import socket
import struct
from pathlib import Path
from typing import Any

import msgpack

from rkv.config import NodeConfig
from rkv.testing import free_ports as free_ports
from rkv.testing import local_configs, running_cluster
from rkv.testing import wait_leader as wait_leader

HDR = struct.Struct(">I")

# Every error code a node may answer with when it is healthy: the client protocol's codes
# (rkv.errors) and the RPC/framing layer's (rkv.net). "internal" is deliberately absent.
KNOWN_CODES = frozenset(
    {
        "bad_request",
        "not_found",
        "not_leader",
        "unavailable",
        "timeout",
        "changed",
        "integrity",
        "store_full",
        # framing / rpc layer (connection-level, the connection is closed after them)
        "frame_too_large",
        "bad_msgpack",
        "not_a_map",
        "bad_type",
        "bad_version",
        "bad_id",
        "truncated",
        "frame_timeout",
        "handshake_timeout",
        "idle_timeout",
        "too_many_connections",
        "hello_required",
        "bad_hello",
        "removed_node",
        "wrong_cluster",
    }
)

running = running_cluster  # the name the tests here use


def configs(tmp: Path, n: int, **kw: Any) -> list[NodeConfig]:
    return local_configs(tmp, n, **kw)


def encode(body: Any) -> bytes:
    payload: bytes = msgpack.packb(body, use_bin_type=True)
    return HDR.pack(len(payload)) + payload


class SyncConn:
    """A blocking framed connection (for worker threads)."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self._buf = b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> SyncConn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, body: Any) -> None:
        self.send_raw(encode(body))

    def _read(self, n: int) -> bytes | None:
        while len(self._buf) < n:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                return None
            self._buf += chunk
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def receive(self) -> dict[str, Any] | None:
        """The next frame, or None when the server closed the connection."""
        try:
            hdr = self._read(HDR.size)
            if hdr is None:
                return None
            body = self._read(HDR.unpack(hdr)[0])
        except ConnectionResetError:
            return None
        if body is None:
            return None
        frame = msgpack.unpackb(body, raw=False)
        assert isinstance(frame, dict)
        assert frame.pop("v", None) == 1, frame
        return frame

    def call(self, body: dict[str, Any]) -> dict[str, Any] | None:
        self.send(body)
        return self.receive()


def rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")
