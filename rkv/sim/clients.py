"""The simulated clients of rkv.sim.cluster: what they ask, where, and what they were told.

Owns: Client, the workload each client draws (gets, puts, cas, deletes, transactions,
lease operations), attempts with timeouts, retries with backoff and leader hints, and
answering clients from a node's Outcome into the history (rkv.sim.history).
Must not: check the history (checks.py) or step nodes other than through proposals.
"""

from __future__ import annotations

from rkv.errors import NotLeader, RkvError
from rkv.raft.types import (
    NodeId,
)
from rkv.replica import Outcome
from rkv.sim.events import (
    CLIENT,
    RETRY,
    TIMEOUT,
)
from rkv.sim.history import Operation
from rkv.sim.node import SimNode, Wait
from rkv.sim.statemachine import LEASE_KINDS, ClientCommand, txn_succeeded


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


class ClientsMixin:
    """Methods of rkv.sim.cluster.Cluster (which holds the state they use)."""

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
