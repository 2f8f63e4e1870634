"""The discrete-event simulated cluster: real nodes (rkv.sim.node) over a simulated network.

Owns: the event loop (a heap of (virtual time, sequence, event) with integer time), driving
each node's Replica in the runtime's order, crash/restart, the fault schedule, the clients,
and the end-of-run liveness and client-history checks. Everything random comes from one
random.Random(seed), consumed in a fixed order, so a run is a pure function of its seed and
parameters. Must not: read a clock, use threads or trio, or touch real files; it reports
failures as InvariantViolation and leaves printing to rkv.sim.runner.

Node loop (per node, whenever something happened to it; `_process`): while it is up, has no
durable write in flight and has a Ready: take it; send `messages`; answer committed puts; if
it must be persisted, the write takes virtual time from the disk model (messages and ticks are
still stepped meanwhile, but no new Ready is taken); when the write completes:
`persist_and_apply`, send `persisted_messages`, `finish()`, answer the clients from the
Outcome. The apply backlog is written between Readies by its own event.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from rkv.codec import Request, encode_request
from rkv.errors import NotLeader, RkvError
from rkv.raft import confchange
from rkv.raft.confchange import ConfChange, ConfChangeType
from rkv.raft.config import Config
from rkv.raft.errors import ProposalDropped
from rkv.raft.types import (
    CONF_CHANGE,
    LEADER,
    MT,
    ConfState,
    Entry,
    Message,
    NodeId,
    Ready,
    Snapshot,
)
from rkv.replica import CompactionPolicy, Outcome, Replica
from rkv.sim import linearizability as lin
from rkv.sim.disk import Disk, DiskParams
from rkv.sim.history import History, Operation, check_history
from rkv.sim.invariants import InvariantViolation, SafetyChecker
from rkv.sim.leases import ClientLeases, LeaseChecker, LeaseParams
from rkv.sim.network import QUIET, Network, NetworkParams
from rkv.sim.node import RawNodeFactory, SimNode, SnapshotStream, Wait, decode_client, request_of
from rkv.sim.statemachine import LEASE_KINDS, ClientCommand, StoreStateMachine, txn_succeeded


@dataclass(frozen=True, slots=True)
class SimParams:
    """Everything a run depends on besides the seed. Durations are in ticks unless noted."""

    nodes: int = 3
    ticks: int = 1500
    """Length of the faulty phase; the quiet phase follows (at most quiet_ticks)."""
    quiet_ticks: int = 300
    """Bound for the quiet phase: a leader and full convergence must happen within it."""
    tick_interval: int = 10
    """Virtual time units per tick (network and disk delays are in units)."""
    election_tick: int = 10
    heartbeat_tick: int = 2
    clients: int = 3
    keys: int = 3
    read_fraction: float = 0.35
    cas_fraction: float = 0.25
    delete_fraction: float = 0.1
    """Of the writes (when the state machine encodes them; the rest are puts)."""
    txn_fraction: float = 0.0
    """Of the writes: two-key transactions (if the key holds what the client last saw of it,
    or is absent, write one new value to it and to another key, atomically), checked by the
    history model and the multi-key linearizability search. 0 by default, so the workload of
    a seed (and every recorded regression seed) stays as it was; `rkv sim --txn-fraction`."""
    lease_fraction: float = 0.0
    """Of the client operations: lease operations (rkv.sim.leases: grant, keep-alive,
    revoke, put attached to a lease), checked by its promise, attachment and liveness
    checks. 0 by default, so a seed's workload stays as it was; `rkv sim --lease-fraction`.
    The nodes drive their Lessors (rkv.lease.LeaseDriver) either way."""
    leases: LeaseParams = field(default_factory=LeaseParams)
    client_timeout: int = 30
    client_max_attempts: int = 25
    fault_gap: tuple[int, int] = (3, 25)
    """Ticks between two fault actions."""
    restart_after: tuple[int, int] = (3, 50)
    crash_in_write: float = 0.003
    """Probability that a node crashes while a durable write is in flight (the write is lost):
    the moment where persist-before-send mistakes show."""
    max_size_per_msg: int | None = None
    """Config.max_size_per_msg of the nodes; None draws it per seed from (1, 100, 1 MiB), so
    some runs replicate one entry per APPEND and probe/pipelining paths get exercised."""
    compact_every: int = 0
    """Compact a node's log once its state machine is this many entries past the last
    snapshot (0: never): a snapshot of the state machine at the applied index, and the log
    cut `compact_keep` entries behind it. Followers behind the cut get the snapshot (SNAPSHOT
    message, install on persist), under the same safety checks."""
    compact_keep: int = 2
    membership: bool = False
    """Random membership changes among the faults: new nodes (fresh ids) join as learners,
    learners are promoted, voters (the leader too) and learners are removed. Removed nodes
    keep running until the quiet phase, so a removed node that never heard of its removal
    tries to disrupt the cluster. Checked: configurations agree at every applied index,
    successive ones differ by at most one voter, no log holds two changes past its commit
    index, and every leader is a voter of its configuration."""
    max_members: int = 7
    disk_replace: bool = False
    """Replaced disks among the faults: a node of the bootstrap configuration stops and comes
    back with new, empty storage under its old id (as `rkv serve --peers` on a new data dir),
    and must recover (rkv.raft.recovery) before it votes again. One at a time, and only while
    the configuration is still the bootstrap one (a restarted node knows no other)."""
    linearizability_steps: int = 200_000
    """Step budget per key of the linearizability check of the client history (0: skip)."""
    history_check: bool = True
    """Check the client history against the sequential model of the committed log. Tests of
    the linearizability check's teeth turn it off, to see that check catch a bug alone."""
    check_durable_sends: bool = True
    """Check at send time that votes and append acks are durable. Tests of the checker's
    teeth turn it off to see the consequences of such a bug surface as other violations."""
    chaos_network: NetworkParams = field(
        default_factory=lambda: NetworkParams(drop=0.05, duplicate=0.03, long_delay=0.03)
    )
    disk: DiskParams = field(default_factory=DiskParams)
    trace_len: int = 60
    full_trace: bool = False
    """Keep every trace line (for determinism tests and --verbose), not only the last few."""


