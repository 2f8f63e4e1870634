"""The simulated cluster's checks wired into the run (rkv.sim.cluster).

Owns: feeding applies to the SafetyChecker and checking exactly-once and state hashes per
index, configuration agreement, the client history's linearizability, and the quiet
phase's liveness (a leader, convergence, leases gone).
Must not: inject faults or drive clients; the checks themselves live in invariants.py,
history.py, linearizability.py and leases.py.
"""

from __future__ import annotations

from typing import Any

from rkv.raft import confchange
from rkv.raft.types import (
    CONF_CHANGE,
    LEADER,
    ConfState,
    Entry,
)
from rkv.sim import linearizability as lin
from rkv.sim.events import (
    QUIET_CHECK,
)
from rkv.sim.invariants import InvariantViolation
from rkv.sim.network import QUIET
from rkv.sim.node import SimNode, decode_client, request_of
from rkv.sim.statemachine import LEASE_KINDS, StoreStateMachine, client_id
from rkv.sim.watch import AckedWrite


class ChecksMixin:
    """Methods of rkv.sim.cluster.Cluster (which holds the state they use)."""

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

    def _check_watch(self) -> None:
        """The end of the watch checks (rkv.sim.watch): every node's stream against the
        others' and against the writes clients were told took effect (where: effective_at)."""
        for node in self.nodes.values():
            self.watch.feed(node.id, node.store.take_changes())
        acked = []
        if isinstance(self.encoder, StoreStateMachine):  # (other encoders change no keys)
            for op in self.history.ops:
                if not op.completed or op.kind not in ("put", "cas", "delete", "txn"):
                    continue
                if op.kind != "put" and not op.result:
                    continue  # a cas or txn that did not swap, a delete of nothing
                at = self.effective_at.get((client_id(op.client), op.seq))
                if at is None:
                    continue  # (history-check's concern)
                what = op.describe()
                if op.kind == "delete":
                    acked.append(AckedWrite(at, "delete", op.key.encode(), None, what))
                    continue
                value = (op.value or "").encode()
                for key in {op.key, op.key2 or op.key}:
                    acked.append(AckedWrite(at, "put", key.encode(), value, what))
        self.watch.finish(acked, {nid: n.store for nid, n in self.nodes.items()})

    def _check_applied(self, node: SimNode) -> None:
        """Feed what the store applied since the last look to the checker, in order, and check
        exactly-once: a client's write executes at most once on each node."""
        if not node.applied:
            return
        done, node.applied = node.applied, []
        self.watch.feed(node.id, node.store.take_changes())
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
