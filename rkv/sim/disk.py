"""The simulated disk of one node: how long a durable write takes, and what survives a crash.

Owns: a node's MemoryStorage twin (the only durable Raft state a node has) and the latency draw
for each write, including "slow disk" phases. Must not: schedule events or talk to the core; the
event loop (rkv.sim.cluster) decides when a write completes and drops writes that a crash
interrupted. A write is applied to storage in one step when it completes, which is exactly the
Ready contract's "one durable write": a crash before completion loses all of it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from rkv.raft.storage import MemoryStorage
from rkv.raft.types import Entry, HardState, NodeId, Snapshot


@dataclass(frozen=True, slots=True)
class DiskParams:
    """Write latency in virtual time units. 0 means the write completes within the event."""

    min_latency: int = 0
    max_latency: int = 2
    slow_min: int = 20
    slow_max: int = 120
    """Latency range while the disk is in a slow phase."""


class Disk:
    """One node's durable Raft state plus its write latency model."""

    __slots__ = ("_rng", "params", "slow", "storage", "writes")

    def __init__(self, rng: random.Random, voters: tuple[NodeId, ...], params: DiskParams) -> None:
        self._rng = rng
        self.params = params
        self.storage = MemoryStorage(voters)
        self.slow = False
        self.writes = 0

    def latency(self) -> int:
        p = self.params
        if self.slow:
            return self._rng.randint(p.slow_min, p.slow_max)
        return self._rng.randint(p.min_latency, p.max_latency)

    def write(
        self, hard_state: HardState | None, entries: tuple[Entry, ...], snapshot: Snapshot | None
    ) -> None:
        """Persist one Ready's durable part, in the contract's order, as one atomic step."""
        self.writes += 1
        if snapshot is not None and not snapshot.is_empty():
            self.storage.apply_snapshot(snapshot)
        if entries:
            self.storage.append(list(entries))
        if hard_state is not None:
            self.storage.set_hard_state(hard_state)
