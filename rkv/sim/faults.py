"""The simulated cluster's nemesis (rkv.sim.cluster): the fault schedule.

Owns: drawing the next fault (crashes, partitions, network chaos, slow disks, replaced
disks, membership changes) and scheduling the one after it.
Must not: check anything (checks.py) or run nodes itself (ready_loop.py).
"""

from __future__ import annotations

from dataclasses import replace

from rkv.errors import RkvError
from rkv.raft.confchange import ConfChange, ConfChangeType
from rkv.raft.errors import ProposalDropped
from rkv.raft.types import (
    NodeId,
)
from rkv.sim.disk import Disk
from rkv.sim.node import SimNode, Wait


class FaultsMixin:
    """Methods of rkv.sim.cluster.Cluster (which holds the state they use)."""

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
        self.watch.replaced(node.id)
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