_SNAPSHOT = MT.SNAPSHOT

# Event kinds (ints keep heap entries small and comparisons cheap).
(
    TICK,
    DELIVER,
    PERSISTED,
    CLIENT,
    RETRY,
    TIMEOUT,
    FAULT,
    RESTART,
    QUIET_START,
    QUIET_CHECK,
    BACKLOG,
) = range(11)


class Client:
    __slots__ = ("attempts", "id", "known", "leader", "op", "seq", "token", "waiting")

    def __init__(self, cid: int) -> None:
        self.id = cid
        self.seq = 0
        self.op: Operation | None = None
        self.leader: NodeId = ""
        self.token = 0  # identifies the current attempt; stale callbacks carry an older one
        self.attempts = 0
        self.known: dict[str, str | None] = {}  # key -> the value this client last saw
        self.waiting: tuple[SimNode, int, Wait] | None = None
        """(node, its life, token) of the attempt under way there."""


@dataclass(slots=True)
class Stats:
    leader_changes: int = 0
    crashes: int = 0
    restarts: int = 0
    partitions: int = 0
    committed_entries: int = 0
    ticks_to_elect: int = 0
    ticks_to_converge: int = 0
    ops_completed: int = 0
    ops_invoked: int = 0
    messages: int = 0
    events: int = 0
    virtual_time: int = 0
    compactions: int = 0
    snapshots_installed: int = 0
    members_joined: int = 0
    """Nodes whose addition committed (membership runs)."""
    members_removed: int = 0
    disks_replaced: int = 0
    leases_expired: int = 0
    leases_revoked: int = 0
    lease_liveness_checked: int = 0
    """Runs whose end waited for every lease to go (a stable leader, --lease-fraction)."""


