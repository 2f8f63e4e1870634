"""RESP (the Redis protocol, versions 2 and 3) on a node's `--resp-port`: redis-cli,
redis-benchmark and any language's Redis client talk to rkv (README, "Use it from any
language"; docs/contracts.md, "RESP").

The package's rooms: `wire` (the request parser over hiredis and the reply encoder; pure),
`glob` (Redis' glob patterns; pure), `cursors` (SCAN's cursor table; pure), `context` (the
`Backend` protocol: what the server needs of the node; the per-connection `Session`; calling
the node), `commands` (the connection, server and read handlers), `plans` (the commands that
are txn ops), `rmw` (read-modify-write and multi-key writes), `keyscan` (KEYS, SCAN),
`multi` (MULTI/EXEC/WATCH), `pubsub` (keyspace notifications from the node's watch),
`ttl` (TTLs as leases of their own), `ttlargs` (the TTL
options; pure), `table` (the command table, `COMMAND`, from the rows of `rows` and
`datarows`), `refused` (the commands
rkv does not support, and why), `server` (the listener and the
connection loop, with the admission limits and deadlines). Must not: import rkv.node (the
node builds a `RespServer` with a `Backend` of its own), rkv.store or rkv.client.
"""

from __future__ import annotations

from rkv.resp.context import Backend, Session, Settings
from rkv.resp.refused import UNSUPPORTED
from rkv.resp.server import RespLimits, RespServer, execute
from rkv.resp.table import COMMANDS

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
