"""Inbound dispatch: what arrives on the node's port goes to the room that owns it.

Owns: nothing but the route table it is given (a handler for every request kind of
rkv.protocol). Raft frames go to the peer links (refused for a node seen removed), snapshot
chunks to snapshot shipping, requests, decoded by rkv.protocol (a frame that does not fit is
refused here, naming the field), to their handler; a follower's writes and other leader-only
requests (rkv.protocol LEADER_KINDS) go to the leader instead, as received. A handler's exception
becomes an error frame here (`as_error`; a damaged stored record: "integrity"). Must not:
decide what a request means (the handlers do) or touch the raft loop.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import trio

from rkv.errors import BadRequest, Removed, error_frame
from rkv.forward import Forwarder, LeaderHere
from rkv.integrity import IntegrityWatch
from rkv.net.rpc import ConnInfo, RemoteError
from rkv.node.common import REQUEST_ERRORS, as_error
from rkv.node.handlers import CONN_KINDS, Handler
from rkv.node.inbox import Frame
from rkv.node.peers import PeerLinks
from rkv.node.snapshots import SnapshotShipper
from rkv.protocol import REQUEST_TYPES, ProtocolError, decode_request
from rkv.store.errors import IntegrityError as StoreIntegrityError


class Dispatcher:
    def __init__(
        self,
        routes: dict[str, Handler],
        peers: PeerLinks,
        snapshots: SnapshotShipper,
        forwarder: Forwarder,
        integrity: IntegrityWatch,
        *,
        forward_to: Callable[[], str | None],
        request_timeout: float,
    ) -> None:
        assert routes.keys() <= REQUEST_TYPES.keys(), sorted(routes.keys() - REQUEST_TYPES.keys())
        self.routes = routes
        """A handler per request kind (the node has one for every kind: tests/node)."""
        self.peers = peers
        self.snapshots = snapshots
        self.forwarder = forwarder
        self.integrity = integrity
        self._forward_to = forward_to
        self._request_timeout = request_timeout

    def oneway_door(self, frame: Frame, info: ConnInfo) -> bool:
        """Raft traffic, taken by the connection's reader without a task hop (rkv.net.rpc's
        `oneway_door`): True if `frame` was a raft frame (handled)."""
        if frame.get("t") != "raft":
            return False
        sender = info.hello.get("node") if info.hello is not None else None
        if sender in self.peers.removed:
            # tell it, so it stops (a removed node may never hear of its removal otherwise)
            raise RemoteError(Removed.code, f"{sender} was removed from this cluster")
        self.peers.on_raft(frame, info)
        return True

    async def handle(self, frame: Frame, info: ConnInfo) -> Frame | None:
        t = frame.get("t")
        if t == "raft":
            self.oneway_door(frame, info)
            return None
        if t == "snap":
            return await self.snapshots.on_snap(frame, info)
        try:
            req = decode_request(frame)  # every field checked, or a precise BadRequest
        except ProtocolError as e:
            return error_frame(None, e)
        t = req.T
        handler = self.routes.get(t)
        if handler is None:  # only a node built from parts (tests) lacks a kind
            return error_frame(None, BadRequest(f"this node does not serve {t} requests"))
        try:
            if req.LEADER and not getattr(req, "fwd", False) and self._forward_to() is not None:
                # a follower: the leader answers (rkv.forward)
                deadline = trio.current_time() + self._request_timeout
                with contextlib.suppress(LeaderHere):  # else it leads now: handled here
                    return await self.forwarder.forward(frame, deadline)
            if t in CONN_KINDS:
                return await handler(req, info)
            return await handler(req)
        except REQUEST_ERRORS as e:
            return error_frame(None, as_error(e))
        except StoreIntegrityError as e:  # never served: the client gets "integrity"
            return error_frame(None, self.integrity.failed(e, f"a {t} request"))
