"""Client history: invocations and completions, and the check against a sequential model.

Owns: the record of every client operation (put, cas, delete or linearizable get) with its
virtual invoke and complete times, the Raft index it completed at, and its result; and
`check_history`, which replays the cluster's committed sequence through a fresh state machine
of the kind the nodes ran (by default the real command semantics, rkv.store) and checks each
completed operation against it. Must not: drive the cluster or read node internals; it is
fed by the clients in rkv.sim.cluster and by the final committed sequence.

What a completed operation must satisfy:
- put, cas, delete, txn: it took effect in the committed sequence (the model's sessions
  de-duplicate retries, so at most once; that each node's own state machine applied it once
  is checked as the cluster applies), the index it was acknowledged at holds that very
  command (the original or a retry), and the result the client got (cas: swapped, delete:
  existed, txn: succeeded) is the model's result where the command took effect (a txn that
  succeeded changed both its keys at that index).
- get: the read index is at least the index of every put, and of every get's serving point,
  that completed before the get was invoked (real-time order), it was served at applied >=
  read index, and the value equals the model's value of the key at the serving index.
A write that never completed may or may not have taken effect, but at most once.
Lease operations (rkv.sim.statemachine.LEASE_KINDS) are recorded here but checked by
rkv.sim.leases.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field

from rkv.raft.types import Entry
from rkv.sim.invariants import InvariantViolation
from rkv.sim.statemachine import LEASE_KINDS, ApplyResult, StateMachine, StoreStateMachine

WRITES = ("put", "cas", "delete", "txn")


@dataclass(slots=True)
class Operation:
    op_id: int
    client: int
    kind: str  # "put" | "cas" | "delete" | "txn" | "get"
    key: str
    value: str | None  # put/cas: the value written; get: the value read (after completion)
    invoke_t: int
    seq: int = 0  # writes: the client's session sequence number
    expected: str | None = None  # cas: the value it swaps from (None: the key must be absent)
    result: bool | None = None  # cas: swapped; delete: existed (after completion)
    complete_t: int | None = None
    index: int = 0  # put: index acknowledged at; get: the read index
    served_at: int = 0  # get: the applied index of the node when the read was served
    node: str = ""
    attempts: int = 0
    failed: bool = False  # gave up (indeterminate for a put)
    key2: str | None = None  # txn: the other key it writes `value` to when it succeeds
    lease: int = 0  # lease kinds (rkv.sim.leases): the lease
    ttl: int = 0  # grant: the TTL asked for (ms)

    @property
    def completed(self) -> bool:
        return self.complete_t is not None

    def describe(self) -> str:
        state = f"ok@{self.index}" if self.completed else ("gave-up" if self.failed else "pending")
        if self.kind == "put":
            what = f"{self.key}={self.value}"
        elif self.kind == "cas":
            what = f"{self.key}:{self.expected}->{self.value}"
        elif self.kind == "delete":
            what = self.key
        elif self.kind == "txn":
            what = f"if {self.key}=={self.expected}: {self.key},{self.key2}:={self.value}"
        elif self.kind in LEASE_KINDS:
            what = f"lease {self.lease}" + (f" ttl={self.ttl}" if self.ttl else "")
            if self.kind == "lput":
                what = f"{self.key}={self.value} {what}"
        else:
            what = f"{self.key}->{self.value}"
        if self.result is not None:
            what += f" ={self.result}"
        return f"op{self.op_id} c{self.client} {self.kind} {what} {state} on {self.node or '-'}"


@dataclass(slots=True)
class History:
    ops: list[Operation] = field(default_factory=list)

    def invoke(
        self,
        client: int,
        kind: str,
        key: str,
        value: str | None,
        t: int,
        seq: int = 0,
        expected: str | None = None,
        key2: str | None = None,
    ) -> Operation:
        op = Operation(
            len(self.ops), client, kind, key, value, t, seq=seq, expected=expected, key2=key2
        )
        self.ops.append(op)
        return op

    def complete_put(
        self, op: Operation, t: int, index: int, node: str, result: bool | None = None
    ) -> None:
        """Complete a write (put, cas or delete) acknowledged at `index` with `result`."""
        op.complete_t, op.index, op.node, op.result = t, index, node, result

    def complete_get(
        self, op: Operation, t: int, read_index: int, served_at: int, value: str | None, node: str
    ) -> None:
        op.complete_t, op.index, op.served_at, op.value, op.node = (
            t,
            read_index,
            served_at,
            value,
            node,
        )

    def completed(self) -> list[Operation]:
        return [op for op in self.ops if op.completed]


def check_history(
    history: History,
    committed: list[Entry],
    model_factory: Callable[[], StateMachine] = StoreStateMachine,
) -> None:
    """Check completed client operations against the sequential model built from `committed`
    (the cluster's committed entries, index 1..n in order) by a fresh `model_factory()` state
    machine. Raises InvariantViolation."""
    model = model_factory()
    # per key: list of (index, value) changes, in index order (None: deleted)
    changes: dict[str, list[tuple[int, str | None]]] = {}
    effective: dict[tuple[int, int], ApplyResult] = {}  # (client, seq) -> where it took effect
    at_index: dict[int, ApplyResult] = {}
    for e in committed:
        res = model.apply(e)
        if res.kind:
            at_index[e.index] = res
        if not res.effective:
            continue
        effective[(res.client, res.seq)] = res
        if res.kind == "put" or (res.kind in ("cas", "txn") and res.result):
            changes.setdefault(res.key, []).append((e.index, res.value))
            if res.key2 is not None:
                changes.setdefault(res.key2, []).append((e.index, res.value))
        elif res.kind == "delete" and res.result:
            changes.setdefault(res.key, []).append((e.index, None))

    def value_at(key: str, index: int) -> str | None:
        v: str | None = None
        for i, val in changes.get(key, ()):
            if i > index:
                break
            v = val
        return v

    last = len(committed)
    # Real-time lower bound for each get: the highest index observed by any operation that
    # completed before the get was invoked (a put's effective index, a get's serving index).
    done = sorted(history.completed(), key=lambda o: o.complete_t or 0)
    done_t = [o.complete_t or 0 for o in done]
    seen_max: list[int] = []
    running = 0
    for prev in done:
        if prev.kind in WRITES:
            took = effective.get((prev.client, prev.seq))
            running = max(running, prev.index if took is None else took.index)
        else:
            running = max(running, prev.served_at)
        seen_max.append(running)
    for op in history.ops:
        if op.kind in LEASE_KINDS:
            continue  # checked by rkv.sim.leases
        if op.kind in WRITES:
            where = effective.get((op.client, op.seq))
            if not op.completed:
                continue
            if op.index > last:
                raise InvariantViolation(
                    "client-put-lost",
                    f"{op.describe()}: acknowledged at {op.index} but only {last} entries committed",
                )
            held = at_index.get(op.index)
            if held is None or (held.client, held.seq) != (op.client, op.seq):
                what = f"c{held.client}#{held.seq} {held.kind}" if held else "a no-op"
                raise InvariantViolation(
                    "client-put-wrong-entry", f"{op.describe()}: index {op.index} holds {what}"
                )
            if where is None:
                raise InvariantViolation("client-put-lost", f"{op.describe()} never took effect")
            if op.result != where.result:
                raise InvariantViolation(
                    "client-write-result",
                    f"{op.describe()}: told {op.result}, but it took effect at {where.index} "
                    f"with result {where.result}",
                )
            continue
        if not op.completed:
            continue
        k = bisect_left(done_t, op.invoke_t)  # those that completed strictly before
        bound = seen_max[k - 1] if k else 0
        if op.index < bound:
            raise InvariantViolation(
                "client-stale-read",
                f"{op.describe()}: read index {op.index} < {bound}, which completed before it began",
            )
        if op.served_at < op.index:
            raise InvariantViolation(
                "client-read-early",
                f"{op.describe()}: served at applied {op.served_at} < read index {op.index}",
            )
        if op.served_at > last:
            raise InvariantViolation(
                "client-read-uncommitted",
                f"{op.describe()}: served at {op.served_at} > {last} committed entries",
            )
        want = value_at(op.key, op.served_at)
        if op.value != want:
            raise InvariantViolation(
                "client-read-value",
                f"{op.describe()}: the model has {op.key}={want} at index {op.served_at}",
            )
