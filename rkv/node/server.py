"""The server: one running rkv node, composed of its rooms, and the one port it listens on.

Owns: building the rooms and wiring them to each other (`Node.__init__`: each room is handed
what it talks to), the listener (peer Raft frames, snapshot chunks and client requests on one
port, dispatched by rkv.node.dispatch), the node's nursery (`run`), and the aggregate
statistics. Keeps the attributes tests and tools read (`replica`, `store`, `transport`,
`status()`, ...), delegating to the rooms. Must not: implement what a room does (the raft
loop, peer links, snapshot shipping, housekeeping, the client handlers, admin and health each
own theirs), Raft rules (rkv.raft), state-machine semantics (rkv.store) or framing (rkv.net).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from ssl import SSLContext, SSLError
from typing import Any

import trio

from rkv.backup import BackupSource
from rkv.compare import Comparer
from rkv.config import NodeConfig
from rkv.errors import ExitCode, Removed
from rkv.forward import Forwarder
from rkv.http import Response
from rkv.httpapi import HttpApi, serve_api
from rkv.integrity import IntegrityWatch
from rkv.metrics import NodeMetrics
from rkv.net import tls
from rkv.net.auth import token_fingerprint
from rkv.net.rpc import ServerStats, serve
from rkv.net.transport import PeerTransport
from rkv.node.admin import Admin
from rkv.node.common import NodeStartError, one_line
from rkv.node.dispatch import Dispatcher
from rkv.node.front_doors import http_api, resp_server
from rkv.node.handlers import ClientHandlers, Handler
from rkv.node.health import Health, connection_statistics
from rkv.node.housekeeping import Housekeeping
from rkv.node.inbox import Waiter, log
from rkv.node.leases import LeaseKeeper
from rkv.node.peers import PeerLinks
from rkv.node.raft_loop import RaftLoop
from rkv.node.snapshots import SnapshotShipper
from rkv.node.watch import WINDOW_BYTES_WITH_DURABLE, WINDOW_WITH_DURABLE, HistoryReader, WatchHub
from rkv.raft.config import Config
from rkv.raft.types import ConfState, Message
from rkv.replica import CompactionPolicy, Replica
from rkv.scrubber import Scrubber
from rkv.store.history import Bounds


class Node:
    """One running rkv node. Built by `run_node`; tests may inspect it (store, replica, stats)."""

    def __init__(self, cfg: NodeConfig, store: Any) -> None:
        self.cfg = cfg
        self.store = store
        raft_cfg = Config(
            id=cfg.id,
            voters=cfg.voters,
            election_tick=cfg.election_ticks,
            heartbeat_tick=cfg.heartbeat_ticks,
            max_size_per_msg=cfg.max_msg_bytes,
            max_inflight_msgs=cfg.max_inflight_msgs,
            pre_vote=cfg.pre_vote,
            check_quorum=cfg.check_quorum,
            applied=store.applied_index(),
        )
        rng = random.Random(cfg.seed) if cfg.seed is not None else random.Random()
        self.replica: Replica[Waiter] = Replica(
            raft_cfg,
            store,
            rng=rng,
            address_of=cfg.peer_address,
            defer_apply=cfg.apply_delay_seconds > 0,
        )
        self._server_ssl, client_ssl = ssl_contexts(cfg)
        self._nursery: trio.Nursery | None = None
        self.metrics = NodeMetrics(
            self.status, self.statistics, self._link_statistics, self.connection_statistics
        )
        self.raft = RaftLoop(
            cfg,
            self.replica,
            self.metrics,
            send=self._send_raft,
            on_conf_change=self._on_conf_change,
            after_turn=self._after_turn,
        )
        self.peers = PeerLinks(
            cfg,
            self.raft.view.conf,
            self.metrics,
            offer=self.raft.offer,
            on_refused=self._on_peer_refused,
            ssl_context=client_ssl,
        )
        durable: HistoryReader | None = None
        if hasattr(store, "take_changes"):
            store.record_changes = True  # for the watch hub: the apply records its changes
        if hasattr(store, "read_history"):  # ... and keeps them durably (rkv.store.history)
            store.history_bounds = Bounds(cfg.watch_history, cfg.watch_history_bytes)
            durable = store
        # With a durable history the memory window is a cache of its newest part: a watcher
        # behind it reads the store. Without one the window is all the history there is.
        history, history_bytes = cfg.watch_history, cfg.watch_history_bytes
        if durable is not None:
            history = min(history, WINDOW_WITH_DURABLE)
            history_bytes = min(history_bytes, WINDOW_BYTES_WITH_DURABLE)
        self.watch = WatchHub(
            store.applied_index(),
            history=history,
            history_bytes=history_bytes,
            max_watchers=cfg.watch_max,
            max_per_conn=cfg.watch_max_per_conn,
            election_timeout=cfg.election_ticks * cfg.tick_seconds,
            reply_bytes=max(1024, cfg.max_frame // 4),
            durable=durable,
        )
        """Watches (rkv.node.watch), fed after each raft-loop turn (`_after_turn`)."""
        self.handlers = ClientHandlers(cfg, store, self.raft, self.metrics, self.watch)
        self.leases = LeaseKeeper(cfg, store, self.handlers)
        """The Lessor and the lease requests (rkv.node.leases), driven after each turn."""
        self.forwarder = Forwarder(
            cfg.id,
            cfg.cluster_id,
            self.handlers.forward_to,
            lambda: self.raft.view.leads,
            token=cfg.cluster_token,
            ssl_context=client_ssl,
            max_frame=cfg.max_frame,
        )
        self.server_stats = ServerStats()
        self.port = cfg.port
        self.listening = False
        # Operations (rkv.metrics, rkv.http, rkv.backup): see docs/operations.md.
        self.integrity = IntegrityWatch(cfg.id, log, self._damaged)
        """Damaged stored records this node found (the degraded flag)."""
        self.comparer = Comparer(
            cfg.id,
            store.state_hashes,
            lambda: self.raft.view.conf.members(),
            self.peers.call_peer,
            is_leader=lambda: self.raft.view.leads,
            on_alarm=partial(self.integrity.condition, "replicas"),
            log=log,
            interval=cfg.compare_interval_seconds,
            timeout=min(cfg.request_timeout, 3.0),
        )
        self.scrubber = Scrubber(
            cfg.id,
            store,
            self.integrity,
            log,
            records_per_second=cfg.scrub_records_per_second,
            bytes_per_second=cfg.scrub_bytes_per_second,
        )
        self.backups = BackupSource(
            store, cfg.data_dir, {"cluster_id": cfg.cluster_id, "node_id": cfg.id}
        )
        self.http_port: int | None = None
        self.http_api: HttpApi | None = None
        """The HTTP port's routes (rkv.httpapi), built when the port opens."""
        self.snapshots = SnapshotShipper(
            cfg, store, self.raft, self.peers, self.integrity, ssl_context=client_ssl
        )
        self.housekeeping = Housekeeping(
            cfg, store, self.raft, self.integrity, self.snapshots.stats
        )
        self.admin = Admin(cfg, self.raft, self.peers, self.backups, spawn=self._spawn)
        self.health = Health(cfg, self.raft, self.integrity, self.metrics)
        routes: dict[str, Handler] = {
            **self.handlers.routes(),
            **self.leases.routes(),
            "status": self.health.status_request,
            **self.admin.routes(),
            # replica comparison (rkv.compare)
            "state_hashes": self.comparer.state_hashes,
            "check": self.comparer.check,
        }
        self.dispatch = Dispatcher(
            routes,
            self.peers,
            self.snapshots,
            self.forwarder,
            self.integrity,
            forward_to=self.handlers.forward_to,
            request_timeout=cfg.request_timeout,
        )
        # RESP (redis-cli, any Redis client): its commands become client requests handed to
        # the dispatcher, as a native client's are (rkv.resp).
        self.resp_port: int | None = None
        self.resp = resp_server(cfg, self.dispatch, self.health, store)

    # -- lifecycle ----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            # Bind first: a port in use must fail before anything else starts.
            self.port = await nursery.start(
                partial(
                    serve,
                    self.dispatch.handle,
                    self.cfg.host,
                    self.cfg.port,
                    max_frame=self.cfg.max_frame,
                    max_inflight_per_conn=self.cfg.max_inflight_per_conn,
                    max_connections=self.cfg.max_connections,
                    max_connections_per_source=self.cfg.max_connections_per_source,
                    handshake_timeout=self.cfg.handshake_timeout,
                    frame_timeout=self.cfg.frame_timeout,
                    min_frame_rate=self.cfg.min_frame_rate or None,
                    idle_timeout=self.cfg.idle_timeout,
                    on_hello=self.peers.on_hello,
                    stats=self.server_stats,
                    token=self.cfg.cluster_token,
                    ssl_context=self._server_ssl,
                    front_door=self.handlers.front_door,
                    oneway_door=self.dispatch.oneway_door,
                )
            )
            if self.cfg.http_port is not None:
                # Before `listening`: a busy HTTP port is reported as PORT_IN_USE too.
                self.http_api = api = http_api(self.cfg, self.dispatch, self.http_routes())
                self.http_port = await nursery.start(
                    partial(
                        serve_api,
                        api.handle,
                        api.on_error,
                        self.cfg.host,
                        self.cfg.http_port,
                        ssl_context=self._server_ssl,
                    )
                )
            if self.cfg.resp_port is not None:
                self.resp_port = await nursery.start(
                    self.resp.serve, self.cfg.host, self.cfg.resp_port
                )
                if self._server_ssl is not None:
                    log.warning(
                        "node %s: the RESP port %s has no TLS: AUTH sends the cluster token "
                        "in clear (docs/security.md)",
                        self.cfg.id,
                        self.resp_port,
                    )
            self.listening = True
            await nursery.start(self.transport.run)
            await nursery.start(self.forwarder.run)
            await nursery.start(self.snapshots.run)
            nursery.start_soon(self.raft.run)
            nursery.start_soon(self.comparer.run)
            nursery.start_soon(self.scrubber.run)
            log.info(
                "node %s serving on %s:%s (cluster %s, peers %s, data %s)",
                self.cfg.id,
                self.cfg.host,
                self.port,
                self.cfg.cluster_id,
                ",".join(self.cfg.peers) or "-",
                self.cfg.data_dir,
            )
            log.info(
                "node %s: TLS %s, cluster token %s",
                self.cfg.id,
                ("on, mutual" if self.cfg.tls_ca else "on") if self._server_ssl else "off",
                "off"
                if not self.cfg.cluster_token
                else f"on (fingerprint {token_fingerprint(self.cfg.cluster_token)})",
            )
            task_status.started(self)

    def _spawn(self, task: Callable[[], Awaitable[None]]) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(task)

    # -- wiring between the rooms -------------------------------------------------------------

    def _send_raft(self, messages: Sequence[Message]) -> None:
        self.peers.send(self.snapshots.divert(messages))

    async def _after_turn(self) -> None:
        self._feed_watch()
        view = self.raft.view
        self.leases.after_turn(view.leads, view.term, self.raft.offer)
        await self.housekeeping.after_turn()

    def _feed_watch(self) -> None:
        """The changes of this turn's applies to the watch hub: a cheap append and wake-up,
        never a wait (the applied index is read first: the changes taken then reach at least
        as far, and the raft loop, which applies, is the caller)."""
        applied = self.store.applied_index()
        take = getattr(self.store, "take_changes", None)
        changes = take() if take is not None else ()
        self.watch.feed(changes, applied, self.raft.view.leader, trio.current_time())

    def _on_conf_change(self, old: ConfState, conf: ConfState) -> None:
        self.peers.follow(old, conf)
        if not conf.is_empty() and self.cfg.id not in conf.members():
            self.admin.leave("applied its own removal")

    def _on_peer_refused(self, peer: str, code: str) -> None:
        if code == Removed.code:
            self.admin.leave(f"{peer} says so")

    def _damaged(self, reason: str) -> None:
        self.admin.damaged(reason)

    def _link_statistics(self) -> dict[str, Any]:
        stats: dict[str, Any] = self.peers.transport.statistics()
        return stats

    # -- what tests and operators read (delegating to the rooms) -------------------------------

    @property
    def transport(self) -> PeerTransport:
        return self.peers.transport

    @property
    def loop_running(self) -> bool:
        return self.raft.running

    @property
    def turns(self) -> int:
        return self.raft.turns

    @property
    def max_batch_seen(self) -> int:
        return self.raft.max_batch_seen

    @property
    def dropped_peer_frames(self) -> int:
        return self.peers.dropped_peer_frames

    @property
    def fault_dropped_out(self) -> int:
        return self.peers.fault_dropped_out

    @property
    def fault_dropped_in(self) -> int:
        return self.peers.fault_dropped_in

    @property
    def _drop_to(self) -> frozenset[str]:
        return self.peers.drop_to

    @_drop_to.setter
    def _drop_to(self, peers: frozenset[str]) -> None:
        self.peers.drop_to = peers

    @property
    def _drop_from(self) -> frozenset[str]:
        return self.peers.drop_from

    @_drop_from.setter
    def _drop_from(self, peers: frozenset[str]) -> None:
        self.peers.drop_from = peers

    @property
    def snap_stats(self) -> dict[str, int]:
        return self.snapshots.stats

    @property
    def compaction(self) -> CompactionPolicy:
        return self.housekeeping.policy

    @property
    def removed(self) -> bool:
        return self.admin.removed

    @property
    def repair(self) -> tuple[Path, ConfState] | None:
        return self.admin.repair

    def status(self) -> dict[str, Any]:
        return self.health.status()

    def readiness(self) -> tuple[bool, str]:
        return self.health.readiness()

    def http_routes(self) -> dict[str, Callable[[], Response]]:
        return self.health.http_routes()

    def members(self) -> dict[str, Any]:
        return self.admin.members()

    def transfer_target(self) -> str | None:
        return self.admin.transfer_target()

    async def transfer_leadership(self, to: str | None, timeout: float | None = None) -> str:
        return await self.admin.transfer_leadership(to, timeout)

    async def hand_over(self, timeout: float = 1.5) -> str | None:
        return await self.admin.hand_over(timeout)

    def snapshot_statistics(self) -> dict[str, Any]:
        return self.snapshots.statistics()

    def statistics(self) -> dict[str, Any]:
        peers = self.peers
        return {
            **self.raft.statistics(),
            "dropped_peer_frames": peers.dropped_peer_frames,
            "fault_dropped_out": peers.fault_dropped_out,
            "fault_dropped_in": peers.fault_dropped_in,
            "integrity_errors": self.integrity.errors,
            "forward": self.forwarder.statistics(),
            "scrub": self.scrubber.statistics(),
            "compare": self.comparer.statistics(),
            "snapshots": self.snapshot_statistics(),
            "store": self.store.stats(),
            "watch": self.watch.statistics(),
            "leases": self.leases.statistics(),
        }

    def connection_statistics(self) -> dict[str, Any]:
        return connection_statistics(self.server_stats)


def ssl_contexts(cfg: NodeConfig) -> tuple[SSLContext | None, SSLContext | None]:
    """(server, peer-client) contexts from the config's TLS files; (None, None) without TLS."""
    if cfg.tls_cert is None or cfg.tls_key is None:
        return None, None
    try:
        server = tls.server_context(cfg.tls_cert, cfg.tls_key, cfg.tls_ca)
        client = tls.client_context(cfg.tls_ca, cfg.tls_cert, cfg.tls_key)
    except (OSError, SSLError) as e:
        raise NodeStartError(ExitCode.USAGE, f"TLS files: {one_line(str(e))}") from None
    return server, client
