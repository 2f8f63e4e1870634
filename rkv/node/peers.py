"""Peer links: the one place Raft traffic is framed for the wire and taken from it.

Owns: the peer transport and which links it holds, the nodes seen removed (their connections
are refused), the peers that said hello, the fault-injection drop sets and their counters, and
one-off requests to a member (`call_peer`). Must not: step messages (inbound traffic goes to
the raft loop's inbox through `offer`), stream snapshots (rkv.node.snapshots), or decide
membership (it follows the configuration the raft loop publishes).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from ssl import SSLContext
from typing import Any

from rkv import stagetimes
from rkv.codec import CodecError, message_from_wire, message_to_wire
from rkv.config import NodeConfig, parse_address
from rkv.errors import Unavailable, from_error_frame
from rkv.metrics import NodeMetrics
from rkv.net.rpc import ConnInfo, RemoteError, RpcClient, RpcError
from rkv.net.transport import PeerTransport
from rkv.node.common import one_line
from rkv.node.inbox import Frame, Input, PeerMessages, log
from rkv.raft.types import ConfState, Message, MessageType


class PeerLinks:
    def __init__(
        self,
        cfg: NodeConfig,
        conf: ConfState,
        metrics: NodeMetrics,
        *,
        offer: Callable[[Input], bool],
        on_refused: Callable[[str, str], None],
        ssl_context: SSLContext | None,
    ) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self._offer = offer
        self._ssl = ssl_context
        links = dict(cfg.peers) if conf.is_empty() else {}
        links.update(self.addresses(conf.members()))
        self._links: set[str] = set(links)
        self.removed: set[str] = set()
        """Nodes this process saw leave the configuration: their connections are refused."""
        self.transport = PeerTransport(
            cfg.id,
            links,
            queue_size=cfg.peer_queue,
            max_frame=cfg.max_frame,
            hello={"cluster": cfg.cluster_id, "node": cfg.id},
            ssl_context=ssl_context,
            token=cfg.cluster_token,
            on_refused=on_refused,
        )
        self._known_peers: set[str] = set()
        self.dropped_peer_frames = 0
        # Fault injection (cfg.fault_injection only): peers whose Raft traffic is dropped.
        self.drop_to: frozenset[str] = frozenset()
        self.drop_from: frozenset[str] = frozenset()
        self.fault_dropped_out = 0
        self.fault_dropped_in = 0

    # -- outbound -----------------------------------------------------------------------------

    def send(self, messages: Sequence[Message]) -> None:
        if not messages:
            return
        by_peer: dict[str, list[Message]] = defaultdict(list)
        for m in messages:
            by_peer[m.to].append(m)
        budget = self.cfg.max_frame // 2
        for to, msgs in by_peer.items():
            if to not in self._links:
                self._link(to)
            if to in self.drop_to:
                self.fault_dropped_out += len(msgs)
                continue
            self.metrics.peer_msgs_out[to] += len(msgs)
            wire: list[dict[str, Any]] = []
            size = 0
            for m in msgs:
                est = 64 + sum(e.size() + 8 for e in m.entries)
                if m.snapshot is not None:
                    est += len(m.snapshot.data)
                if wire and size + est > budget:
                    self.transport.send(to, {"t": "raft", "m": wire}, now=True)
                    wire, size = [], 0
                wire.append(message_to_wire(m))
                size += est
                self.metrics.peer_bytes_out[to] += est
            if wire:
                self.transport.send(to, {"t": "raft", "m": wire}, now=True)
        if stagetimes.clock is not None:
            stagetimes.clock.count("peer_sends")

    def dropping_to(self, to: str) -> bool:
        """Fault injection: whether a message to `to` is dropped (counted if so)."""
        if to in self.drop_to:
            self.fault_dropped_out += 1
            return True
        return False

    async def call_peer(self, node: str, frame: Frame, timeout: float) -> Frame:
        """One request to member `node` on a connection of its own; its ok frame, or an
        RkvError (Unavailable when it cannot be reached)."""
        cfg = self.cfg
        try:
            host, port = self.address(node)
            async with RpcClient(
                host,
                port,
                connect_timeout=timeout,
                max_frame=cfg.max_frame,
                hello={"cluster": cfg.cluster_id, "node": cfg.id},
                max_inflight=1,
                ssl_context=self._ssl,
                token=cfg.cluster_token,
            ) as client:
                answer = await client.call(frame, timeout)
        except RemoteError as e:
            raise from_error_frame(e.frame) from None
        except (RpcError, OSError, ValueError) as e:
            raise Unavailable(f"{node}: {one_line(str(e)) or type(e).__name__}") from None
        return answer

    # -- inbound ------------------------------------------------------------------------------

    def on_hello(self, frame: Frame) -> None:
        cluster = frame.get("cluster")
        node = frame.get("node")
        if not isinstance(cluster, str | None) or not isinstance(node, str | None):
            # anything else (a list: unhashable) must not reach the checks below, whose
            # exception would end the whole server, not just this connection
            raise RemoteError("bad_hello", "hello: cluster and node must be strings or nil")
        if cluster is not None and cluster != self.cfg.cluster_id:
            raise RemoteError(
                "wrong_cluster",
                f"this node is in cluster {self.cfg.cluster_id}, not {one_line(cluster)[:100]!r}",
            )
        if node is not None and not self.may_connect(node):
            raise RemoteError(
                "removed_node", f"{one_line(node)[:100]!r} was removed from this cluster"
            )
        if isinstance(node, str) and node not in self._known_peers:
            self._known_peers.add(node)
            log.info("%s: peer %s connected", self.cfg.id, node)

    def on_raft(self, frame: Frame, info: ConnInfo) -> None:
        hello = info.hello
        sender = hello.get("node") if hello is not None else None
        if sender is None or "id" in frame:
            # Raft traffic only from a member that said hello (checked by on_hello).
            self.dropped_peer_frames += 1
            return
        if sender in self.drop_from:
            self.fault_dropped_in += 1
            return
        raw = frame.get("m")
        if not isinstance(raw, list):
            self.dropped_peer_frames += 1
            return
        try:
            msgs = [message_from_wire(d) for d in raw]
        except CodecError as e:
            self.dropped_peer_frames += 1
            log.warning("%s: bad raft frame from %s: %s", self.cfg.id, sender, e)
            return
        # SNAPSHOT messages are never taken from the wire: the state they stand for arrives
        # as "snap" frames and is stepped locally once staged (see rkv.node.snapshots).
        msgs = [
            m
            for m in msgs
            if m.frm == sender and m.to == self.cfg.id and m.type != MessageType.SNAPSHOT
        ]
        if not msgs:
            return
        self.metrics.peer_msgs_in[sender] += len(msgs)
        self.metrics.peer_bytes_in[sender] += sum(
            64 + sum(e.size() + 8 for e in m.entries) for m in msgs
        )
        clock = stagetimes.clock
        if clock is not None:
            if any(m.entries for m in msgs if m.type == MessageType.APPEND):
                clock.begin("append")
            clock.mark("peer_decoded")
        # Never block a peer link on a busy loop: Raft tolerates the loss.
        if not self._offer(PeerMessages(msgs)):
            self.dropped_peer_frames += 1
        if clock is not None:
            clock.mark("peer_queued")

    def may_connect(self, node: str) -> bool:
        """Peers of this cluster (its id, and the token if one is set, were checked) we talk
        Raft with: anyone but a node we saw removed. Not only our configuration's members:
        ours may be older than the cluster's (a lagging or joining node must hear from a leader
        it has never heard of to catch up). A non-voter's vote requests are ignored by the
        core, so a node outside the configuration cannot start elections."""
        return node not in self.removed

    # -- membership ---------------------------------------------------------------------------

    def address(self, node_id: str) -> tuple[str, int]:
        hp = self.cfg.peers.get(node_id)
        return hp if hp is not None else parse_address(node_id)

    def addresses(self, ids: Sequence[str]) -> dict[str, tuple[str, int]]:
        out = {}
        for m in ids:
            if m == self.cfg.id:
                continue
            try:
                out[m] = self.address(m)
            except ValueError:
                log.warning(
                    "%s: member %r is not a host:port address; not reachable", self.cfg.id, m
                )
        return out

    def _link(self, to: str) -> None:
        """A message to a node we hold no link to (a leader a joining node answers, a member of
        a newer configuration than ours): reach it at its id."""
        self._links.add(to)
        try:
            self.transport.add_peer(to, self.address(to))
        except ValueError:
            log.warning("%s: cannot reach %r: not a host:port address", self.cfg.id, to)

    def follow(self, old: ConfState, conf: ConfState) -> None:
        """The configuration changed from `old` to `conf`: links to its members only."""
        members = set(conf.members())
        self.removed = (self.removed | set(old.members())) - members
        for gone in sorted(self._links - members):
            self._links.discard(gone)
            self.transport.remove_peer(gone)
        for m, addr in self.addresses(sorted(members - self._links)).items():
            self._links.add(m)
            self.transport.add_peer(m, addr)
