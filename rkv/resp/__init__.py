"""RESP (the Redis protocol, versions 2 and 3) on a node's `--resp-port`: redis-cli,
redis-benchmark and any language's Redis client talk to rkv (README, "Use it from any
language"; docs/contracts.md, "RESP").

The package's rooms: `wire` (the request parser over hiredis and the reply encoder; pure),
`glob` (Redis' glob patterns; pure), `commands` (the command table and handlers, over the
`Backend` protocol: what the server needs of the node), `server` (the listener and the
connection loop, with the admission limits and deadlines). Must not: import rkv.node (the
node builds a `RespServer` with a `Backend` of its own), rkv.store or rkv.client.
"""

from __future__ import annotations

from rkv.resp.commands import COMMANDS, UNSUPPORTED, Backend, Session, Settings
from rkv.resp.server import RespLimits, RespServer, execute

__all__ = [
    "COMMANDS",
    "UNSUPPORTED",
    "Backend",
    "RespLimits",
    "RespServer",
    "Session",
    "Settings",
    "execute",
]
