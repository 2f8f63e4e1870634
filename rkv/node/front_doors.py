"""The node's other front doors: the HTTP/JSON API (rkv.httpapi) and the Redis protocol
(rkv.resp), built for a node and wired to its dispatcher.

Owns: what those servers get of the node: its dispatcher, so every request they make takes a
native client request's path (forwarding, read barrier, error frames), the health routes and
status, the store's key count, and their limits from the node's config. Must not: serve
anything itself (rkv.httpapi and rkv.resp do), or decide what a request means.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rkv.config import NodeConfig
from rkv.http import Response
from rkv.httpapi import HttpApi
from rkv.net.rpc import ConnInfo
from rkv.node.dispatch import Dispatcher
from rkv.node.health import Health
from rkv.resp import RespLimits, RespServer

HTTP_CONN = ConnInfo(conn_id=-1, peer="http", auth="client")
"""What the dispatcher knows of a request from the HTTP port (it proved the token there)."""


def http_api(
    cfg: NodeConfig, dispatch: Dispatcher, health: dict[str, Callable[[], Response]]
) -> HttpApi:
    """The HTTP port: health routes, and the API whose requests take the dispatcher's path
    like a native client's (a follower forwards writes to the leader)."""
    return HttpApi(
        lambda frame: dispatch.handle(frame, HTTP_CONN),
        health=health,
        token=cfg.cluster_token,
        open_metrics=cfg.http_open_metrics,
        timeout=2 * cfg.request_timeout,
        chunk_size=cfg.chunk_size,
    )


class RespBackend:
    """What the RESP server uses of the node (rkv.resp.Backend): requests go through the
    dispatcher exactly as a native client's (forwarding, read barrier, error frames)."""

    _INFO = ConnInfo(conn_id=0, peer="resp")

    def __init__(self, dispatch: Dispatcher, health: Health, store: Any) -> None:
        self._dispatch = dispatch
        self._health = health
        self._store = store

    async def request(self, frame: dict[str, Any]) -> dict[str, Any]:
        reply = await self._dispatch.handle(frame, self._INFO)
        assert reply is not None  # only raft frames are one-way
        return reply

    def status(self) -> dict[str, Any]:
        return self._health.status()

    def key_count(self) -> int:
        return int(self._store.stats()["kv_keys"])


def resp_server(cfg: NodeConfig, dispatch: Dispatcher, health: Health, store: Any) -> RespServer:
    """The RESP server of a node: its connections admitted under the node's limits (counted
    apart from the node's port), its writes retried for twice the request timeout."""
    return RespServer(
        RespBackend(dispatch, health, store),
        token=cfg.cluster_token,
        limits=RespLimits(
            max_connections=cfg.max_connections,
            max_connections_per_source=cfg.max_connections_per_source,
            handshake_timeout=cfg.handshake_timeout,
            frame_timeout=cfg.frame_timeout,
            min_frame_rate=cfg.min_frame_rate,
            idle_timeout=cfg.idle_timeout,
            max_inflight=cfg.max_inflight_per_conn,
            retry_seconds=2 * cfg.request_timeout,
        ),
        node_id=cfg.id,
    )
