"""The simulated disk of one node: how long a durable write takes, and what survives a crash.

Owns: the latency draw for each durable write, including "slow disk" phases. Must not:
schedule events or hold data; the node's store (rkv.sim.node) holds what is durable, and the
event loop (rkv.sim.cluster) writes a Ready to it in one step once its latency has passed,
which is exactly the Ready contract's "one durable write": a crash before then loses all of
it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


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

    __slots__ = ("_rng", "params", "slow")

    def __init__(self, rng: random.Random, params: DiskParams) -> None:
        self._rng = rng
        self.params = params
        self.slow = False

    def latency(self) -> int:
        p = self.params
        lo, hi = (p.slow_min, p.slow_max) if self.slow else (p.min_latency, p.max_latency)
        return lo + int(self._rng.random() * (hi - lo + 1))
