"""The per-node glue of the simulated cluster (rkv.sim.cluster): each node's Ready loop.

Owns: starting and crashing a node, delivering a message (staging a snapshot's state
first), sending a Ready's messages through the network, the Ready loop of rkv.node in
virtual time (take a Ready, write with the disk's latency, finish, answer), the lease
driver's step between Readies, the apply backlog, snapshot installs and compaction.
Must not: choose faults (faults.py) or model clients (clients.py). Its draws from the
run's random generator are in the order they always were: every draw is part of what a
seed means.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Sequence
from typing import Any

from rkv.codec import Request, encode_request
from rkv.errors import RkvError
from rkv.raft.config import Config
from rkv.raft.types import (
    LEADER,
    MT,
    Message,
    Ready,
    Snapshot,
)
from rkv.replica import Replica
from rkv.sim.clients import Client
from rkv.sim.events import (
    BACKLOG,
    DELIVER,
    PERSISTED,
    RESTART,
    TICK,
)
from rkv.sim.invariants import InvariantViolation
from rkv.sim.node import SimNode, SnapshotStream, Wait

_SNAPSHOT = MT.SNAPSHOT


class ReadyLoopMixin:
    """Methods of rkv.sim.cluster.Cluster (which holds the state they use)."""

    # -- nodes -------------------------------------------------------------------------------

    def _start(self, node: SimNode) -> None:
        p = self.p
        applied = node.store.applied_index() if node.epoch else 0
        cfg = Config(
            id=node.id,
            voters=node.bootstrap,
            election_tick=p.election_tick,
            heartbeat_tick=p.heartbeat_tick,
            max_size_per_msg=self.max_size_per_msg,
            applied=applied,
        )
        rng = random.Random(self.rng.getrandbits(64))
        node.start(
            cfg,
            rng,
            defer_apply=self.defer_apply,
            factory=self.make_raw,
            # without lease ops no lease can exist: its driver would only cost time
            leases=p.leases.driver() if p.lease_fraction else None,
        )
        if node.epoch:
            self.stats.restarts += 1
        self.checker.restart(node.id, node.applied_index)
        if node.epoch:
            self.watch.restart(node.id, node.applied_index)
        self.note(f"{node.id} START", f"applied={node.applied_index}")
        # nodes tick at the same rate but out of phase
        self.at(self.now + self.rng.randint(1, p.tick_interval), TICK, node, node.epoch)
        self._process(node)

    def _crash(self, node: SimNode) -> None:
        lost = node.in_flight
        self.watch.feed(node.id, node.store.take_changes())  # all it recorded, before it goes
        waiting = node.crash()
        self.stats.crashes += 1
        self.note(f"{node.id} CRASH", "lost an in-flight write" if lost is not None else None)
        # Clients waiting on this node see the connection drop and retry elsewhere.
        for w in waiting:
            if isinstance(w.client, Client):
                self._attempt_failed(w.client, w.token)
        self.at(
            self.now + self.rng.randint(*self.p.restart_after) * self.p.tick_interval,
            RESTART,
            node,
            node.epoch,
        )

    def _deliver(self, msg: Message, stream: SnapshotStream | None) -> None:
        node = self.nodes.get(msg.to)
        if node is None or not node.up or not self.net.connected(msg.frm, msg.to):
            return
        if stream is not None:
            # the leader's state arrived in full: stage it, then step the SNAPSHOT for it
            staged = node.stage(stream, msg)
            if staged is None:
                self.note(f"{node.id} SNAPSHOT-BUSY", stream.describe())
                return
            self.note(f"{node.id} STAGED", stream.describe())
            msg = staged
        node.rep.step(msg)
        self._process(node)

    def _send(self, node: SimNode, msgs: Sequence[Message]) -> None:
        check = self.checker.on_send if self.p.check_durable_sends else None
        delays = self.net.delays
        trace = self.trace
        now = self.now
        heap = self._heap
        nid = node.id
        for m in msgs:
            if check is not None:
                check(nid, m)
            stream = None
            if m.type == _SNAPSHOT:
                # Like the node runtime: with the message goes the store's applied state
                # (taken now); the follower stages it, then steps a SNAPSHOT for that state.
                stream = node.open_stream()
            trace.append((now, "send", m))  # self.note("send", m), inlined (per message)
            for d in delays(m.frm, m.to):
                self._seq += 1  # self.at(now + d, DELIVER, m, stream), inlined
                heapq.heappush(heap, (now + d, self._seq, DELIVER, m, stream))

    def _process(self, node: SimNode) -> None:
        """The Ready loop of rkv.node, in virtual time: take a Ready, send its messages,
        answer committed puts, write (taking the disk's latency; nothing new is taken
        meanwhile), then send what depended on the write and deliver the outcome."""
        if not node.up:
            return
        rep = node.rep  # the same Replica throughout: nothing here crashes the node
        while self._ready_loop(node, rep) and self._lease_step(node, rep):
            pass
        # settled: no Ready to take (or a write in flight); only an input can change that
        node.inert = -1

    def _lease_step(self, node: SimNode, rep: Any) -> bool:
        """Between Readies, as the runtime after each turn: the lease driver syncs and, on the
        leader, says what to propose (seq 0 requests nobody waits on). Whether it proposed."""
        drv = node.leases
        if drv is None:
            return False
        leads = rep.raw.raft.role == LEADER
        proposed = False
        for cmd in drv.step(node.store, self.now, leads, rep.raw.term):
            try:
                index = rep.propose(encode_request(Request(b"", 0, cmd)), Wait(None, -1))
            except RkvError:
                break  # proposed again after the Lessor's retry interval
            self.note(f"{node.id} LEASE {index}@{rep.raw.term}", type(cmd).__name__)
            proposed = True
        return proposed

    def _ready_loop(self, node: SimNode, rep: Any) -> bool:
        """Take and handle Readies until a write is in flight or none is left; whether the
        node is between Readies (no write in flight)."""
        trace = self.trace
        on_ready = self.checker.on_ready
        while node.in_flight is None and rep.has_ready():
            rd = rep.take_ready()
            trace.append((self.now, node.id, rd))  # self.note(node.id, rd), inlined
            on_ready(node.id, rd)
            if rd.messages:
                self._send(node, rd.messages)
            early = rep.answer_committed(rd)
            if early.completed:
                self._outcome(node, early)
            sync = rd.must_sync
            if sync:
                lat = node.disk.latency()
                if lat > 0:
                    node.in_flight = rd
                    self.at(self.now + lat, PERSISTED, node, node.epoch)
                    return False
            self._finish(node, rep, rd, sync)
        return node.in_flight is None

    def _finish(self, node: SimNode, rep: Replica[Wait], rd: Ready, sync: bool) -> None:
        """The rest of `rd` once its write completed (`sync`: rd.must_sync)."""
        results = rep.persist_and_apply(rd)
        if sync:
            if rd.snapshot is not None:
                self._installed(node, rd.snapshot)
            hs, _conf = node.store.initial_state()  # what the store holds durably now
            self.checker.on_persisted(node.id, hs, rd.entries)
        if node.applied:
            self._check_applied(node)
        if rd.persisted_messages:
            self._send(node, rd.persisted_messages)
        out = rep.finish(rd, results)
        if out.completed or out.failed or out.reads:
            self._outcome(node, out)
        p = self.p
        if p.membership:
            self._check_conf(node)
        if p.compact_every and rep.applied - node.store.first_index() >= p.compact_every:
            # (else not due: Replica.compaction_index would find no more than compact_every
            # entries past the snapshot, and the sim's policy has no byte limit)
            self._maybe_compact(node)
        if rep.backlog and not node.backlog_event:
            # The runtime writes the backlog once writes pause or it grew old; here a few
            # ticks later (any later Ready may take it first).
            node.backlog_event = True
            delay = self.rng.randint(1, 8) * self.p.tick_interval
            self.at(self.now + delay, BACKLOG, node, node.epoch)

    def _apply_backlog(self, node: SimNode) -> None:
        if node.in_flight is not None:
            # between Readies only, as in the runtime's loop: the Ready's write goes first
            # (and takes the backlog with it if its entries may not wait)
            node.backlog_event = True
            self.at(self.now + self.p.tick_interval, BACKLOG, node, node.epoch)
            return
        out = node.rep.apply_backlog()
        self._check_applied(node)
        self._outcome(node, out)
        self._process(node)

    def _installed(self, node: SimNode, snap: Snapshot) -> None:
        idx = snap.meta.index
        if node.applied_index != idx:
            raise InvariantViolation(
                "snapshot-mismatch",
                f"{node.id}: snapshot at {idx} holds state at {node.applied_index}",
            )
        # the writes that took effect up to the snapshot's index, from the applied history
        # (not from the snapshot itself, which may be the thing that is wrong)
        node.effective = {k for k, i in self.effective_at.items() if i <= idx}
        self.checker.on_snapshot_installed(node.id, idx)
        self.watch.feed(node.id, node.store.take_changes())  # its "reset"
        self.stats.snapshots_installed += 1
        self.note(f"{node.id} INSTALL", f"snapshot at {idx}")

    def _maybe_compact(self, node: SimNode) -> None:
        rep = node.rep
        index = rep.compaction_index(self.compaction)
        if index is None:
            return
        # durable at once, like the real store's compaction transaction
        node.store.compact(index, rep.raw.conf_at(index))
        self.stats.compactions += 1
        self.note(f"{node.id} COMPACT", f"log from {node.store.first_index()}")