class Cluster:
    def __init__(
        self,
        seed: int,
        params: SimParams,
        raw_node_factory: RawNodeFactory | None = None,
    ) -> None:
        self.seed = seed
        self.p = params
        self.rng = random.Random(seed)
        self.make_raw = raw_node_factory
        self.now = 0
        self._seq = 0
        self._heap: list[tuple[int, int, int, Any, Any]] = []
        self.ids: tuple[NodeId, ...] = tuple(f"n{i + 1}" for i in range(params.nodes))
        self.net = Network(self.rng, QUIET)
        self.checker = SafetyChecker(self.ids)
        self.nodes: dict[NodeId, SimNode] = {
            i: SimNode(i, Disk(self.rng, params.disk), self.ids) for i in self.ids
        }
        self.all_ids: list[NodeId] = list(self.ids)
        """Every node ever created: the initial ones, then those that joined."""
        self.conf_history: list[tuple[int, ConfState]] = [(0, ConfState(tuple(sorted(self.ids))))]
        """(index, configuration) of the applied CONF_CHANGE entries, from index 0."""
        self.clients = [Client(c) for c in range(params.clients)]
        self.client_leases = [ClientLeases(c) for c in range(params.clients)]
        self.lease_check = LeaseChecker(params.leases, params.election_tick * params.tick_interval)
        self.encoder = StoreStateMachine()  # entry bytes of client commands (rkv.codec)
        self.write_kinds = StoreStateMachine.kinds
        self.history = History()
        self.applied_log: list[Entry] = []  # the applied sequence (the same on every node)
        self.effective_at: dict[
            tuple[bytes, int], int
        ] = {}  # (client, seq) -> index it took effect
        self.removal_at = 0
        """Log index of the latest proposed removal: no disk is replaced before the applied
        log passed it (applied there, or overwritten)."""
        self.state_at: dict[int, tuple[int, NodeId]] = {}
        """applied index -> (state hash, the node that had it first): every store's state at
        an index must hash the same (rkv.store.state_hash; what `rkv check` compares)."""
        self.stats = Stats()
        self.quiet = False
        self.quiet_start = 0
        self.quiet_target = 0
        self.elected_at = -1
        self.converged_at = -1
        self.done = False
        self.trace: deque[tuple[int, str, Any]] = deque(
            maxlen=None if params.full_trace else params.trace_len
        )
        self.acked_max = 0
        self.max_size_per_msg = (
            params.max_size_per_msg
            if params.max_size_per_msg is not None
            else self.rng.choice((1, 100, 1 << 20))
        )
        self.defer_apply = self.rng.random() < 0.75
        """Whether nodes batch applies like the node runtime (Replica's defer_apply)."""
        self.compaction = CompactionPolicy(
            max_entries=params.compact_every,
            max_bytes=1 << 62,
            keep_entries=params.compact_keep,
            keep_bytes=1 << 62,
        )

    # -- trace -------------------------------------------------------------------------------

    def note(self, what: str, obj: Any = None) -> None:
        self.trace.append((self.now, what, obj))

    def trace_lines(self) -> list[str]:
        out = []
        for t, what, obj in self.trace:
            desc = "" if obj is None else (obj if isinstance(obj, str) else obj.describe())
            out.append(f"t={t:>6} {what} {desc}".rstrip())
        return out

    # -- event loop --------------------------------------------------------------------------

    def at(self, t: int, kind: int, a: Any = None, b: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, kind, a, b))

    def start(self, *, faults: bool = True, quiet_phase: bool = True) -> None:
        """Boot every node and the clients; schedule the fault injector and the quiet phase.
        Tests that script their own faults pass faults=False (and may set clients=0)."""
        p = self.p
        iv = p.tick_interval
        for nid in self.ids:
            self._start(self.nodes[nid])
        for c in self.clients:
            self.at(self.rng.randint(1, 5 * iv), CLIENT, c, c.token)
        if faults:
            self.at(self.rng.randint(p.fault_gap[0], p.fault_gap[1]) * iv, FAULT)
        if quiet_phase:
            self.at(p.ticks * iv, QUIET_START)

    def run_until(self, until: int | None = None, *, max_events: int | None = None) -> None:
        """Process events in time order up to virtual time `until` (or until the run is done),
        at most `max_events` of them (scripted tests step one event at a time)."""
        p = self.p
        iv = p.tick_interval
        heap = self._heap
        pop = heapq.heappop
        push = heapq.heappush
        events = 0
        while heap and not self.done:
            if until is not None and heap[0][0] > until:
                self.now = until
                break
            if max_events is not None and events >= max_events:
                break
            t, _, kind, a, b = pop(heap)
            self.now = t
            events += 1
            if kind == TICK:  # (the most frequent kind first)
                node = a
                if node.epoch == b and node.up:
                    # A tick the core calls inert (it only advances counters) cannot give the
                    # node a Ready when the Ready loop left it without one, so the loop is not
                    # run after it; anything else that touched the node since reset `inert`.
                    q = node.inert
                    rep = node.replica
                    assert rep is not None
                    if q < 0:
                        q = rep.raw.raft.inert_ticks()
                    if q > 0 and node.leases is not None and len(node.leases.lessor):
                        q = 0  # time alone makes leases due: the lease step runs each tick
                    if q > 0:
                        node.inert = q - 1 if q > 1 else -1
                        rep.tick()
                    else:
                        node.rep.tick()
                        if node.in_flight is None:
                            self._process(node)
                    self._seq += 1
                    push(heap, (t + iv, self._seq, TICK, node, b))
            elif kind == DELIVER:
                self._deliver(a, b)
            elif kind == PERSISTED:
                node = a
                if node.epoch == b and node.up:
                    if not self.quiet and p.crash_in_write and self.rng.random() < p.crash_in_write:
                        self._crash(node)
                        continue
                    rd = node.in_flight
                    assert rd is not None
                    node.in_flight = None
                    self._finish(node, node.rep, rd, True)
                    self._process(node)
            elif kind == CLIENT:
                self._client_wake(a, b)
            elif kind == RETRY:
                self._retry(a, b)
            elif kind == TIMEOUT:
                self._attempt_failed(a, b)
            elif kind == FAULT:
                if not self.quiet:
                    self._fault()
                    self.at(t + self.rng.randint(*p.fault_gap) * iv, FAULT)
            elif kind == RESTART:
                node = a
                if not node.up and node.epoch == b:
                    self._start(node)
            elif kind == QUIET_START:
                self._quiet_start()
            elif kind == QUIET_CHECK:
                self._quiet_check()
            elif kind == BACKLOG:
                node = a
                if node.epoch == b and node.up:
                    node.backlog_event = False
                    self._apply_backlog(node)
        self.stats.events += events

    def run(self) -> Stats:
        """The whole run: faults, then the quiet phase, then the client-history check."""
        self.start()
        self.run_until()
        self.stats.virtual_time = self.now
        self.stats.leader_changes = self.checker.leader_changes
        self.stats.committed_entries = self.checker.committed_index
        self.stats.messages = self.net.sent
        self.stats.ops_invoked = len(self.history.ops)
        self.stats.ops_completed = len(self.history.completed())
        self.stats.leases_expired = self.lease_check.expired
        self.stats.leases_revoked = self.lease_check.revoked
        if not self.done:
            raise InvariantViolation("liveness", "the event queue ran dry")
        if self.p.history_check:
            check_history(self.history, self.applied_log, StoreStateMachine)
        if self.p.linearizability_steps:
            self._check_linearizable()
        return self.stats

    def _check_linearizable(self) -> None:
        """The client history, without looking at the log, must be linearizable. A bounded
        step budget keeps the search deterministic; running out of it proves nothing either
        way and is not a failure."""
        ops = []
        for op in self.history.ops:
            if (op.kind == "get" and not op.completed) or op.kind in LEASE_KINDS:
                continue  # a read with no answer constrains nothing; leases: rkv.sim.leases
            inp: Any = None
            out: Any = op.result
            if op.kind == "put":
                inp, out = op.value, None
            elif op.kind == "cas":
                inp = (op.expected, op.value)
            elif op.kind == "txn":
                inp = (op.expected, op.value, (op.key2,))
            elif op.kind == "get":
                out = op.value
            ops.append(
                lin.Operation(
                    client=op.client,
                    kind=lin.OpKind(op.kind),
                    key=op.key,
                    input=inp,
                    output=out,
                    call_time=op.invoke_t,
                    # a put without an answer may or may not have taken effect
                    return_time=op.complete_t,
                    id=op.op_id,
                )
            )
        res = lin.check_history(ops, max_steps=self.p.linearizability_steps)
        if res.verdict == lin.Verdict.ILLEGAL:
            raise InvariantViolation("linearizability", res.describe())

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
        self.note(f"{node.id} START", f"applied={node.applied_index}")
        # nodes tick at the same rate but out of phase
        self.at(self.now + self.rng.randint(1, p.tick_interval), TICK, node, node.epoch)
        self._process(node)

    def _crash(self, node: SimNode) -> None:
        lost = node.in_flight
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

    def _check_applied(self, node: SimNode) -> None:
        """Feed what the store applied since the last look to the checker, in order, and check
        exactly-once: a client's write executes at most once on each node."""
        if not node.applied:
            return
        done, node.applied = node.applied, []
        first = []
        for a in done:
            e = a.entry
            self.checker.on_applied(node.id, e)
            if a.executed:
                req = request_of(e)
                assert req is not None
                key = (req.client_id, req.seq)
                if key in node.effective:
                    raise InvariantViolation(
                        "applied-twice",
                        f"{node.id} applied write c{decode_client(req.client_id)}#{req.seq} "
                        f"again at {e.index}",
                    )
                node.effective.add(key)
                self.effective_at.setdefault(key, e.index)
            if e.index > len(self.applied_log):
                first.append(a)
                self.applied_log.append(e)
                if e.type == CONF_CHANGE:
                    self._on_conf_applied(e)
        index, h = node.store.state_hash()
        was = self.state_at.setdefault(index, (h, node.id))
        if was[0] != h:
            raise InvariantViolation(
                "state-hash",
                f"{node.id} has state hash {h:032x} at applied index {index}, "
                f"{was[1]} had {was[0]:032x}",
            )
        if node.leases is not None:
            node.leases.sync(node.store, self.now)  # the Lessor learns each apply at once
        if self.p.lease_fraction:
            if first:
                self.lease_check.on_frontier(first, self.applied_log, node.store, self.now)
            self.lease_check.check_attachments(node.id, node.store)

    def _outcome(self, node: SimNode, out: Outcome[Wait]) -> None:
        """Answer the clients as the node runtime would: from the Replica's bookkeeping."""
        for w, e, res in out.completed:
            client = w.client
            if not isinstance(client, Client) or client.token != w.token or client.op is None:
                continue
            op = client.op
            self.checker.on_ack(e.index, e.term)
            result = res.value if res is not None and isinstance(res.value, bool) else None
            if op.kind == "txn":
                result = txn_succeeded(res)
            elif op.kind in LEASE_KINDS:
                result = self.client_leases[client.id].done(
                    op.kind, op.lease, op.ttl, res, op.invoke_t, self.rng
                )
            self.history.complete_put(op, self.now, e.index, node.id, result)
            if op.kind == "put" or (op.kind in ("cas", "txn") and result):
                client.known[op.key] = op.value
                if op.key2 is not None:
                    client.known[op.key2] = op.value
            elif op.kind == "delete":
                client.known[op.key] = None
            self.note(f"c{client.id} ACK", op.describe())
            self.acked_max = max(self.acked_max, e.index)
            self._next_op(client)
        for w, _err in out.failed:
            if isinstance(w.client, Client):
                self._attempt_failed(w.client, w.token)
        for w, read_index in out.reads:
            client = w.client
            if not isinstance(client, Client) or client.token != w.token or client.op is None:
                continue
            op = client.op
            applied = node.rep.applied
            raw = node.store.get(op.key.encode())
            value = None if raw is None else raw.decode()
            self.history.complete_get(op, self.now, read_index, applied, value, node.id)
            client.known[op.key] = value
            self.note(f"c{client.id} READ", op.describe())
            self._next_op(client)

    # -- clients -----------------------------------------------------------------------------

    def _client_wake(self, c: Client, token: int) -> None:
        if token != c.token or c.op is not None or self.quiet:
            return
        rng = self.rng
        p = self.p
        if p.lease_fraction and rng.random() < p.lease_fraction:
            kind, lease, ttl, lkey, value = self.client_leases[c.id].choose(rng, self.now, p.leases)
            c.seq += 1
            c.op = self.history.invoke(c.id, kind, lkey, value, self.now, c.seq)
            c.op.lease, c.op.ttl = lease, ttl
            c.attempts = 0
            self._attempt(c)
            return
        key = f"k{rng.randrange(self.p.keys)}"
        if rng.random() < p.read_fraction:
            c.op = self.history.invoke(c.id, "get", key, None, self.now)
        else:
            c.seq += 1
            kind = "put"
            if len(self.write_kinds) > 1:
                r = rng.random()
                if r < p.cas_fraction and "cas" in self.write_kinds:
                    kind = "cas"
                elif r < p.cas_fraction + p.delete_fraction and "delete" in self.write_kinds:
                    kind = "delete"
                elif (
                    p.txn_fraction
                    and p.keys > 1
                    and r < p.cas_fraction + p.delete_fraction + p.txn_fraction
                    and "txn" in self.write_kinds
                ):
                    kind = "txn"
            value = None if kind == "delete" else f"v{c.id}.{c.seq}"
            # a cas (or txn) from what this client last saw of the key (often stale, so some
            # fail), or "only if absent"
            expected = c.known.get(key) if kind in ("cas", "txn") and rng.random() < 0.7 else None
            key2 = None
            if kind == "txn":  # the other key the txn writes
                key2 = f"k{(int(key[1:]) + 1 + rng.randrange(p.keys - 1)) % p.keys}"
            c.op = self.history.invoke(c.id, kind, key, value, self.now, c.seq, expected, key2)
        c.attempts = 0
        self._attempt(c)

    def _attempt(self, c: Client) -> None:
        op = c.op
        assert op is not None
        rng = self.rng
        iv = self.p.tick_interval
        c.token += 1
        token = c.token
        c.attempts += 1
        op.attempts = c.attempts
        if c.attempts > self.p.client_max_attempts:
            op.failed = True
            self.note(f"c{c.id} GIVE-UP", op.describe())
            self._next_op(c)
            return
        if op.kind == "get" and rng.random() < 0.5:
            target = rng.choice(self.all_ids)  # reads are served by followers too
        else:
            target = c.leader or rng.choice(self.all_ids)
        node = self.nodes[target]
        if not node.up:
            c.leader = ""
            self.at(self.now + self._backoff(c), RETRY, c, token)
            return
        w = Wait(c, token)
        rep = node.rep
        try:
            if op.kind != "get":
                cmd = ClientCommand(
                    op.kind, c.id, op.seq, op.key, op.value, op.expected, op.key2, op.lease, op.ttl
                )
                # a put needs no apply result: answered once committed, as the node does
                index = rep.propose(self.encoder.encode(cmd), w, early=op.kind == "put")
                if op.kind in ("grant", "renew"):
                    self.lease_check.on_sent(index, rep.raw.term, self.now)
                self.note(f"c{c.id} PROPOSE {target} {index}@{rep.raw.term}", op.describe())
            else:
                rep.read(w)
                self.note(f"c{c.id} READ-INDEX {target}", op.describe())
        except RkvError as e:
            hint = e.leader_addr if isinstance(e, NotLeader) else None
            c.leader = hint if hint in self.nodes and hint != target else ""
            # straight to the hinted leader, like the real client; else back off
            delay = iv if c.leader else self._backoff(c)
            self.at(self.now + delay, RETRY, c, token)
            return
        c.waiting = (node, node.epoch, w)
        self.at(self.now + self.p.client_timeout * iv, TIMEOUT, c, token)
        self._process(node)

    def _attempt_failed(self, c: Client, token: int) -> None:
        """The attempt `token` failed (timeout, crash, overwritten entry): retry after a short
        random backoff with the same session seq, so a write that did commit is not re-applied."""
        if token != c.token or c.op is None:
            return
        self._forget(c)
        c.leader = ""
        c.token += 1
        self.at(self.now + self._backoff(c), RETRY, c, c.token)

    def _backoff(self, c: Client) -> int:
        """Exponential backoff with jitter, as rkv.client does (there 50 ms doubling up to
        1 s): here 1-2 ticks doubling up to 10-20 ticks, in time units."""
        iv = self.p.tick_interval
        cap = min(20, 1 << min(c.attempts, 5)) * iv
        return max(iv, cap // 2 + int(self.rng.random() * (cap // 2 + 1)))

    def _retry(self, c: Client, token: int) -> None:
        if token == c.token and c.op is not None:
            self._attempt(c)

    def _forget(self, c: Client) -> None:
        """The node stops tracking the attempt the client gave up on (a runtime forgets
        requests past their deadline), so a lost read does not hold up batched applies."""
        if c.waiting is not None:
            node, epoch, w = c.waiting
            c.waiting = None
            if node.up and node.epoch == epoch:
                node.rep.forget(lambda t: t is w)

    def _next_op(self, c: Client) -> None:
        c.waiting = None
        c.op = None
        c.token += 1
        self.at(self.now + self.rng.randint(1, 5) * self.p.tick_interval, CLIENT, c, c.token)

    # -- scripting (tests drive a cluster by hand with these) ---------------------------------

    def leader_id(self) -> NodeId:
        """The up node that believes it leads the highest term ("" if none)."""
        leader = self._leader()
        return "" if leader is None else leader.id

    def propose(self, nid: NodeId, data: bytes) -> int:
        node = self.nodes[nid]
        index = node.rep.propose(data, Wait(None, -1))
        self._process(node)
        return index

    def crash(self, nid: NodeId, *, restart: bool = True) -> None:
        """Crash `nid` now; unless restart=False it restarts after the usual random delay."""
        node = self.nodes[nid]
        self._crash(node)
        if not restart:
            node.epoch += 1  # orphans the scheduled restart

    def restart(self, nid: NodeId) -> None:
        node = self.nodes[nid]
        if not node.up:
            node.epoch += 1
            self._start(node)

    # -- faults ------------------------------------------------------------------------------

    def _leader(self) -> SimNode | None:
        best = None
        for nid in self.all_ids:
            n = self.nodes[nid]
            t = self.checker.nodes[nid]
            if (
                n.up
                and t.role == LEADER
                and (best is None or t.hs.term > self.checker.nodes[best.id].hs.term)
            ):
                best = n
        return best

    def _fault(self) -> None:
        rng = self.rng
        ids = tuple(self.all_ids)
        kind = rng.choices(
            (
                "crash",
                "crash-leader",
                "split",
                "oneway",
                "isolate",
                "heal",
                "net",
                "disk",
                "transfer",
                "member",
                "replace-disk",
            ),
            weights=(
                2,
                1,
                2,
                1,
                2,
                3,
                1,
                1,
                1,
                3 if self.p.membership else 0,
                1 if self.p.disk_replace else 0,
            ),
        )[0]
        if kind == "crash-leader":
            leader = self._leader()
            if leader is not None:
                self._crash(leader)
        elif kind == "crash":
            up = [self.nodes[i] for i in ids if self.nodes[i].up]
            if up:
                self._crash(rng.choice(up))
        elif kind == "split":
            side = rng.sample(ids, rng.randint(1, len(ids) // 2))
            rest = [i for i in ids if i not in side]
            self.net.split(side, rest)
            self.stats.partitions += 1
            self.note("PARTITION", f"{sorted(side)} | {rest}")
        elif kind == "oneway":
            links = [(a, b) for a in ids for b in ids if a != b]
            cut = rng.sample(links, rng.randint(1, len(ids)))
            for a, b in cut:
                self.net.cut(a, b)
            self.stats.partitions += 1
            self.note("CUT", " ".join(f"{a}->{b}" for a, b in cut))
        elif kind == "isolate":
            leader = self._leader()
            if leader is not None:
                self.net.isolate(leader.id, ids)
                self.stats.partitions += 1
                self.note("ISOLATE-LEADER", leader.id)
        elif kind == "heal":
            self.net.heal()
            self.note("HEAL")
        elif kind == "net":
            base = self.p.chaos_network
            self.net.params = replace(
                base,
                drop=rng.choice((0.0, base.drop, 2 * base.drop, 0.3)),
                duplicate=rng.choice((0.0, base.duplicate)),
                long_delay=rng.choice((0.0, base.long_delay)),
            )
            self.note("NETWORK", self.net.params.describe())
        elif kind == "disk":
            node = self.nodes[rng.choice(ids)]
            node.disk.slow = not node.disk.slow
            self.note(f"{node.id} DISK", "slow" if node.disk.slow else "fast")
        elif kind == "member":
            self._member_change()
        elif kind == "replace-disk":
            self._replace_disk()
        elif kind == "transfer":
            leader = self._leader()
            if leader is not None:
                to = rng.choice([i for i in ids if i != leader.id] or [leader.id])
                if self.p.membership:
                    voters = [v for v in leader.rep.raw.conf_state().voters if v != leader.id]
                    if not voters:
                        return
                    to = rng.choice(voters)
                self.note(f"{leader.id} TRANSFER-LEADER", to)
                try:
                    leader.rep.raw.transfer_leader(to)
                except ProposalDropped:
                    return  # it stepped down in a Ready we have not taken yet
                self._process(leader)

    def _recovering(self) -> bool:
        """A node's store is recovering (durably: rkv.raft.recovery): after a replaced disk,
        or a new node that crashed before its first round trip was durable."""
        return any(n.store.initial_state()[0].recovering for n in self.nodes.values())

    def _replace_disk(self) -> None:
        """A node of the bootstrap configuration loses its storage: it stops, and restarts
        with a new, empty store under its old id (after the usual restart delay)."""
        conf = self.conf_history[-1][1]
        first = self.conf_history[0][1]
        if set(conf.members()) != set(first.members()) or len(self.applied_log) < self.removal_at:
            return  # a restarted node would know only the bootstrap configuration
        if self._recovering():
            return  # one at a time: two forgetful voters may be a majority
        node = self.nodes[self.rng.choice(first.voters)]
        if node.up:
            self._crash(node)
        node.replace_disk()
        self.checker.wipe(node.id)
        self.stats.disks_replaced += 1
        self.note(f"{node.id} DISK-REPLACED", "restarts with empty storage")

    # -- membership --------------------------------------------------------------------------

    def members(self) -> tuple[NodeId, ...]:
        """The members of the newest applied configuration."""
        return self.conf_history[-1][1].members()

    def _member_change(self) -> None:
        """One random change through the current leader: add a learner (a new node with a fresh
        id: reusing a removed id with a wiped disk could vote twice in a term), promote one,
        or remove a voter (possibly the leader) or a learner."""
        leader = self._leader()
        if leader is None:
            return
        rng = self.rng
        conf = leader.rep.raw.conf_state()
        choices = []
        if len(conf.members()) < self.p.max_members:
            choices.append(ConfChangeType.ADD_LEARNER)
        if conf.learners:
            choices += [ConfChangeType.PROMOTE] * 2
        if (len(conf.voters) > 2 or conf.learners) and not self._recovering():
            # Not while a replaced disk recovers: it counts on the voters it knows (its
            # bootstrap configuration), and one removed and stopped meanwhile may never
            # answer it (docs/operations.md, "Replaced disks": what recovery does not cover).
            choices.append(ConfChangeType.REMOVE)
        if not choices:
            return
        op = rng.choice(choices)
        if op == ConfChangeType.ADD_LEARNER:
            nid = f"n{len(self.all_ids) + 1}"
        elif op == ConfChangeType.PROMOTE:
            nid = rng.choice(conf.learners)
        else:
            pool = conf.learners + (conf.voters if len(conf.voters) > 2 else ())
            nid = rng.choice(pool)
        cc = ConfChange(op, nid)
        try:
            index = leader.rep.propose_conf_change(cc, Wait(None, -1))
        except RkvError as e:
            self.note(f"{leader.id} MEMBER-REFUSED", f"{cc.describe()}: {e}")
            return
        self.note(f"{leader.id} MEMBER", f"{cc.describe()} at {index}")
        if op == ConfChangeType.REMOVE:
            self.removal_at = max(self.removal_at, index)
        if op == ConfChangeType.ADD_LEARNER:
            self._add_node(nid)
        self._process(leader)

    def _add_node(self, nid: NodeId) -> None:
        node = SimNode(nid, Disk(self.rng, self.p.disk), ())
        self.nodes[nid] = node
        self.all_ids.append(nid)
        self.checker.add_node(nid)
        self._start(node)

    def _on_conf_applied(self, e: Entry) -> None:
        """The first application anywhere of the CONF_CHANGE at e.index (the applied sequence
        is the same everywhere, state-machine safety checks that)."""
        new = confchange.decode(e.data).conf
        old = self.conf_history[-1][1]
        changed = set(old.voters) ^ set(new.voters)
        if len(changed) > 1:
            raise InvariantViolation(
                "conf-one-at-a-time",
                f"the change at {e.index} alters voters {sorted(changed)}: "
                f"{old.describe()} -> {new.describe()}",
            )
        self.conf_history.append((e.index, new))
        self.stats.members_joined += len(set(new.members()) - set(old.members()))
        self.stats.members_removed += len(set(old.members()) - set(new.members()))
        self.note("CONF", f"{new.describe()} at {e.index}")

    def _conf_at(self, index: int) -> ConfState:
        newest_index, newest = self.conf_history[-1]
        if newest_index <= index:
            return newest  # (the usual case: the node applied the newest change)
        conf = self.conf_history[0][1]
        for i, c in self.conf_history:
            if i > index:
                break
            conf = c
        return conf

    def _check_conf(self, node: SimNode) -> None:
        rep = node.rep
        raw = rep.raw
        log = raw.raft.log
        # A snapshot stepped but not yet applied already gave the core its configuration
        applied = max(rep.applied, log.first_index() - 1)
        want = self._conf_at(applied)
        have = raw.conf_state()
        # A node that joined later does not know the bootstrap configuration: until it applies
        # a change (or a snapshot carrying one) it may know none.
        if have != want and not (
            not node.bootstrap
            and all(i > applied for i, _ in self.conf_history[1:])
            and have.is_empty()
        ):
            raise InvariantViolation(
                "conf-agreement",
                f"{node.id} applied {applied} and uses {have.describe()}, "
                f"but the configuration there is {want.describe()}",
            )
        lo, last = log.committed + 1, log.last_index()
        if last > lo:  # (two changes past the commit index need two entries there)
            pending = [e.index for e in log.slice(lo, last + 1) if e.type == CONF_CHANGE]
            if len(pending) > 1:
                raise InvariantViolation(
                    "conf-pending",
                    f"{node.id} holds conf changes at {pending} past its commit index "
                    f"{log.committed}",
                )
        if raw.raft.role == LEADER and node.id not in raw.raft.voters:
            raise InvariantViolation(
                "conf-leader",
                f"{node.id} leads but is not a voter of {raw.conf_state().describe()}",
            )

    # -- quiet phase and liveness ------------------------------------------------------------

    def _quiet_start(self) -> None:
        self.quiet = True
        self.quiet_start = self.now
        self.net.heal()
        self.net.params = QUIET
        self.note("QUIET", "heal all, restart all, no more faults or new client ops")
        members = set(self.members())
        for nid in self.all_ids:
            node = self.nodes[nid]
            node.disk.slow = False
            if nid not in members:
                # decommissioned: a removed node (or one whose joining never committed) stops
                if node.up:
                    self.crash(nid, restart=False)
                continue
            if not node.up:
                node.epoch += 1
                self._start(node)
        self.quiet_target = max(self.acked_max, self.checker.committed_index)
        self.at(self.now + self.p.tick_interval, QUIET_CHECK)

    def _leases_settled(self, leader: SimNode | None) -> bool:
        """With leases in the workload, the run ends once the leader holds none (the weak
        liveness check, rkv.sim.leases); if no leader keeps leading long enough for that
        within the bound of the wait, the check is skipped (a stable leader is counted from
        when it is first seen; the quiet network is loss-free, so this is rare)."""
        if not self.p.lease_fraction:
            return True
        lp = self.p.leases
        wait = 3 * (lp.ttl[1] + 2 * self.lease_check.election_ms + lp.checkpoint_ms + lp.slack)
        if leader is None or self.now - self.converged_at > wait:
            if self.now - self.converged_at > wait:
                self.lease_check.liveness_skipped = 1
                self.note("LEASES", "no stable leader long enough: liveness not checked")
                return True
            return False
        term = self.checker.nodes[leader.id].hs.term
        if self.lease_check.settled(leader.id, term, leader.store, self.applied_log, self.now):
            self.stats.lease_liveness_checked = 1
            return True
        return False

    def _quiet_check(self) -> None:
        iv = self.p.tick_interval
        ticks = (self.now - self.quiet_start) // iv
        conf = self.conf_history[-1][1]
        for nid in conf.members():
            if not self.nodes[nid].up:
                # its joining committed after the quiet phase began: start it again
                self.restart(nid)
        leader = self._leader()
        if self.elected_at < 0 and leader is not None:
            term = self.checker.nodes[leader.id].hs.term
            agree = sum(
                1
                for nid in conf.voters
                if self.checker.nodes[nid].leader == leader.id
                and self.checker.nodes[nid].hs.term == term
            )
            if agree * 2 > len(conf.voters):
                self.elected_at = ticks
                self.stats.ticks_to_elect = ticks
        if self.elected_at >= 0:
            target = max(self.quiet_target, self.acked_max)
            if self.converged_at < 0 and all(
                self.nodes[i].applied_index >= target for i in conf.members()
            ):
                self.converged_at = self.now
                self.stats.ticks_to_converge = ticks
                self.note("CONVERGED", f"all nodes applied >= {target} after {ticks} quiet ticks")
            if self.converged_at >= 0:
                # with leases, the run goes on until they are gone: then everything acked
                # meanwhile must be applied everywhere too
                self.done = self._leases_settled(leader) and all(
                    self.nodes[i].applied_index >= max(target, self.acked_max)
                    for i in conf.members()
                )
                if not self.done:
                    self.at(self.now + iv, QUIET_CHECK)
                return
        if ticks >= self.p.quiet_ticks:
            applied = {i: self.nodes[i].applied_index for i in conf.members()}
            if self.elected_at < 0:
                raise InvariantViolation(
                    "liveness",
                    f"no leader within {ticks} ticks of the quiet phase (applied: {applied})",
                )
            raise InvariantViolation(
                "liveness",
                f"acknowledged/committed entries up to {max(self.quiet_target, self.acked_max)} "
                f"not applied everywhere within {ticks} quiet ticks (applied: {applied})",
            )
        self.at(self.now + iv, QUIET_CHECK)
