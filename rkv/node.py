"""The node runtime: the trio composition root of one rkv server process.

Owns: opening the store, the listener (peer Raft frames and client requests on one port), the
peer transport, the raft loop (the only task that touches the RawNode), request deadlines,
signal handling and the process exit codes (`serve_main`). Must not: implement Raft rules
(rkv.raft), state-machine semantics (rkv.store) or framing (rkv.net).

The raft loop does group commit: inputs (peer messages, proposals, reads) arrive through one
bounded channel; each turn first lets the other tasks run until they block (bounded by
`gather_seconds`), drains everything available, steps it, runs due ticks, then handles one
Ready: send `messages` (written at once on idle peer links), persist in one store
transaction (one fsync for the whole batch), send `persisted_messages`, apply committed
entries (one transaction, not itself fsynced), wake the waiting clients, advance. When a Ready
has both entries to persist and committed entries, both go into one transaction (one fsync). Small transactions run on the
loop itself, large ones (over `inline_io_bytes`) in a worker thread. Whatever arrives
meanwhile joins the next batch.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import random
import signal
import socket
import ssl
import sys
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import trio
import trio.testing

from rkv.backup import BackupSource
from rkv.codec import (
    MAX_ID_LEN,
    Cas,
    CodecError,
    Command,
    Delete,
    FileAbort,
    FileChunk,
    FileCommit,
    FileDelete,
    Put,
    Request,
    encode_request,
    message_from_wire,
    message_to_wire,
    snapshot_meta_from_list,
    snapshot_meta_to_list,
)
from rkv.compare import Comparer
from rkv.config import NodeConfig, format_address, parse_address
from rkv.errors import (
    BadRequest,
    Changed,
    ExitCode,
    NotFound,
    NotLeader,
    Removed,
    RkvError,
    StoreFull,
    Timeout,
    Unavailable,
    error_frame,
    from_error_frame,
)
from rkv.forward import LEADER_TYPES, Forwarder, LeaderHere
from rkv.http import Response, serve_http, text
from rkv.integrity import IntegrityWatch
from rkv.metrics import CONTENT_TYPE, NodeMetrics
from rkv.net import tls
from rkv.net.auth import token_fingerprint
from rkv.net.rpc import Answer, ConnInfo, RemoteError, RpcClient, RpcError, ServerStats, serve
from rkv.net.transport import PeerTransport
from rkv.raft.confchange import ConfChange, ConfChangeType
from rkv.raft.config import Config
from rkv.raft.errors import ProposalDropped
from rkv.raft.types import ConfState, Entry, Message, MessageType, Ready, Role, Snapshot
from rkv.repair import damaged_path, rebuild
from rkv.replica import CompactionPolicy, Outcome, Replica
from rkv.scrubber import Scrubber
from rkv.store import open_store
from rkv.store.errors import IntegrityError as StoreIntegrityError
from rkv.store.errors import NotFoundError, StoreError, StoreFullError, StoreIdentityError

log = logging.getLogger("rkv.node")

Frame = dict[str, Any]

MAX_SCAN_LIMIT = 10_000
DEFAULT_SCAN_LIMIT = 1000
FAULT_INJECTION_ENV = "RKV_FAULT_INJECTION"
LIVENESS_STALL = 10.0
"""/livez fails once the raft loop has not turned for this many seconds."""
PROMOTE_MAX_LAG = 1000
"""A learner is promoted only once it is at most this many entries behind the commit index
(promoting a far-behind node is safe, but the cluster would lose availability meanwhile)."""
REMOVED_EXIT_DELAY = 2.0
REPAIR_EXIT_DELAY = 0.2
"""Seconds between answering `repair` and stopping (the answer leaves first)."""
"""A node that applied its own removal stops after this long: time for the answer to the
`member remove` request, and for a removed leader's hand-over, to leave."""
_TICK_CATCH_UP = 50
"""Most ticks run in one turn after a stall: enough to let time pass, bounded so a long pause
(a suspended process) does not spin."""


@dataclass(eq=False, slots=True)
class Waiter:
    """A client request waiting on the raft loop (a proposal or a linearizable read)."""

    event: trio.Event = field(default_factory=trio.Event)
    entry: Entry | None = None
    result: Any = None
    error: RkvError | None = None
    deadline: float = math.inf
    """When the raft loop answers Timeout (request_timeout after the request arrived)."""
    what: str = "request not done"
    on_done: Callable[[Waiter], None] | None = None
    """Called (by the raft loop) when done, for a request that has no task waiting on `event`."""

    def done(self) -> bool:
        return self.event.is_set()

    def finish(self) -> None:
        self.event.set()
        if self.on_done is not None:
            try:
                self.on_done(self)
            except Exception:
                # A bug in answering one request must not stop the raft loop that calls this.
                log.exception("answering a request failed")


@dataclass(slots=True)
class _Propose:
    data: bytes
    waiter: Waiter
    early: bool = False
    """Answer at commit, before apply (the result cannot fail: a put)."""


@dataclass(slots=True)
class _Read:
    waiter: Waiter


@dataclass(slots=True)
class _Peer:
    messages: list[Message]


@dataclass(slots=True)
class _Transfer:
    to: str
    waiter: Waiter


@dataclass(slots=True)
class _Member:
    change: ConfChange
    waiter: Waiter


@dataclass(slots=True)
class _InstallSnapshot:
    """A SNAPSHOT message for a state staged in the store; `done` is set after the turn that
    stepped it (and so persisted the install, if the core accepted it) ended."""

    message: Message
    done: trio.Event


