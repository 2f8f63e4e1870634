"""The fault schedule: one fault at a time, on a seeded schedule, each healed before the next.

Owns: the fault kinds and how each is injected and healed (SIGKILL and restart, SIGSTOP /
SIGCONT, symmetric and one-way partitions, isolating the leader, a partition with a crash
inside it, a flood of half-open connections on the leader's port (issue 19's attack: writes
must go on), and with `--netns` slow links), the choice of targets (the leader half of the
time), and the fault timeline (`Report.events`). Must not: know how a partition is made
(rkv.nemesis.cluster: the nodes' hooks, or the kernel through rkv.nemesis.netns), or judge
anything.
"""

from __future__ import annotations

import random
from collections import Counter
from functools import partial
from typing import TYPE_CHECKING

import trio

from rkv.config import parse_address
from rkv.nemesis.cluster import ProcessCluster
from rkv.nemesis.report import Report
from rkv.testing import flood

if TYPE_CHECKING:
    from rkv.nemesis.runner import NemesisConfig

FAULT_KINDS = (
    "kill",
    "pause",
    "partition",
    "partition_oneway",
    "isolate_leader",
    "partition_crash",
    "flood",
)
"""The kinds every run can inject (the default set without --netns)."""
FLOOD_CONNECTIONS = 300
"""Half-open connections a flood holds on the leader (over its 256-per-source limit, so
the node must shed them; it must keep serving the workload's clients meanwhile)."""
NETNS_FAULT_KINDS = (*FAULT_KINDS, "slow_link")
"""With --netns: also slow links (packets delayed in the kernel's path, rkv.nemesis.netns)."""


