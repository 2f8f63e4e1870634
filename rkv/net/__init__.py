"""rkv.net: msgpack frames over Trio TCP streams (framing, streams, RPC, peer transport).

Imports nothing from rkv but the standard library, trio and msgpack; see docs/contracts.md.
"""

from __future__ import annotations

from rkv.net.framing import (
    DEFAULT_MAX_FRAME,
    PROTOCOL_VERSION,
    Frame,
    FrameDecoder,
    FrameError,
    encode_frame,
    error_frame,
)
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
from rkv.net.stream import FramedStream, IdleTimeout, open_framed
from rkv.net.transport import PeerTransport

__all__ = [
    "DEFAULT_MAX_FRAME",
    "PROTOCOL_VERSION",
    "ConnInfo",
    "ConnectionLost",
    "Frame",
    "FrameDecoder",
    "FrameError",
    "FramedStream",
    "IdleTimeout",
    "PeerTransport",
    "RemoteError",
    "RpcClient",
    "RpcError",
    "RpcTimeout",
    "ServerStats",
    "encode_frame",
    "error_frame",
    "open_framed",
    "serve",
]