_Input = _Propose | _Read | _Peer | _Transfer | _InstallSnapshot | _Member


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
        self._backlog_since: float | None = None
        """When the replica's apply backlog became non-empty (see _flush_backlog)."""
        self._backlog_grew = 0.0
        """When the backlog last grew."""
        self._backlog_len = 0
        hello = {"cluster": cfg.cluster_id, "node": cfg.id}
        self._server_ssl, self._client_ssl = _ssl_contexts(cfg)
        self._conf = self.replica.raw.conf_state()
        """The configuration in force (as of the applied index), refreshed after each Ready."""
        links = dict(cfg.peers) if self._conf.is_empty() else {}
        links.update(self._addresses(self._conf.members()))
        self._links: set[str] = set(links)
        self.removed = False
        self.repair: tuple[Path, ConfState] | None = None
        """(where the damaged data dir goes, the configuration then) once repair was asked."""
        self._removed: set[str] = set()
        """Nodes this process saw leave the configuration: their connections are refused."""
        self._nursery: trio.Nursery | None = None
        self.transport = PeerTransport(
            cfg.id,
            links,
            queue_size=cfg.peer_queue,
            max_frame=cfg.max_frame,
            hello=hello,
            ssl_context=self._client_ssl,
            token=cfg.cluster_token,
            on_refused=self._on_peer_refused,
        )
        self.forwarder = Forwarder(
            cfg.id,
            cfg.cluster_id,
            self._forward_to,
            lambda: self.replica.role == Role.LEADER,
            token=cfg.cluster_token,
            ssl_context=self._client_ssl,
            max_frame=cfg.max_frame,
        )
        self._in_send, self._in_recv = trio.open_memory_channel[_Input](cfg.inbox_size)
        self.server_stats = ServerStats()
        self.port = cfg.port
        self.listening = False
        self.turns = 0
        self.dropped_peer_frames = 0
        self.max_batch_seen = 0
        self._known_peers: set[str] = set()
        # Fault injection (cfg.fault_injection only): peers whose Raft traffic is dropped.
        self._drop_to: frozenset[str] = frozenset()
        self._drop_from: frozenset[str] = frozenset()
        self.fault_dropped_out = 0
        self.fault_dropped_in = 0
        # Operations (rkv.metrics, rkv.http, rkv.backup): see docs/operations.md.
        self.integrity = IntegrityWatch(cfg.id, log, self._damaged)
        """Damaged stored records this node found (the degraded flag)."""
        self.comparer = Comparer(
            cfg.id,
            store.state_hashes,
            lambda: self._conf.members(),
            self._call_peer,
            is_leader=lambda: self.replica.role == Role.LEADER,
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
        self.metrics = NodeMetrics(
            self.status, self.statistics, self.transport.statistics, self.connection_statistics
        )
        self.backups = BackupSource(
            store, cfg.data_dir, {"cluster_id": cfg.cluster_id, "node_id": cfg.id}
        )
        self.http_port: int | None = None
        self.loop_running = False
        self._init_snapshots()

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            # Bind first: a port in use must fail before anything else starts.
            self.port = await nursery.start(
                partial(
                    serve,
                    self._handle,
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
                    on_hello=self._on_hello,
                    stats=self.server_stats,
                    token=self.cfg.cluster_token,
                    ssl_context=self._server_ssl,
                    front_door=self._front_door,
                )
            )
            if self.cfg.http_port is not None:
                # Before `listening`: a busy HTTP port is reported as PORT_IN_USE too.
                self.http_port = await nursery.start(
                    serve_http, self.http_routes(), self.cfg.host, self.cfg.http_port
                )
            self.listening = True
            await nursery.start(self.transport.run)
            await nursery.start(self.forwarder.run)
            await nursery.start(self._snapshot_senders)
            nursery.start_soon(self._fail_stop_loop)
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

    # -- the raft loop -----------------------------------------------------------------------

    async def _fail_stop_loop(self) -> None:
        """The raft loop, fail-stop: once the store failed (a failed commit or fsync, a
        corrupt record) nothing it holds can be trusted to be durable, so the node stops with
        an exit code instead of going on (docs/faults.md)."""
        try:
            await self._raft_loop()
        except StoreFullError as e:
            raise _Fatal(ExitCode.STORE_FULL, _one_line(f"store full: {e}")) from e
        except StoreIntegrityError as e:
            # applying a write over a damaged record (its version, a session) cannot be done
            # the way the other replicas did it
            raise _Fatal(ExitCode.INTEGRITY, _one_line(f"store damaged, stopping: {e}")) from e
        except StoreError as e:
            raise _Fatal(ExitCode.STORE_ERROR, _one_line(f"store failed, stopping: {e}")) from e

    async def _raft_loop(self) -> None:
        tick = self.cfg.tick_seconds
        next_tick = trio.current_time() + tick
        next_sweep = next_tick
        batch: list[_Input] = []
        self.loop_running = True
        while True:
            if not batch and not self.replica.has_ready():
                wake = next_tick
                if self._backlog_since is not None:
                    wake = min(wake, self._backlog_due())
                with trio.move_on_at(wake):
                    batch.append(await self._in_recv.receive())
            if batch and self.cfg.gather_seconds > 0:
                # Group commit: the store runs on this task, so nothing else runs meanwhile.
                # Let every other task run until it blocks (connection readers and handlers
                # turn what has arrived into inputs, writers flush answers) so that this turn
                # takes them all into one Ready and one fsync. Bounded: a busy node still turns.
                with trio.move_on_after(self.cfg.gather_seconds):
                    await trio.testing.wait_all_tasks_blocked()
            # Bounded batches: at most max_batch inputs and about max_batch_bytes of proposed
            # data per turn (one Ready, one fsync); the rest waits for the next turn.
            size = sum(len(i.data) for i in batch if isinstance(i, _Propose))
            while len(batch) < self.cfg.max_batch and size < self.cfg.max_batch_bytes:
                try:
                    item = self._in_recv.receive_nowait()
                except trio.WouldBlock:
                    break
                batch.append(item)
                if isinstance(item, _Propose):
                    size += len(item.data)
            self.max_batch_seen = max(self.max_batch_seen, len(batch))
            self.metrics.proposals += sum(1 for i in batch if isinstance(i, _Propose))
            self._step_inputs(batch)
            batch = []
            now = trio.current_time()
            if now >= next_tick:
                due = min(_TICK_CATCH_UP, int((now - next_tick) / tick) + 1)
                for _ in range(due):
                    self.replica.tick()
                next_tick = max(next_tick + due * tick, now - tick) if due else next_tick
                if next_tick <= now:
                    next_tick = now + tick
            if self.replica.has_ready():
                await self._handle_ready()
            await self._flush_backlog(now)
            await self._after_turn()
            self.turns += 1
            if now >= next_sweep:
                # Requests past their deadline get Timeout here, not from a cancel scope per
                # request in its handler (that costs more than the rest of a put's wait), and
                # are no longer tracked: e.g. a read whose forwarded request or answer was
                # lost while the leader stayed the same.
                self._sweep(now)
                next_sweep = now + tick

    def _step_inputs(self, batch: Sequence[_Input]) -> None:
        now = trio.current_time()
        for item in batch:
            if isinstance(item, _Peer):
                for m in item.messages:
                    self.replica.step(m)
            elif isinstance(item, _Propose):
                if self._expired(item.waiter, now):
                    continue
                try:
                    self.replica.propose(item.data, item.waiter, early=item.early)
                except RkvError as e:
                    self._fail(item.waiter, e)
                    continue
            elif isinstance(item, _InstallSnapshot):
                self.replica.step(item.message)
                self._installs_stepped.append(item.done)
            elif isinstance(item, _Member):
                if self._expired(item.waiter, now):
                    continue
                try:
                    if item.change.type == ConfChangeType.PROMOTE:
                        self._check_caught_up(item.change.node)
                    self.replica.propose_conf_change(item.change, item.waiter)
                except RkvError as e:
                    self._fail(item.waiter, e)
            elif isinstance(item, _Transfer):
                try:
                    self.replica.raw.transfer_leader(item.to)
                except ProposalDropped:
                    self._fail(item.waiter, Unavailable("no longer the leader; retry"))
                except ValueError as e:
                    self._fail(item.waiter, BadRequest(_one_line(str(e))))
                else:
                    item.waiter.finish()
            else:
                if self._expired(item.waiter, now):
                    continue
                try:
                    self.replica.read(item.waiter)
                except RkvError as e:
                    self._fail(item.waiter, e)

    async def _handle_ready(self) -> None:
        replica = self.replica
        ready = replica.take_ready()
        self._send(ready.messages)
        early = replica.answer_committed(ready)
        if early.completed:
            # Committed puts are answered before this turn writes anything: their answers
            # need neither the apply nor this Ready's own log write.
            self._deliver(early)
            if ready.must_sync:
                with trio.move_on_after(self.cfg.gather_seconds):
                    await trio.testing.wait_all_tasks_blocked()
        if replica.can_group_commit(ready):
            results = await self._persist_and_apply(ready)
            self._send(ready.persisted_messages)
        else:
            await self._persist(ready)
            self._send(ready.persisted_messages)
            results = await self._apply(ready)
        out = replica.finish(ready, results)
        self._deliver(out)
        if ready.committed_entries or ready.snapshot is not None:
            self._check_conf()
        self._note_backlog()
        if out.completed or out.reads:
            with trio.move_on_after(self.cfg.gather_seconds):
                # Let the answers leave before the next turn can block on the store.
                await trio.testing.wait_all_tasks_blocked()
        if out.role_changed or out.leader_changed:
            log.info(
                "%s: now %s, term %d, leader %s",
                self.cfg.id,
                replica.role.name.lower(),
                replica.raw.status().term,
                replica.leader or "-",
            )

    async def _persist(self, ready: Ready) -> None:
        if not ready.must_sync:
            return
        t0 = trio.current_time()
        try:
            if ready.snapshot is None and _data_bytes(ready.entries) <= self.cfg.inline_io_bytes:
                # A small transaction costs less than a thread hand-off (two context
                # switches and a GIL transfer): run it on the loop.
                self.replica.persist(ready)
            else:
                await trio.to_thread.run_sync(self.replica.persist, ready)
        except StoreFullError as e:
            # Raft state that cannot be made durable cannot be acknowledged: stop the node
            # (exit code STORE_FULL) rather than lie to peers.
            raise _Fatal(ExitCode.STORE_FULL, f"store full while persisting: {e}") from e
        self.metrics.on_save(trio.current_time() - t0)

    async def _persist_and_apply(self, ready: Ready) -> Sequence[Any]:
        """Group commit: the Ready's entries and its committed entries in one transaction."""
        t0 = trio.current_time()
        self.metrics.on_apply(len(ready.committed_entries))
        try:
            size = _data_bytes(ready.entries) + _data_bytes(ready.committed_entries)
            if size <= self.cfg.inline_io_bytes:
                results = self.replica.persist_and_apply(ready)
            else:
                results = await trio.to_thread.run_sync(self.replica.persist_and_apply, ready)
        except StoreFullError as e:
            raise _Fatal(ExitCode.STORE_FULL, f"store full while persisting: {e}") from e
        self.metrics.on_save(trio.current_time() - t0)
        return results

    async def _apply(self, ready: Ready) -> Sequence[Any]:
        """Apply (or, see Replica's defer_apply, queue) the committed entries."""
        if ready.committed_entries:
            self.metrics.on_apply(len(ready.committed_entries))
        try:
            size = _data_bytes(ready.committed_entries) + self.replica.backlog_bytes
            if size <= self.cfg.inline_io_bytes:
                return self.replica.apply(ready)
            return await trio.to_thread.run_sync(self.replica.apply, ready)
        except StoreFullError as e:
            raise _Fatal(ExitCode.STORE_FULL, f"store full while applying: {e}") from e

    def _note_backlog(self) -> None:
        n = self.replica.backlog
        if n == 0:
            self._backlog_since = None
        elif n > self._backlog_len:
            now = trio.current_time()
            self._backlog_grew = now
            if self._backlog_since is None:
                self._backlog_since = now
        self._backlog_len = n

    def _backlog_due(self) -> float:
        """When the backlog is to be written: once writes stopped (no entry joined it for
        apply_delay_seconds and none is under way: a follower, or an idle leader, must not keep
        its store, which stale reads, snapshots and a restart's replay see, behind for long),
        or once its oldest entry waited apply_max_delay_seconds. Under load a batch fills up
        (and goes with a log write) or grows old: a pause between two rounds of requests
        does not cut it short."""
        assert self._backlog_since is not None
        due = self._backlog_since + self.cfg.apply_max_delay_seconds
        if self.replica.uncommitted:
            return due
        return min(due, self._backlog_grew + self.cfg.apply_delay_seconds)

    async def _flush_backlog(self, now: float) -> None:
        """Write the apply backlog when `_backlog_due`. A large backlog (up to
        Replica.max_backlog_bytes) is written in a worker thread, like any large
        transaction."""
        if self._backlog_since is None or now < self._backlog_due():
            return
        try:
            if self.replica.backlog_bytes <= self.cfg.inline_io_bytes:
                self._deliver(self.replica.apply_backlog())
            else:
                self._deliver(await trio.to_thread.run_sync(self.replica.apply_backlog))
        except StoreFullError as e:
            raise _Fatal(ExitCode.STORE_FULL, f"store full while applying: {e}") from e
        self._note_backlog()

    def _deliver(self, out: Outcome[Waiter]) -> None:
        for w, entry, result in out.completed:
            w.entry = entry
            w.result = result
            w.finish()
        for w, err in out.failed:
            self._fail(w, err)
        for w, _index in out.reads:
            w.finish()

    @staticmethod
    def _fail(w: Waiter, err: RkvError) -> None:
        if not w.event.is_set():
            w.error = err
            w.finish()

    def _send(self, messages: Sequence[Message]) -> None:
        messages = self._divert_snapshots(messages)
        if not messages:
            return
        by_peer: dict[str, list[Message]] = defaultdict(list)
        for m in messages:
            by_peer[m.to].append(m)
        budget = self.cfg.max_frame // 2
        for to, msgs in by_peer.items():
            if to not in self._links:
                self._link(to)
            if to in self._drop_to:
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

    # -- inbound -----------------------------------------------------------------------------

    def _on_hello(self, frame: Frame) -> None:
        cluster = frame.get("cluster")
        node = frame.get("node")
        if not isinstance(cluster, str | None) or not isinstance(node, str | None):
            # anything else (a list: unhashable) must not reach the checks below, whose
            # exception would end the whole server, not just this connection
            raise RemoteError("bad_hello", "hello: cluster and node must be strings or nil")
        if cluster is not None and cluster != self.cfg.cluster_id:
            raise RemoteError(
                "wrong_cluster",
                f"this node is in cluster {self.cfg.cluster_id}, not {_one_line(cluster)[:100]!r}",
            )
        if node is not None and not self._may_connect(node):
            raise RemoteError(
                "removed_node", f"{_one_line(node)[:100]!r} was removed from this cluster"
            )
        if isinstance(node, str) and node not in self._known_peers:
            self._known_peers.add(node)
            log.info("%s: peer %s connected", self.cfg.id, node)

    async def _handle(self, frame: Frame, info: ConnInfo) -> Frame | None:
        t = frame.get("t")
        if t == "raft":
            sender = info.hello.get("node") if info.hello is not None else None
            if sender in self._removed:
                # tell it, so it stops (a removed node may never hear of its removal otherwise)
                raise RemoteError(Removed.code, f"{sender} was removed from this cluster")
            self._on_raft(frame, info)
            return None
        if t == "snap":
            return await self._on_snap(frame, info)
        handler = self._handlers.get(t) if isinstance(t, str) else None
        if handler is None:
            return error_frame(None, BadRequest(f"unknown request type {t!r}"))
        try:
            forward = t in LEADER_TYPES and frame.get("fwd") is not True
            if forward and self._forward_to() is not None:
                # a follower: the leader answers (rkv.forward)
                deadline = trio.current_time() + self.cfg.request_timeout
                with contextlib.suppress(LeaderHere):  # else it leads now: handled here
                    return await self.forwarder.forward(frame, deadline)
            return await handler(self, frame)
        except _REQUEST_ERRORS as e:
            return error_frame(None, _as_error(e))
        except StoreIntegrityError as e:  # never served: the client gets "integrity"
            return error_frame(None, self.integrity.failed(e, f"a {t} request"))

    def _front_door(self, frame: Frame, info: ConnInfo, answer: Answer) -> bool:
        """Puts, the hot path, without a task each (see rpc.serve's front_door): checked and
        queued to the raft loop here, answered by the raft loop (Waiter.on_done) once
        committed, or failed (timeout, lost leadership). Anything else, or a full inbox,
        takes the usual way."""
        if frame.get("t") != "put" or self.replica.role != Role.LEADER:
            return False  # a follower forwards it (_handle)
        try:
            data = self._request_data(frame, Put(_bytes(frame, "k"), _bytes(frame, "val")))
            self._leader_check()
        except _REQUEST_ERRORS as e:
            answer(_as_error(e))
            return True
        t0 = trio.current_time()
        w = Waiter(deadline=t0 + self.cfg.request_timeout, what="write not committed")
        w.on_done = partial(self._put_done, answer, t0)
        try:
            self._in_send.send_nowait(_Propose(data, w, early=True))
        except trio.WouldBlock:
            return False
        return True

    def _put_done(self, answer: Answer, t0: float, w: Waiter) -> None:
        if w.error is not None:
            answer(w.error)
            return
        self.metrics.on_commit(trio.current_time() - t0)
        refused = _refusal(w.result)
        answer({"t": "ok"} if refused is None else refused)

    def _on_raft(self, frame: Frame, info: ConnInfo) -> None:
        hello = info.hello
        sender = hello.get("node") if hello is not None else None
        if sender is None or "id" in frame:
            # Raft traffic only from a member that said hello (checked by _on_hello).
            self.dropped_peer_frames += 1
            return
        if sender in self._drop_from:
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
        # as "snap" frames and is stepped locally once staged (see _on_snap).
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
        try:
            # Never block a peer link on a busy loop: Raft tolerates the loss.
            self._in_send.send_nowait(_Peer(msgs))
        except trio.WouldBlock:
            self.dropped_peer_frames += 1

    # -- client requests ---------------------------------------------------------------------

    def _forward_to(self) -> str | None:
        """The leader's address when this node should forward a client's write there (it is
        a follower that knows a leader); None to handle it here."""
        r = self.replica
        if r.role == Role.LEADER or not r.leader or r.leader == self.cfg.id:
            return None
        return r.leader_address()

    def _leader_check(self) -> None:
        r = self.replica
        if r.role == Role.LEADER:
            return
        if r.leader and r.leader != self.cfg.id:
            raise NotLeader(leader_addr=r.leader_address())
        raise Unavailable("no leader known; retry")

    @staticmethod
    def _request_data(frame: Frame, command: Command) -> bytes:
        """The log entry data of a write: the command with the frame's session and seq."""
        client_id = _bytes(frame, "c", MAX_ID_LEN)
        seq = frame.get("s")
        if type(seq) is not int or seq < 1:
            raise BadRequest("s (seq) must be an integer >= 1")
        return encode_request(Request(client_id, seq, command))

    async def _propose(self, frame: Frame, command: Command) -> Any:
        data = self._request_data(frame, command)
        self._leader_check()
        w = Waiter()
        t0 = trio.current_time()
        # A put's result is always ok (a duplicate or stale retry of the session's seq took
        # effect already), so it is answered once committed (Replica.answer_committed).
        await self._submit(
            _Propose(data, w, early=isinstance(command, Put)), w, "write not committed"
        )
        self.metrics.on_commit(trio.current_time() - t0)
        refused = _refusal(w.result)
        if refused is not None:
            raise refused
        return getattr(w.result, "value", None)

    async def _submit(self, item: _Input, w: Waiter, what: str) -> None:
        """Hand `item` to the raft loop and wait for its waiter `w`; raises `w`'s error, which
        is Timeout ("`what` within N s") once request_timeout passed: the raft loop answers
        that (`_expired`, and its sweep every tick), so a request costs no cancel scope."""
        w.deadline = trio.current_time() + self.cfg.request_timeout
        w.what = what
        try:
            # The inbox nearly always has room: no checkpoint (a task switch) to queue it.
            self._in_send.send_nowait(item)
        except trio.WouldBlock:
            with trio.move_on_at(w.deadline):
                await self._in_send.send(item)
                w.what = ""
            if w.what:  # still not queued at the deadline
                raise self._timeout(w) from None
            w.what = what
        await w.event.wait()
        if w.error is not None:
            raise w.error

    def _sweep(self, now: float) -> None:
        for w in self.replica.forget(lambda w: w.deadline <= now):
            self._fail(w, self._timeout(w))

    def _timeout(self, w: Waiter) -> Timeout:
        return Timeout(f"{w.what} within {self.cfg.request_timeout} s")

    def _expired(self, w: Waiter, now: float) -> bool:
        """Fail `w` with Timeout if its deadline passed (it waited that long in the inbox)."""
        if now < w.deadline:
            return False
        self._fail(w, self._timeout(w))
        return True

    async def _linearizable(self) -> None:
        w = Waiter()
        await self._submit(_Read(w), w, "read index not reached")

    async def _maybe_linearizable(self, frame: Frame) -> None:
        stale = frame.get("stale", False)
        if not isinstance(stale, bool):
            raise BadRequest("stale must be a bool")
        if not stale:
            await self._linearizable()

    async def _h_put(self, f: Frame) -> Frame:
        await self._propose(f, Put(_bytes(f, "k"), _bytes(f, "val")))
        return {"t": "ok"}

    async def _h_delete(self, f: Frame) -> Frame:
        existed = await self._propose(f, Delete(_bytes(f, "k")))
        return {"t": "ok", "existed": bool(existed)}

    async def _h_cas(self, f: Frame) -> Frame:
        exp = f.get("exp")
        if exp is not None and not isinstance(exp, bytes):
            raise BadRequest("exp must be bytes or nil")
        swapped = await self._propose(f, Cas(_bytes(f, "k"), exp, _bytes(f, "val")))
        return {"t": "ok", "swapped": bool(swapped)}

    async def _h_file_chunk(self, f: Frame) -> Frame:
        cmd = FileChunk(_bytes(f, "k"), _bytes(f, "u"), _int(f, "n"), _bytes(f, "data"))
        await self._propose(f, cmd)
        return {"t": "ok"}

    async def _h_file_commit(self, f: Frame) -> Frame:
        cmd = FileCommit(
            _bytes(f, "k"), _bytes(f, "u"), _int(f, "size"), _int(f, "chunks"), _bytes(f, "sha")
        )
        await self._propose(f, cmd)
        return {"t": "ok"}

    async def _h_file_abort(self, f: Frame) -> Frame:
        aborted = await self._propose(f, FileAbort(_bytes(f, "u"), 0))
        return {"t": "ok", "aborted": bool(aborted)}

    async def _h_file_delete(self, f: Frame) -> Frame:
        existed = await self._propose(f, FileDelete(_bytes(f, "k")))
        return {"t": "ok", "existed": bool(existed)}

    async def _h_get(self, f: Frame) -> Frame:
        key = _bytes(f, "k")
        await self._maybe_linearizable(f)
        return {"t": "ok", "val": self.store.get(key)}

    async def _h_scan(self, f: Frame) -> Frame:
        prefix = _bytes(f, "p") if f.get("p") is not None else b""
        limit = f.get("limit", DEFAULT_SCAN_LIMIT)
        if type(limit) is not int or not 1 <= limit <= MAX_SCAN_LIMIT:
            raise BadRequest(f"limit must be an integer in 1..{MAX_SCAN_LIMIT}")
        await self._maybe_linearizable(f)
        items = self.store.scan(prefix, limit)
        return {"t": "ok", "items": [[k, v] for k, v in items]}

    async def _h_file_meta(self, f: Frame) -> Frame:
        key = _bytes(f, "k")
        await self._maybe_linearizable(f)
        m = self.store.file_manifest(key)
        if m is None:
            raise NotFound(f"no file {key!r}")
        return {"t": "ok", "size": m.size, "chunks": m.chunks, "sha": m.sha256}

    async def _h_file_read(self, f: Frame) -> Frame:
        key = _bytes(f, "k")
        n = _int(f, "n")
        sha = _bytes(f, "sha")
        m = self.store.file_manifest(key)
        if m is None:
            raise NotFound(f"no file {key!r}")
        if m.sha256 != sha:
            raise Changed(f"file {key!r} was overwritten")
        if n >= m.chunks:
            raise NotFound(f"file {key!r} has {m.chunks} chunks, no chunk {n}")
        try:
            data = self.store.read_chunk(key, n)
        except NotFoundError as e:
            raise NotFound(_one_line(str(e))) from None
        return {"t": "ok", "data": data}

    async def _h_status(self, f: Frame) -> Frame:
        return {"t": "ok", **self.status()}

    # -- operations: leadership transfer, backup, health (docs/operations.md) ---------------

    def transfer_target(self) -> str | None:
        """The most caught-up follower (highest match index; ties: lowest id), or None.
        Followers whose link is down count only when no connected one exists (a node that
        is already stopped would make a shutdown wait out the whole hand-over bound)."""
        st = self.replica.raw.status()
        links = self.transport.statistics()
        best: tuple[bool, int, str] | None = None
        for p in st.progress:
            if p.id == self.cfg.id or p.id not in st.voters:
                continue
            up = bool(links.get(p.id, {}).get("connected"))
            if best is None or (up, p.match) > best[:2]:
                best = (up, p.match, p.id)
        return None if best is None else best[2]

    async def transfer_leadership(self, to: str | None, timeout: float | None = None) -> str:
        """Hand leadership to `to` (None: the most caught-up follower); returns the new
        leader's id once this node has heard from it. Raises NotLeader / Unavailable, or
        Timeout after `timeout` (default: two election timeouts, after which the core has
        given the transfer up anyway)."""
        self._leader_check()
        if to is None:
            to = self.transfer_target()
            if to is None:
                raise BadRequest("no other voter to transfer leadership to")
        if to == self.cfg.id:
            return to
        if to not in self._conf.voters:
            raise BadRequest(f"{_one_line(to)[:100]!r} is not a voter of this cluster")
        limit = (
            timeout if timeout is not None else 2 * self.cfg.election_ticks * self.cfg.tick_seconds
        )
        w = Waiter()
        with trio.move_on_after(limit):
            await self._in_send.send(_Transfer(to, w))
            await w.event.wait()
            if w.error is not None:
                raise w.error
            # The old leader learns the outcome from the new leader's first append.
            while self.replica.leader != to:
                if self.replica.leader and self.replica.leader != self.cfg.id:
                    raise Unavailable(
                        f"transfer to {to} failed: {self.replica.leader} became leader"
                    )
                await trio.sleep(self.cfg.tick_seconds / 2)
            return to
        raise Timeout(f"leadership transfer to {to} did not complete within {limit:.2f} s")

    async def _h_transfer(self, f: Frame) -> Frame:
        to = f.get("to")
        if to is not None and not isinstance(to, str):
            raise BadRequest("to must be a node id (string) or nil")
        leader = await self.transfer_leadership(to)
        return {"t": "ok", "leader": leader, "leader_addr": self.cfg.peer_address(leader)}

    async def hand_over(self, timeout: float = 1.5) -> str | None:
        """On shutdown: if leader, pass leadership to the most caught-up follower so the
        cluster does not wait an election timeout. Bounded; returns the new leader or None."""
        if self.replica.role != Role.LEADER or len(self._conf.voters) < 2:
            return None
        try:
            new = await self.transfer_leadership(None, timeout=timeout)
        except RkvError as e:
            log.warning("%s: leadership hand-over failed: %s", self.cfg.id, e.msg)
            return None
        log.info("%s: handed leadership to %s", self.cfg.id, new)
        return new

    async def _h_backup_begin(self, f: Frame) -> Frame:
        # A read barrier first: every write acknowledged before this request is applied
        # here, so the copy holds it.
        await self._linearizable()
        token, manifest = await self.backups.begin()
        return {"t": "ok", "b": token, "manifest": manifest}

    async def _h_backup_read(self, f: Frame) -> Frame:
        data = await self.backups.read(_bytes(f, "b", 64), _int(f, "off"), _int(f, "len"))
        return {"t": "ok", "data": data}

    async def _h_backup_end(self, f: Frame) -> Frame:
        return {"t": "ok", "ended": self.backups.end(_bytes(f, "b", 64))}

    def readiness(self) -> tuple[bool, str]:
        """(ready, reason): ready when a leader is known, everything this node knows to be
        committed has been applied, and no stored record was found damaged (degraded)."""
        if not self.loop_running:
            return False, "raft loop not running"
        if self.integrity.degraded is not None:
            return False, f"degraded: {self.integrity.degraded}"
        r = self.replica
        if not r.leader:
            return False, "no leader known"
        st = r.raw.status()
        if r.applied < st.commit:
            return False, f"applying: applied {r.applied} < commit {st.commit}"
        return True, f"ok: leader {r.leader}, applied {r.applied}"

    def http_routes(self) -> dict[str, Callable[[], Response]]:
        # The raft loop turns at least once per tick; a loop that has not turned for
        # LIVENESS_STALL seconds is stuck (e.g. a hung disk) and the process should go.
        seen = [self.turns, trio.current_time()]

        def livez() -> Response:
            if not self.loop_running:
                return text(503, "raft loop not running")
            now = trio.current_time()
            if self.turns != seen[0]:
                seen[0], seen[1] = self.turns, now
            elif now - seen[1] > LIVENESS_STALL:
                return text(503, f"raft loop stalled for {now - seen[1]:.1f} s")
            return text(200, "ok")

        def readyz() -> Response:
            ok, reason = self.readiness()
            return text(200 if ok else 503, reason)

        def metrics() -> Response:
            return Response(200, self.metrics.render(), CONTENT_TYPE)

        return {"/livez": livez, "/readyz": readyz, "/metrics": metrics}

    async def _h_fault(self, f: Frame) -> Frame:
        """Partition hooks for the nemesis: drop Raft messages to / from the given peers.

        Each call replaces both sets (empty lists heal). Refused unless the node was started
        with fault injection enabled (RKV_FAULT_INJECTION=1).
        """
        if not self.cfg.fault_injection:
            raise BadRequest("fault injection is disabled on this node")
        self._drop_to = self._peer_set(f, "drop_to")
        self._drop_from = self._peer_set(f, "drop_from")
        log.warning(
            "%s: fault injection: dropping raft messages to [%s], from [%s]",
            self.cfg.id,
            ",".join(sorted(self._drop_to)),
            ",".join(sorted(self._drop_from)),
        )
        return {"t": "ok", "drop_to": sorted(self._drop_to), "drop_from": sorted(self._drop_from)}

    def _peer_set(self, f: Frame, name: str) -> frozenset[str]:
        v = f.get(name, [])
        if not isinstance(v, list) or not all(isinstance(p, str) for p in v):
            raise BadRequest(f"{name} must be a list of peer ids")
        unknown = [p for p in v if p not in self._conf.members() or p == self.cfg.id]
        if unknown:
            raise BadRequest(
                f"{name}: not peers of this node: {_one_line(','.join(unknown))[:200]}"
            )
        return frozenset(v)

    def status(self) -> dict[str, Any]:
        r = self.replica
        st = r.raw.status()
        return {
            # "node", not "id": the RPC layer puts the request id in "id".
            "node": self.cfg.id,
            "addr": self.cfg.advertise,
            "cluster": self.cfg.cluster_id,
            "role": r.role.name.lower(),
            "term": st.term,
            "leader": r.leader or None,
            "leader_addr": r.leader_address(),
            "commit": st.commit,
            "applied": r.applied,
            "last_index": st.last_index,
            "peers": [m for m in self._conf.members() if m != self.cfg.id],
            "voters": list(self._conf.voters),
            "learners": list(self._conf.learners),
            # new storage, not voting yet (rkv.raft.recovery)
            "recovering": st.recovering,
            "degraded": self.integrity.degraded,
        }

    # -- membership (docs/operations.md) ------------------------------------------------------

    def _address(self, node_id: str) -> tuple[str, int]:
        hp = self.cfg.peers.get(node_id)
        return hp if hp is not None else parse_address(node_id)

    def _addresses(self, ids: Sequence[str]) -> dict[str, tuple[str, int]]:
        out = {}
        for m in ids:
            if m == self.cfg.id:
                continue
            try:
                out[m] = self._address(m)
            except ValueError:
                log.warning(
                    "%s: member %r is not a host:port address; not reachable", self.cfg.id, m
                )
        return out

    def _may_connect(self, node: str) -> bool:
        """Peers of this cluster (its id, and the token if one is set, were checked) we talk
        Raft with: anyone but a node we saw removed. Not only our configuration's members:
        ours may be older than the cluster's (a lagging or joining node must hear from a leader
        it has never heard of to catch up). A non-voter's vote requests are ignored by the
        core, so a node outside the configuration cannot start elections."""
        return node not in self._removed

    def _link(self, to: str) -> None:
        """A message to a node we hold no link to (a leader a joining node answers, a member of
        a newer configuration than ours): reach it at its id."""
        self._links.add(to)
        try:
            self.transport.add_peer(to, self._address(to))
        except ValueError:
            log.warning("%s: cannot reach %r: not a host:port address", self.cfg.id, to)

    def _check_conf(self) -> None:
        conf = self.replica.raw.conf_state()
        if conf == self._conf:
            return
        old, self._conf = self._conf, conf
        log.info("%s: configuration %s (was %s)", self.cfg.id, conf.describe(), old.describe())
        members = set(conf.members())
        self._removed = (self._removed | set(old.members())) - members
        for gone in sorted(self._links - members):
            self._links.discard(gone)
            self.transport.remove_peer(gone)
        for m, addr in self._addresses(sorted(members - self._links)).items():
            self._links.add(m)
            self.transport.add_peer(m, addr)
        if not conf.is_empty() and self.cfg.id not in members:
            self._leave("applied its own removal")

    def _on_peer_refused(self, peer: str, code: str) -> None:
        if code == Removed.code:
            self._leave(f"{peer} says so")

    def _leave(self, why: str) -> None:
        """Removed from the cluster: stop (exit code REMOVED) after a short grace period."""
        if self.removed:
            return
        self.removed = True
        log.warning("%s: removed from the cluster (%s); stopping", self.cfg.id, why)
        if self._nursery is not None:
            self._nursery.start_soon(self._stop_removed)

    async def _h_repair(self, f: Frame) -> Frame:
        """Stop, and rebuild this node's stored state from the cluster (rkv.repair): the data
        dir is moved aside once the store is closed (run_node), and a new store of this member
        recovers from the leader when the node is started again."""
        if self.replica.role == Role.LEADER:
            raise BadRequest("this node leads: hand leadership over first (rkv leader transfer)")
        if not [v for v in self._conf.voters if v != self.cfg.id]:
            raise BadRequest("no other voter to rebuild this node from")
        aside = self._begin_repair("repair asked")
        return {"t": "ok", "node": self.cfg.id, "moved_to": str(aside)}

    def _begin_repair(self, why: str) -> Path:
        if self.repair is None:
            self.repair = (damaged_path(self.cfg.data_dir), self._conf)
            log.warning(
                "%s: %s: stopping; the data dir goes to %s", self.cfg.id, why, self.repair[0]
            )
            if self._nursery is not None:
                self._nursery.start_soon(self._stop_for_repair)
        return self.repair[0]

    def _damaged(self, reason: str) -> None:
        """This node's own stored data is damaged (rkv.integrity): with auto_repair, a
        follower with other voters to rebuild from repairs itself at once."""
        if not self.cfg.auto_repair or self.replica.role == Role.LEADER:
            return
        if [v for v in self._conf.voters if v != self.cfg.id]:
            self._begin_repair(f"auto repair ({reason})")

    async def _stop_for_repair(self) -> None:
        await trio.sleep(REPAIR_EXIT_DELAY)  # the answer leaves first
        raise _Fatal(ExitCode.REPAIR, f"{self.cfg.id} stopped for repair")

    async def _stop_removed(self) -> None:
        await trio.sleep(REMOVED_EXIT_DELAY)
        raise _Fatal(ExitCode.REMOVED, f"{self.cfg.id} was removed from the cluster")

    def _check_caught_up(self, node: str) -> None:
        st = self.replica.raw.status()
        pr = next((p for p in st.progress if p.id == node), None)
        if pr is None:
            return  # not a member, or not the leader: proposing says which
        if pr.state != "REPLICATE" or st.commit - pr.match > PROMOTE_MAX_LAG:
            raise Unavailable(
                f"learner {node} is catching up (has {pr.match} of {st.commit}); retry"
            )

    def members(self) -> dict[str, Any]:
        st = self.replica.raw.status()
        return {
            "cluster": self.cfg.cluster_id,
            "voters": list(self._conf.voters),
            "learners": list(self._conf.learners),
            "leader": self.replica.leader or None,
            "leader_addr": self.replica.leader_address(),
            "commit": st.commit,
            "progress": [
                {"node": p.id, "match": p.match, "state": p.state.lower()} for p in st.progress
            ],
        }

    async def _h_members(self, f: Frame) -> Frame:
        self._leader_check()  # the leader's view is the newest
        return {"t": "ok", **self.members()}

    async def _h_member(self, f: Frame) -> Frame:
        op = f.get("op")
        node = f.get("node")
        types = {
            "add": ConfChangeType.ADD_LEARNER,
            "promote": ConfChangeType.PROMOTE,
            "remove": ConfChangeType.REMOVE,
        }
        if op not in types:
            raise BadRequest("op must be one of add, promote, remove")
        if not isinstance(node, str) or not node:
            raise BadRequest("node must be a member id (host:port)")
        if op == "add":
            try:
                node = format_address(*parse_address(node))
            except ValueError as e:
                raise BadRequest(f"node: {_one_line(str(e))}") from None
        self._leader_check()
        w = Waiter()
        await self._submit(
            _Member(ConfChange(types[op], node), w), w, "membership change not applied"
        )
        return {"t": "ok", "node": node, **self.members()}

    _handlers: dict[str, Callable[[Node, Frame], Awaitable[Frame]]] = {
        "put": _h_put,
        "delete": _h_delete,
        "cas": _h_cas,
        "file_chunk": _h_file_chunk,
        "file_commit": _h_file_commit,
        "file_delete": _h_file_delete,
        "file_abort": _h_file_abort,
        "get": _h_get,
        "scan": _h_scan,
        "file_meta": _h_file_meta,
        "file_read": _h_file_read,
        "status": _h_status,
        "fault": _h_fault,
        "transfer": _h_transfer,
        "members": _h_members,
        "member": _h_member,
        "backup_begin": _h_backup_begin,
        "backup_read": _h_backup_read,
        "backup_end": _h_backup_end,
        "repair": _h_repair,
        # replica comparison (rkv.compare)
        "state_hashes": lambda n, f: n.comparer.state_hashes(f),
        "check": lambda n, f: n.comparer.check(f),
    }

    async def _call_peer(self, node: str, frame: Frame, timeout: float) -> Frame:
        """One request to member `node` on a connection of its own; its ok frame, or an
        RkvError (Unavailable when it cannot be reached)."""
        cfg = self.cfg
        try:
            host, port = self._address(node)
            async with RpcClient(
                host,
                port,
                connect_timeout=timeout,
                max_frame=cfg.max_frame,
                hello={"cluster": cfg.cluster_id, "node": cfg.id},
                max_inflight=1,
                ssl_context=self._client_ssl,
                token=cfg.cluster_token,
            ) as client:
                answer = await client.call(frame, timeout)
        except RemoteError as e:
            raise from_error_frame(e.frame) from None
        except (RpcError, OSError, ValueError) as e:
            raise Unavailable(f"{node}: {_one_line(str(e)) or type(e).__name__}") from None
        return answer

    def statistics(self) -> dict[str, Any]:
        r = self.replica
        return {
            "turns": self.turns,
            "readies": r.readies,
            "saves": r.saves,
            "applies": r.applies,
            "max_batch": self.max_batch_seen,
            "pending_proposals": r.pending_proposals,
            "pending_reads": r.pending_reads,
            "dropped_peer_frames": self.dropped_peer_frames,
            "fault_dropped_out": self.fault_dropped_out,
            "fault_dropped_in": self.fault_dropped_in,
            "integrity_errors": self.integrity.errors,
            "forward": self.forwarder.statistics(),
            "scrub": self.scrubber.statistics(),
            "compare": self.comparer.statistics(),
            "snapshots": self.snapshot_statistics(),
            "store": self.store.stats(),
        }

    def connection_statistics(self) -> dict[str, Any]:
        """The RPC port's connections (rkv.net.admission): held by state, accepted, shed and
        refused by the limit that was reached, closed by the deadline that passed."""
        s = self.server_stats
        a = s.admission
        return {
            "states": dict(a.states),
            "accepted": s.accepted,
            "shed": dict(a.shed),
            "refused": dict(a.refused),
            "closed": {
                "handshake_timeout": a.handshake_timeouts,
                "frame_timeout": s.frame_timeouts,
                "idle_timeout": s.idle_closed,
            },
        }

    # -- snapshots and log compaction (docs/snapshots.md) ------------------------------------

    def _init_snapshots(self) -> None:
        cfg = self.cfg
        self.compaction = CompactionPolicy(
            max_entries=cfg.snapshot_entries,
            max_bytes=cfg.snapshot_bytes,
            keep_entries=cfg.snapshot_keep_entries,
            keep_bytes=cfg.snapshot_keep_bytes,
        )
        self._snap_nursery: trio.Nursery | None = None
        self._snap_out: dict[str, int] = {}
        """Followers a snapshot is being streamed to -> the term it was started in."""
        self._snap_in_lock = trio.Lock()
        self._snap_in: tuple[str, bytes] | None = None
        """(sender, transfer id) of the snapshot being staged here."""
        self._installs_stepped: list[trio.Event] = []
        self._next_compaction_check = 0.0
        self._next_upload_sweep = 0.0
        self._uploads_seen: dict[bytes, tuple[int, float]] = {}
        """Uploads in progress, as this node last saw them leading: id -> (index of the last
        chunk staged, when that was first seen)."""
        self._compaction_floor = 0
        """Snapshot index at the last compaction check."""
        self.snap_stats = {
            "sent": 0,
            "send_failures": 0,
            "received": 0,
            "receive_failures": 0,
            "installed": 0,
            "compactions": 0,
            "chunks_sent": 0,
            "chunks_received": 0,
        }

    def snapshot_statistics(self) -> dict[str, Any]:
        return {
            **self.snap_stats,
            "installed": self.replica.snapshots_installed,
            "sending_to": sorted(self._snap_out),
        }

    async def _snapshot_senders(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as nursery:
            self._snap_nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def _divert_snapshots(self, messages: Sequence[Message]) -> Sequence[Message]:
        """Take SNAPSHOT messages out of the Raft traffic: the state is streamed instead."""
        if not any(m.type == MessageType.SNAPSHOT for m in messages):
            return messages
        rest: list[Message] = []
        for m in messages:
            if m.type != MessageType.SNAPSHOT:
                rest.append(m)
            elif m.to in self._drop_to:
                self.fault_dropped_out += 1
            elif m.to not in self._snap_out and self._snap_nursery is not None:
                # The core re-sends SNAPSHOT while the follower stays behind; one stream at a
                # time per follower, the repeats are dropped.
                self._snap_out[m.to] = m.term
                self._snap_nursery.start_soon(self._stream_snapshot, m.to, m.term)
        return rest

    async def _stream_snapshot(self, to: str, term: int) -> None:
        """Stream our applied state to follower `to` in bounded chunks (request/response, so
        at most one chunk is in flight), then let it install. Any failure ends the attempt;
        the core asks again (its snapshot progress times out) and a new stream starts over."""
        cfg = self.cfg
        host, port = self._address(to)
        xfer = os.urandom(8)
        timeout = max(10.0, cfg.request_timeout)
        try:
            hello = {"cluster": cfg.cluster_id, "node": cfg.id}
            async with RpcClient(
                host,
                port,
                max_frame=cfg.max_frame,
                hello=hello,
                max_inflight=1,
                ssl_context=self._client_ssl,
                token=cfg.cluster_token,
            ) as client:
                source = await trio.to_thread.run_sync(
                    self.store.open_snapshot, cfg.snapshot_chunk_bytes
                )
                try:
                    meta = snapshot_meta_to_list(source.meta)
                    base = {"t": "snap", "x": xfer, "term": term, "meta": meta}
                    chunks = source.chunks()
                    seq = 0
                    while True:
                        # one LMDB read transaction for the whole stream (MDB_NOTLS lets it
                        # move between worker threads; it is never used by two at once)
                        chunk = await trio.to_thread.run_sync(next, chunks, None)
                        if chunk is None:
                            break
                        await client.call({**base, "seq": seq, "data": chunk}, timeout)
                        seq += 1
                        self.snap_stats["chunks_sent"] += 1
                    done = {"done": True, "chunks": seq, "records": source.records}
                    # the follower answers once it installed (a big state takes a while)
                    await client.call({**base, "seq": seq, **done}, max(timeout, 120.0))
                finally:
                    source.close()
            self.snap_stats["sent"] += 1
            log.info(
                "%s: snapshot at %d sent to %s (%d chunks, %d records)",
                cfg.id,
                source.meta.index,
                to,
                seq,
                source.records,
            )
        except (RpcError, StoreError, OSError) as e:
            self.snap_stats["send_failures"] += 1
            if isinstance(e, StoreIntegrityError):  # the stream stopped before the record
                self.integrity.failed(e, f"a snapshot stream to {to}")
            log.warning("%s: snapshot to %s failed: %s", cfg.id, to, _one_line(str(e)))
        finally:
            self._snap_out.pop(to, None)

    async def _on_snap(self, frame: Frame, info: ConnInfo) -> Frame:
        """One chunk of a snapshot stream from the leader (see _stream_snapshot)."""
        hello = info.hello
        sender = hello.get("node") if hello is not None else None
        if sender is None or not self._may_connect(sender):
            return error_frame(None, BadRequest("snapshot chunks need a hello from a peer"))
        if sender in self._drop_from:
            self.fault_dropped_in += 1
            return error_frame(None, Unavailable("fault injection: dropping this peer"))
        try:
            xfer = _bytes(frame, "x", 64)
            seq = _int(frame, "seq")
            term = _int(frame, "term")
            meta = snapshot_meta_from_list(frame.get("meta"))
            done = frame.get("done", False) is True
            async with self._snap_in_lock:
                if seq == 0:
                    await trio.to_thread.run_sync(self.store.begin_snapshot_install, meta)
                    self._snap_in = (sender, xfer)
                elif self._snap_in != (sender, xfer):
                    raise Unavailable("another snapshot transfer replaced this one; restart")
                if done:
                    self._snap_in = None
                    staged = await trio.to_thread.run_sync(
                        self.store.finish_snapshot_staging,
                        _int(frame, "chunks"),
                        _int(frame, "records"),
                    )
                    await self._install_staged(sender, term, staged)
                    self.snap_stats["received"] += 1
                else:
                    data = _bytes(frame, "data", self.cfg.max_frame)
                    await trio.to_thread.run_sync(self.store.stage_snapshot_chunk, seq, data)
                    self.snap_stats["chunks_received"] += 1
        except RkvError as e:
            self.snap_stats["receive_failures"] += 1
            return error_frame(None, e)
        except (CodecError, StoreError) as e:
            # the live state is untouched; the leader starts over
            self.snap_stats["receive_failures"] += 1
            self._snap_in = None
            return error_frame(None, Unavailable(_one_line(f"snapshot refused: {e}")))
        return {"t": "ok"}

    async def _install_staged(self, leader: str, term: int, meta: Any) -> None:
        """Step a SNAPSHOT message for the staged state and wait until the raft loop handled
        it: if the core accepts it, the Ready it makes installs the staged state. The staging
        lock stays held meanwhile, so no new transfer can disturb the staged state."""
        msg = Message(
            MessageType.SNAPSHOT,
            to=self.cfg.id,
            frm=leader,
            term=term,
            index=meta.index,
            log_term=meta.term,
            snapshot=Snapshot(meta=meta),
        )
        done = trio.Event()
        await self._in_send.send(_InstallSnapshot(msg, done))
        await done.wait()

    async def _after_turn(self) -> None:
        """Raft loop, between Readies: release installs stepped this turn, compact the log."""
        if self._installs_stepped:
            for ev in self._installs_stepped:
                ev.set()
            self._installs_stepped.clear()
        now = trio.current_time()
        self._sweep_uploads(now)
        # Checked every 0.1 s, and at once when the entry bound is crossed (a fast writer
        # can add many entries in 0.1 s).
        if now < self._next_compaction_check and (
            self.replica.applied - self._compaction_floor <= self.compaction.max_entries
        ):
            return
        self._next_compaction_check = now + 0.1
        self._compaction_floor = self.store.first_index() - 1
        index = self.replica.compaction_index(self.compaction)
        if index is None:
            return
        conf = self.replica.raw.conf_at(index)  # the marker's configuration is the one at index
        try:
            await trio.to_thread.run_sync(self.store.compact, index, conf)
        except StoreError as e:
            log.warning("%s: log compaction to %d failed: %s", self.cfg.id, index, e)
            return
        self._compaction_floor = index
        self.snap_stats["compactions"] += 1

    def _sweep_uploads(self, now: float) -> None:
        """Leader, every min(upload_ttl_seconds / 4, 60 s): propose a FileAbort for each
        upload whose last staged chunk has not changed for upload_ttl_seconds. The abort
        names that chunk's index, so an upload that moves on meanwhile is kept (replicas
        decide from the log alone; only the leader looks at a clock)."""
        ttl = self.cfg.upload_ttl_seconds
        if not ttl or now < self._next_upload_sweep or self.replica.role != Role.LEADER:
            return
        self._next_upload_sweep = now + min(ttl / 4, 60.0)
        seen: dict[bytes, tuple[int, float]] = {}
        try:
            uploads = self.store.uploads_in_progress()
        except StoreIntegrityError as e:
            self.integrity.failed(e, "the upload sweep")
            return
        for upload_id, last in uploads:
            prev = self._uploads_seen.get(upload_id)
            since = prev[1] if prev is not None and prev[0] == last else now
            seen[upload_id] = (last, since)
            if now - since < ttl:
                continue
            w = Waiter(deadline=now + self.cfg.request_timeout)
            data = encode_request(Request(b"", 0, FileAbort(upload_id, last)))
            try:
                # to our own inbox, taken next turn; if it is full, the next sweep retries
                self._in_send.send_nowait(_Propose(data, w))
            except trio.WouldBlock:
                break
            log.info("%s: aborting upload %r, idle for %.0f s", self.cfg.id, upload_id, now - since)
        self._uploads_seen = seen


def _data_bytes(entries: Sequence[Entry]) -> int:
    return sum(len(e.data) for e in entries)


def _refusal(result: Any) -> BadRequest | None:
    """The error for a write the state machine refused (its apply result is not ok)."""
    if result is None or getattr(result, "ok", True):
        return None
    return BadRequest(_one_line(str(getattr(result, "error", "") or "refused")))


_REQUEST_ERRORS = (RkvError, CodecError, KeyError, TypeError, ValueError, StoreFullError)
"""What a request's own handling may raise for a bad or refused request (`_as_error` says
what it means for the caller); anything else is a bug, answered as an internal error."""


def _as_error(e: Exception) -> RkvError:
    """What a request handler's exception means for the caller."""
    if isinstance(e, RkvError):
        return e
    if isinstance(e, StoreFullError):
        return StoreFull(_one_line(str(e)))
    return BadRequest(_one_line(f"{type(e).__name__}: {e}"))


def _one_line(s: str) -> str:
    return " ".join(s.split())[:500]


def _bytes(f: Frame, name: str, max_len: int | None = None) -> bytes:
    v = f.get(name)
    if not isinstance(v, bytes):
        raise BadRequest(f"{name} must be bytes")
    if max_len is not None and len(v) > max_len:
        raise BadRequest(f"{name} is longer than {max_len} bytes")
    return v


def _int(f: Frame, name: str) -> int:
    v = f.get(name)
    if type(v) is not int or v < 0:
        raise BadRequest(f"{name} must be a non-negative integer")
    return v


class _Fatal(Exception):
    """Stops the node with an exit code and a one-line message."""

    def __init__(self, code: ExitCode, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


class NodeStartError(Exception):
    """The node could not start or had to stop: `code` is the process exit code."""

    def __init__(self, code: ExitCode, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


def _ssl_contexts(cfg: NodeConfig) -> tuple[ssl.SSLContext | None, ssl.SSLContext | None]:
    """(server, peer-client) contexts from the config's TLS files; (None, None) without TLS."""
    if cfg.tls_cert is None or cfg.tls_key is None:
        return None, None
    try:
        server = tls.server_context(cfg.tls_cert, cfg.tls_key, cfg.tls_ca)
        client = tls.client_context(cfg.tls_ca, cfg.tls_cert, cfg.tls_key)
    except (OSError, ssl.SSLError) as e:
        raise NodeStartError(ExitCode.USAGE, f"TLS files: {_one_line(str(e))}") from None
    return server, client


def _open(cfg: NodeConfig) -> Any:
    try:
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise NodeStartError(
            ExitCode.STORE_ERROR, f"cannot create data dir {cfg.data_dir}: {e.strerror or e}"
        ) from None
    try:
        return open_store(
            str(cfg.data_dir),
            cluster_id=cfg.cluster_id,
            node_id=cfg.id,
            voters=cfg.voters,
            map_size=cfg.map_size,
        )
    except StoreIdentityError as e:
        raise NodeStartError(
            ExitCode.IDENTITY_MISMATCH, f"data dir {cfg.data_dir}: {_one_line(str(e))}"
        ) from None
    except StoreFullError as e:
        raise NodeStartError(ExitCode.STORE_FULL, f"data dir {cfg.data_dir}: {e}") from None
    except StoreError as e:
        raise NodeStartError(
            ExitCode.STORE_ERROR, f"data dir {cfg.data_dir}: {_one_line(str(e))}"
        ) from None


def _leaf(exc: BaseException, types: tuple[type[BaseException], ...]) -> BaseException | None:
    """The first exception of `types` inside (possibly nested) exception groups."""
    if isinstance(exc, types):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for sub in exc.exceptions:
            found = _leaf(sub, types)
            if found is not None:
                return found
    return None


async def run_node(
    cfg: NodeConfig, *, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run one node until cancelled; `task_status.started(node)` once it is serving.

    Raises NodeStartError (with an exit code and a one-line message) for a port in use, a data
    dir of another cluster or node, a full or unusable store.
    """
    store = _open(cfg)
    repair: tuple[Path, ConfState] | None = None
    try:
        try:
            # reads the log back (the configuration changes up to the applied index)
            node = Node(cfg, store)
        except StoreFullError as e:
            raise NodeStartError(ExitCode.STORE_FULL, _one_line(f"store full: {e}")) from None
        except StoreError as e:
            raise NodeStartError(
                ExitCode.STORE_ERROR, _one_line(f"store failed, stopping: {e}")
            ) from None
        try:
            await node.run(task_status=task_status)
        except BaseException as exc:
            fatal = _leaf(exc, (_Fatal,))
            if isinstance(fatal, _Fatal) and fatal.code == ExitCode.REPAIR:
                repair = node.repair  # done below, once the store is closed
            elif isinstance(fatal, _Fatal):
                raise NodeStartError(fatal.code, fatal.msg) from None
            if repair is None:
                os_err = _leaf(exc, (OSError,))
                if isinstance(os_err, OSError) and not node.listening:
                    code = (
                        ExitCode.PORT_IN_USE
                        if os_err.errno in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL)
                        # a host that does not resolve cannot be bound either (not a bug)
                        or isinstance(os_err, socket.gaierror)
                        or os_err.errno == socket.EAI_NONAME
                        else ExitCode.ERROR
                    )
                    raise NodeStartError(code, _one_line(str(os_err))) from None
                raise
    finally:
        with trio.CancelScope(shield=True):
            # A transaction still running in a worker thread has finished by now: to_thread
            # calls are not abandoned on cancellation.
            store.close()
    if repair is not None:
        aside, conf = repair
        try:
            rebuild(cfg.data_dir, aside, cluster_id=cfg.cluster_id, node_id=cfg.id, conf=conf)
        except (OSError, StoreError) as e:
            raise NodeStartError(ExitCode.STORE_ERROR, f"repair: {_one_line(str(e))}") from None
        raise NodeStartError(
            ExitCode.REPAIR,
            f"stopped for repair: the damaged data dir is now {aside}; start the node again "
            "with the same flags: it rebuilds its state from the cluster",
        )


HAND_OVER_SECONDS = 1.5
"""How long a stopping leader waits for a follower to take over (rolling restarts)."""


async def _cancel_on_signal(signals: Any, scope: trio.CancelScope) -> None:
    await signals.__anext__()
    scope.cancel()


async def _main(cfg: NodeConfig, after_start: Callable[[], Awaitable[None]] | None = None) -> int:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            stopped: list[int] = []
            running: list[Node] = []

            async def watch() -> None:
                async for sig in signals:
                    log.info("%s: %s received, shutting down", cfg.id, signal.Signals(sig).name)
                    stopped.append(sig)
                    if sig == signal.SIGTERM and running:
                        # Rolling restarts: hand leadership over first (bounded); a second
                        # signal stops at once.
                        with trio.move_on_after(HAND_OVER_SECONDS + 0.5):
                            async with trio.open_nursery() as inner:
                                inner.start_soon(_cancel_on_signal, signals, inner.cancel_scope)
                                await running[0].hand_over(HAND_OVER_SECONDS)
                                inner.cancel_scope.cancel()
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(watch)
            running.append(await nursery.start(run_node, cfg))
            if after_start is not None:
                nursery.start_soon(after_start)
    return ExitCode.OK


def serve_main(cfg: NodeConfig, after_start: Callable[[], Awaitable[None]] | None = None) -> int:
    """Run a node in this process until SIGINT/SIGTERM; returns the process exit code.

    `after_start` runs beside the node once it serves (`rkv serve --join` promotes the new
    node with it); it must handle its own errors.

    Errors that stop the node are printed as one line on stderr (see ExitCode).
    RKV_FAULT_INJECTION=1 in the environment enables the partition hooks (`{"t": "fault"}`
    requests); it is read here, once, and never on by default.
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
    if os.environ.get(FAULT_INJECTION_ENV) == "1":
        cfg = replace(cfg, fault_injection=True)
        log.warning("%s: fault injection enabled (%s=1): testing only", cfg.id, FAULT_INJECTION_ENV)
    try:
        return int(trio.run(_main, cfg, after_start))
    except BaseException as exc:
        err = _leaf(exc, (NodeStartError,))
        if isinstance(err, NodeStartError):
            print(f"rkv serve: error: {err.msg}", file=sys.stderr)
            return int(err.code)
        if _leaf(exc, (KeyboardInterrupt,)) is not None:
            return int(ExitCode.OK)
        log.exception("rkv serve: unexpected error")
        print(f"rkv serve: error: {_one_line(f'{type(exc).__name__}: {exc}')}", file=sys.stderr)
        return int(ExitCode.ERROR)


__all__ = ["FAULT_INJECTION_ENV", "Node", "NodeStartError", "run_node", "serve_main"]