class Nemesis:
    """Injects one fault at a time on a seeded schedule, healing it before the next."""

    def __init__(
        self, cluster: ProcessCluster, cfg: NemesisConfig, rng: random.Random, report: Report
    ) -> None:
        self.cluster = cluster
        self.cfg = cfg
        self.rng = rng
        self.report = report
        self.counts: Counter[str] = Counter()
        self.t0 = trio.current_time()

    def event(self, text: str) -> None:
        self.report.events.append(f"{trio.current_time() - self.t0:8.2f}s {text}")

    async def run(self, until: float) -> None:
        bag: list[str] = []
        rounds = 0
        while True:
            quiet = self.rng.uniform(*self.cfg.quiet)
            if rounds < self.cfg.min_rounds:
                await trio.sleep(quiet)
            else:
                await trio.sleep_until(min(until, trio.current_time() + quiet))
                if trio.current_time() >= until:
                    return
            if not bag:
                # Every kind once per round, in a random order: short runs see them all.
                bag = list(self.cfg.fault_kinds)
                self.rng.shuffle(bag)
            kind = bag.pop()
            hold = self.rng.uniform(*self.cfg.fault_hold)
            await getattr(self, f"_{kind}")(hold)
            self.counts[kind] += 1
            if not bag:
                rounds += 1

    async def _target(self) -> tuple[str, bool]:
        leader = await self.cluster.leader()
        if leader is not None and self.rng.random() < 0.5:
            self.report.leader_faults += 1
            return leader, True
        addr = self.rng.choice(self.cluster.addrs)
        if addr == leader:
            self.report.leader_faults += 1
        return addr, addr == leader

    async def _kill(self, hold: float) -> None:
        addr, lead = await self._target()
        self.event(f"SIGKILL {addr}{' (leader)' if lead else ''} for {hold:.1f}s")
        await self.cluster.kill(addr)
        await trio.sleep(hold)
        await self.cluster.restart(addr)
        self.event(f"restarted {addr}")

    async def _pause(self, hold: float) -> None:
        addr, lead = await self._target()
        self.event(f"SIGSTOP {addr}{' (leader)' if lead else ''} for {hold:.1f}s")
        self.cluster.pause(addr)
        await trio.sleep(hold)
        self.cluster.resume(addr)
        self.event(f"SIGCONT {addr}")

    async def _apply(self, drops: dict[str, tuple[list[str], list[str]]], hold: float) -> None:
        async with trio.open_nursery() as nursery:
            for addr, (to, frm) in drops.items():
                nursery.start_soon(self.cluster.set_fault, addr, to, frm)
        await trio.sleep(hold)
        await self.cluster.heal()
        self.event("healed")

    async def _split(self) -> tuple[list[str], list[str]]:
        """A random (minority, majority) split; the leader is in the minority half the time."""
        addrs = list(self.cluster.addrs)
        self.rng.shuffle(addrs)
        k = self.rng.randint(1, max(1, (len(addrs) - 1) // 2))
        leader = await self.cluster.leader()
        if leader is not None and self.rng.random() < 0.5:
            addrs.remove(leader)
            addrs.insert(0, leader)
            self.report.leader_faults += 1
        return addrs[:k], addrs[k:]

    @staticmethod
    def _symmetric(
        minority: list[str], majority: list[str]
    ) -> dict[str, tuple[list[str], list[str]]]:
        drops = {a: (majority, majority) for a in minority}
        drops.update({a: (minority, minority) for a in majority})
        return drops

    async def _partition(self, hold: float) -> None:
        if len(self.cluster.addrs) < 2:
            return
        minority, majority = await self._split()
        self.event(f"partition {sorted(minority)} | {sorted(majority)} for {hold:.1f}s")
        await self._apply(self._symmetric(minority, majority), hold)

    async def _partition_crash(self, hold: float) -> None:
        """Faults compose: a partition, and inside it a node killed or frozen."""
        if len(self.cluster.addrs) < 2:
            return
        minority, majority = await self._split()
        drops = self._symmetric(minority, majority)
        async with trio.open_nursery() as nursery:
            for addr, (to, frm) in drops.items():
                nursery.start_soon(self.cluster.set_fault, addr, to, frm)
        await trio.sleep(self.rng.uniform(0.0, hold / 2))
        addr, lead = await self._target()
        how = self.rng.choice(("SIGKILL", "SIGSTOP"))
        self.event(
            f"partition {sorted(minority)} | {sorted(majority)} with {how} "
            f"{addr}{' (leader)' if lead else ''} for {hold:.1f}s"
        )
        if how == "SIGKILL":
            await self.cluster.kill(addr)
        else:
            self.cluster.pause(addr)
        await trio.sleep(hold)
        if how == "SIGKILL":
            await self.cluster.restart(addr)
        else:
            self.cluster.resume(addr)
        await self.cluster.heal()
        self.event(f"{'restarted' if how == 'SIGKILL' else 'SIGCONT'} {addr}, healed")

    async def _target_and_peers(self) -> tuple[str, bool, list[str]] | None:
        """A target node (the leader half of the time), whether it leads, and all of its
        peers or a random nonempty subset of them; None with fewer than two nodes."""
        addrs = self.cluster.addrs
        if len(addrs) < 2:
            return None
        x, lead = await self._target()
        others = [a for a in addrs if a != x]
        if self.rng.random() < 0.5:
            return x, lead, others
        return x, lead, self.rng.sample(others, self.rng.randint(1, len(others)))

    async def _partition_oneway(self, hold: float) -> None:
        picked = await self._target_and_peers()
        if picked is None:
            return
        x, lead, cut = picked
        direction = self.rng.choice(("to", "from"))
        self.event(
            f"one-way: {x}{' (leader)' if lead else ''} drops messages {direction} "
            f"{sorted(cut)} for {hold:.1f}s"
        )
        drops = {x: (cut, []) if direction == "to" else ([], cut)}
        await self._apply(drops, hold)

    async def _isolate_leader(self, hold: float) -> None:
        addrs = self.cluster.addrs
        if len(addrs) < 2:
            return
        leader = await self.cluster.leader()
        x = leader if leader is not None else self.rng.choice(addrs)
        if leader is not None:
            self.report.leader_faults += 1
        others = [a for a in addrs if a != x]
        self.event(f"isolate {'leader ' if leader else ''}{x} for {hold:.1f}s")
        drops = {x: (others, others)}
        drops.update({a: ([x], [x]) for a in others})
        await self._apply(drops, hold)

    async def _flood(self, hold: float) -> None:
        """The leader's port held by connections that never finish their handshake, each
        reopened a second after the node closes it (rkv.testing.flood)."""
        leader = await self.cluster.leader()
        x = leader if leader is not None else self.rng.choice(self.cluster.addrs)
        if leader is not None:
            self.report.leader_faults += 1
        host, port = parse_address(x)
        n = FLOOD_CONNECTIONS
        self.event(f"flood {'leader ' if leader else ''}{x}: {n} half-open connections")
        async with trio.open_nursery() as nursery:
            stats = await nursery.start(partial(flood, host, port, connections=n, reopen_after=1.0))
            await trio.sleep(hold)
            nursery.cancel_scope.cancel()
        self.event(f"flood over: {stats.opened} opened, {stats.closed_by_server} closed by {x}")

    async def _slow_link(self, hold: float) -> None:
        """Packets between one node (the leader half of the time) and all or some of its
        peers are delayed, in one direction or both (needs a network: --netns)."""
        picked = await self._target_and_peers()
        if picked is None:
            return
        x, lead, peers = picked
        direction = self.rng.choice(("to", "from", "both"))
        delay = self.rng.uniform(*self.cfg.slow_delay)
        links = [(x, p) for p in peers if direction != "from"]
        links += [(p, x) for p in peers if direction != "to"]
        node = f"{x}{' (leader)' if lead else ''}"
        what = {
            "to": f"from {node} to {sorted(peers)}",
            "from": f"from {sorted(peers)} to {node}",
            "both": f"between {node} and {sorted(peers)}",
        }[direction]
        self.event(f"slow link: packets {what} delayed {delay * 1000:.0f} ms for {hold:.1f}s")
        await self.cluster.set_slow(links, delay)
        await trio.sleep(hold)
        await self.cluster.heal()
        self.event("healed")
