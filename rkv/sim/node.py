"""One simulated node: the real `rkv.replica.Replica` over the real `rkv.store.MemoryStore`.

Owns: what a node is in the simulation (its store, which is all it keeps across a crash; its
Replica while it is up; its life counter and the Ready whose durable write is in flight), the
client tokens the Replica reports back (`Wait`), the record of what the store applied (fed by
the store's apply hook, drained by the cluster into the safety checker), and the snapshot
stream a leader sends instead of a bare SNAPSHOT message (the store's own record stream, as
the node runtime streams it), and its lease glue while it is up (`leases`: the same
rkv.lease.LeaseDriver the node runtime uses, lost with the node at a crash). Must not: schedule events, consume the cluster's randomness or
decide anything about faults (rkv.sim.cluster does); every call here happens at one virtual
instant.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rkv import codec
from rkv.errors import Unavailable
from rkv.lease import LeaseDriver
from rkv.raft.config import Config
from rkv.raft.rawnode import RawNode
from rkv.raft.storage import Storage
from rkv.raft.types import Entry, Message, MessageType, NodeId, Ready, Snapshot, SnapshotMeta
from rkv.replica import Replica
from rkv.sim.disk import Disk
from rkv.store import MemoryStore
from rkv.store.commands import ApplyResult

RawNodeFactory = Callable[[Config, Storage, random.Random], RawNode]


class Wait:
    """A client attempt the Replica tracks (its token): which client, which attempt."""

    __slots__ = ("client", "token")

    def __init__(self, client: object, token: int) -> None:
        self.client = client
        self.token = token


@dataclass(frozen=True, slots=True)
class Applied:
    """One entry the store applied, and whether a client request executed there."""

    entry: Entry
    result: ApplyResult
    executed: bool


@dataclass(frozen=True, slots=True)
class SnapshotStream:
    """What a leader streams to a follower that needs a snapshot: the store's state at its
    applied index, as the store's own chunks (rkv.node streams the same over RPC)."""

    meta: SnapshotMeta
    records: int
    chunks: tuple[bytes, ...]

    def describe(self) -> str:
        m = self.meta
        return f"stream {m.index}@{m.term} ({len(self.chunks)} chunks, {self.records} records)"


class SimNode:
    __slots__ = (
        "applied",
        "backlog_event",
        "bootstrap",
        "disk",
        "effective",
        "epoch",
        "id",
        "in_flight",
        "inert",
        "leases",
        "replica",
        "store",
        "up",
    )

    def __init__(self, node_id: NodeId, disk: Disk, bootstrap: tuple[NodeId, ...]) -> None:
        self.id = node_id
        self.bootstrap = bootstrap  # the initial voters; empty for a node that joins later
        self.disk = disk
        self.store = MemoryStore("sim", node_id, bootstrap)
        self.store.record_changes = True  # for the watch checks (rkv.sim.watch), each life
        self.replica: Replica[Wait] | None = None  # while up
        self.leases: LeaseDriver | None = None
        """The Lessor's glue while up (a crash loses it; a restart resets from the store)."""
        self.up = False
        self.epoch = 0  # bumped by each crash: events of an older life are ignored
        self.in_flight: Ready | None = None  # a Ready whose durable write has not completed
        self.effective: set[tuple[bytes, int]] = set()  # (client, seq) this store executed
        self.applied: list[Applied] = []  # applied by the store, not yet checked
        self.backlog_event = False  # an apply-backlog event is scheduled
        self.inert = 0
        """Ticks known to need no look for a Ready after them (rkv.sim.cluster's tick event):
        n > 0, the next n ticks are inert (Raft.inert_ticks); -1, the node was settled by the
        cluster's Ready loop and nothing but inert ticks touched it since, so ask the core;
        0, unknown. Every access through `rep` (an input, or a look the core does not
        promise is free of effects) makes it 0."""

    @property
    def applied_index(self) -> int:
        return self.store.applied_index()

    @property
    def rep(self) -> Replica[Wait]:
        rep = self.replica
        assert rep is not None, f"{self.id} is down"
        self.inert = 0
        return rep

    def start(
        self,
        config: Config,
        rng: random.Random,
        *,
        defer_apply: bool,
        factory: RawNodeFactory | None = None,
        leases: LeaseDriver | None = None,
    ) -> None:
        """Boot (or reboot, after a crash: the store keeps what it made durable, nothing
        else) with a fresh Replica and a fresh lease driver (it resets from the store at
        its first step, as the node runtime's does)."""
        if self.epoch:
            self.store = self.store.reopen()
            self.store.record_changes = True
        self.store.on_apply = self._on_apply
        self.replica = Replica(
            config,
            self.store,
            rng=rng,
            raw_node_factory=factory or RawNode,
            address_of=lambda nid: nid,
            defer_apply=defer_apply,
        )
        self.leases = leases
        self.up = True
        self.in_flight = None
        self.applied = []
        self.backlog_event = False
        self.inert = 0

    def crash(self) -> list[Wait]:
        """Stop: the Replica and everything volatile are gone; returns the waiting tokens."""
        waiting = [w for w, _ in self.replica.fail_all(_CRASHED)] if self.replica else []
        self.up = False
        self.epoch += 1
        self.replica = None
        self.leases = None
        self.in_flight = None
        self.applied = []
        self.inert = 0
        return waiting

    def replace_disk(self) -> None:
        """The storage is gone (the node is down): a new, empty store, as a new data dir for
        the same id would be (bootstrap configuration, recovering)."""
        assert not self.up
        self.store = MemoryStore("sim", self.id, self.bootstrap)
        self.store.record_changes = True
        self.effective = set()
        self.applied = []

    def _on_apply(
        self, entries: Sequence[Entry], results: Sequence[ApplyResult], executed: Sequence[int]
    ) -> None:
        done = set(executed)
        self.applied.extend(
            Applied(e, r, e.index in done) for e, r in zip(entries, results, strict=True)
        )

    # -- snapshots ---------------------------------------------------------------------------

    def open_stream(self) -> SnapshotStream:
        """The leader side: the applied state, as the store streams it."""
        with self.store.open_snapshot() as src:
            chunks = tuple(src.chunks())
            return SnapshotStream(src.meta, src.records, chunks)

    def stage(self, stream: SnapshotStream, msg: Message) -> Message | None:
        """The follower side: stage the streamed state, and return the SNAPSHOT message to step
        for it (None when a stepped snapshot is still being installed: like the runtime's
        staging lock, a new stream must not replace the state that install expects)."""
        rep = self.rep
        if rep.raw.raft.log.unstable.snapshot is not None or (
            self.in_flight is not None and self.in_flight.snapshot is not None
        ):
            return None
        st = self.store
        st.begin_snapshot_install(stream.meta)
        for seq, chunk in enumerate(stream.chunks):
            st.stage_snapshot_chunk(seq, chunk)
        meta = st.finish_snapshot_staging(len(stream.chunks), stream.records)
        return Message(
            MessageType.SNAPSHOT,
            to=self.id,
            frm=msg.frm,
            term=msg.term,
            index=meta.index,
            log_term=meta.term,
            snapshot=Snapshot(meta=meta),
        )


def decode_client(cid: bytes) -> int:
    """The simulated client number of a session id (see rkv.sim.statemachine.client_id)."""
    return int(cid[1:]) if cid[:1] == b"c" and cid[1:].isdigit() else -1


def request_of(e: Entry) -> codec.Request | None:
    if not e.data:
        return None
    try:
        return codec.decode_request(e.data)
    except codec.CodecError:
        return None


_CRASHED = Unavailable("the node crashed")
