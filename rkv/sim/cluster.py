"""The discrete-event simulated cluster: real nodes (rkv.sim.node) over a simulated network.

Owns: the event loop (a heap of (virtual time, sequence, event) with integer time), driving
each node's Replica in the runtime's order, crash/restart, the fault schedule, the clients,
and the end-of-run liveness and client-history checks. Everything random comes from one
random.Random(seed), consumed in a fixed order, so a run is a pure function of its seed and
parameters. Its parts, methods of Cluster by concern: ready_loop.py (each node's Ready loop), clients.py
(the clients), faults.py (the fault schedule), checks.py (the checks wired into the run);
events.py names the event kinds. Must not: read a clock, use threads or trio, or touch real files; it reports
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
from dataclasses import dataclass, field
from typing import Any

from rkv.raft.types import (
    LEADER,
    ConfState,
    Entry,
    NodeId,
)
from rkv.replica import CompactionPolicy
from rkv.sim.checks import ChecksMixin
from rkv.sim.clients import Client, ClientsMixin
from rkv.sim.disk import Disk, DiskParams
from rkv.sim.events import (
    BACKLOG,
    CLIENT,
    DELIVER,
    FAULT,
    PERSISTED,
    QUIET_CHECK,
    QUIET_START,
    RESTART,
    RETRY,
    TICK,
    TIMEOUT,
)
from rkv.sim.faults import FaultsMixin
from rkv.sim.history import History, check_history
from rkv.sim.invariants import InvariantViolation, SafetyChecker
from rkv.sim.leases import ClientLeases, LeaseChecker, LeaseParams
from rkv.sim.network import QUIET, Network, NetworkParams
from rkv.sim.node import RawNodeFactory, SimNode, Wait
from rkv.sim.ready_loop import ReadyLoopMixin
from rkv.sim.statemachine import StoreStateMachine
from rkv.sim.watch import WatchChecker

__all__ = ["Client", "Cluster", "SimParams", "Stats"]


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


class Cluster(ReadyLoopMixin, ClientsMixin, FaultsMixin, ChecksMixin):
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
        self.watch = WatchChecker()
        """Every node's stream of changes for watchers (rkv.sim.watch)."""
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
        self._check_watch()  # last: a bad write fails the client checks by their names
        return self.stats

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

    # -- the leader ---------------------------------------------------------------------------

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
