"""The simulated network: per-message delay, drop, duplication, reordering and partitions.

Owns: deciding, from the simulation's single random.Random, whether and when each message sent
between two nodes arrives, and which directed links are cut. Must not: schedule events itself,
touch nodes, read a clock, or use any randomness but the injected one (the event loop in
rkv.sim.cluster asks it for delivery times and does the scheduling).

Reordering needs no mechanism of its own: independent random delays let a later message
overtake an earlier one. Partitions are a set of cut directed links, so symmetric and
asymmetric splits are the same thing. A link is checked when a message is sent and again when
it would arrive, so a partition also swallows what was in flight.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rkv.raft.types import NodeId


@dataclass(frozen=True, slots=True)
class NetworkParams:
    """Fault rates of the network; all delays are in virtual time units."""

    min_delay: int = 1
    max_delay: int = 15
    drop: float = 0.0
    """Probability a message is lost."""
    duplicate: float = 0.0
    """Probability a delivered message arrives a second time (with its own delay)."""
    long_delay: float = 0.0
    """Probability a message is held back much longer (up to long_delay_max): strong reordering."""
    long_delay_max: int = 100

    def describe(self) -> str:
        return (
            f"delay={self.min_delay}..{self.max_delay} drop={self.drop:.2f} "
            f"dup={self.duplicate:.2f} late={self.long_delay:.2f}"
        )


QUIET = NetworkParams()
"""No loss, no duplicates, no long delays: what the network becomes in the quiet phase."""


class Network:
    """Directed-link state plus the delivery-time draw for each message."""

    __slots__ = ("_cut", "_rng", "dropped", "duplicated", "params", "sent")

    def __init__(self, rng: random.Random, params: NetworkParams = QUIET) -> None:
        self._rng = rng
        self.params = params
        self._cut: set[tuple[NodeId, NodeId]] = set()
        self.sent = 0
        self.dropped = 0
        self.duplicated = 0

    # -- partitions -------------------------------------------------------------------------

    def connected(self, frm: NodeId, to: NodeId) -> bool:
        return (frm, to) not in self._cut

    def cut(self, frm: NodeId, to: NodeId) -> None:
        """Cut one direction only (an asymmetric fault)."""
        if frm != to:
            self._cut.add((frm, to))

    def restore(self, frm: NodeId, to: NodeId) -> None:
        """Reconnect one direction."""
        self._cut.discard((frm, to))

    def split(self, side_a: Iterable[NodeId], side_b: Iterable[NodeId]) -> None:
        """Cut every link between the two sides, both directions."""
        b = list(side_b)
        for x in side_a:
            for y in b:
                self.cut(x, y)
                self.cut(y, x)

    def isolate(self, node: NodeId, others: Iterable[NodeId]) -> None:
        self.split([node], [o for o in others if o != node])

    def heal(self) -> None:
        self._cut.clear()

    @property
    def partitioned(self) -> bool:
        return bool(self._cut)

    def cut_links(self) -> list[tuple[NodeId, NodeId]]:
        return sorted(self._cut)

    # -- delivery ---------------------------------------------------------------------------

    def delays(self, frm: NodeId, to: NodeId) -> Sequence[int]:
        """Delays after which copies of one message sent now arrive: () if lost, two if
        duplicated. Uses the rng in a fixed order so runs replay exactly."""
        self.sent += 1
        p = self.params
        rng = self._rng
        if (frm, to) in self._cut:
            self.dropped += 1
            return ()
        if p.drop and rng.random() < p.drop:
            self.dropped += 1
            return ()
        if p.long_delay:
            first = self._one_delay()
        else:  # _one_delay's uniform draw, inlined (per message)
            first = p.min_delay + int(rng.random() * (p.max_delay - p.min_delay + 1))
        if p.duplicate and rng.random() < p.duplicate:
            self.duplicated += 1
            return (first, self._one_delay())
        return (first,)

    def _one_delay(self) -> int:
        p = self.params
        r = self._rng.random
        if p.long_delay and r() < p.long_delay:
            hi = max(p.max_delay, p.long_delay_max)
            return p.max_delay + int(r() * (hi - p.max_delay + 1))
        # uniform on [min_delay, max_delay]: one C call instead of randint's Python layers
        return p.min_delay + int(r() * (p.max_delay - p.min_delay + 1))
