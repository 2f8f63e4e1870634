"""Client history: invocations and completions, and the check against a sequential model.

Owns: the record of every client operation (put or linearizable get) with its virtual invoke
and complete times, the Raft index it completed at, and its result; and `check_history`, which
replays the cluster's committed sequence through the same deterministic KV semantics and checks
each completed operation against it. Must not: drive the cluster or read node internals; it is
fed by the clients in rkv.sim.cluster and by the final committed sequence.

What a completed operation must satisfy:
- put: it took effect in the committed sequence (the model's sessions de-duplicate retries,
  so at most once; that each node's own state machine applied it once is checked as the
  cluster applies), and the index it was acknowledged at holds that very command (the
  original or a retry).
- get: the read index is at least the index of every put, and of every get's serving point,
  that completed before the get was invoked (real-time order), it was served at applied >=
  read index, and the value equals the model's value of the key at the serving index.
A put that never completed may or may not have taken effect, but at most once.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

from rkv.raft.types import Entry
from rkv.sim.invariants import InvariantViolation
from rkv.sim.statemachine import KVStateMachine, Put


@dataclass(slots=True)
class Operation:
    op_id: int
    client: int
    kind: str  # "put" | "get"
    key: str
    value: str | None  # put: the value written; get: the value read (after completion)
    invoke_t: int
    seq: int = 0  # put: the client's session sequence number
    complete_t: int | None = None
    index: int = 0  # put: index acknowledged at; get: the read index
    served_at: int = 0  # get: the applied index of the node when the read was served
    node: str = ""
    attempts: int = 0
    failed: bool = False  # gave up (indeterminate for a put)

    @property
    def completed(self) -> bool:
        return self.complete_t is not None

    def describe(self) -> str:
        state = f"ok@{self.index}" if self.completed else ("gave-up" if self.failed else "pending")
        what = f"{self.key}={self.value}" if self.kind == "put" else f"{self.key}->{self.value}"
        return f"op{self.op_id} c{self.client} {self.kind} {what} {state} on {self.node or '-'}"


@dataclass(slots=True)
class History:
    ops: list[Operation] = field(default_factory=list)

    def invoke(
        self, client: int, kind: str, key: str, value: str | None, t: int, seq: int = 0
    ) -> Operation:
        op = Operation(len(self.ops), client, kind, key, value, t, seq=seq)
        self.ops.append(op)
        return op

    def complete_put(self, op: Operation, t: int, index: int, node: str) -> None:
        op.complete_t, op.index, op.node = t, index, node

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


def check_history(history: History, committed: list[Entry]) -> None:
    """Check completed client operations against the sequential model built from `committed`
    (the cluster's committed entries, index 1..n in order). Raises InvariantViolation."""
    model = KVStateMachine()
    # per key: list of (index, value) changes, in index order
    changes: dict[str, list[tuple[int, str]]] = {}
    effective: dict[tuple[int, int], int] = {}  # (client, seq) -> index where it took effect
    at_index: dict[int, Put] = {}
    for e in committed:
        res = model.apply(e)
        if e.data:
            cmd = Put.decode(e.data)
            at_index[e.index] = cmd
            if res.effective:
                effective[(cmd.client, cmd.seq)] = e.index
                changes.setdefault(cmd.key, []).append((e.index, cmd.value))

    def value_at(key: str, index: int) -> str | None:
        v = None
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
        if prev.kind == "put":
            running = max(running, effective.get((prev.client, prev.seq), prev.index))
        else:
            running = max(running, prev.served_at)
        seen_max.append(running)
    for op in history.ops:
        if op.kind == "put":
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
                raise InvariantViolation(
                    "client-put-wrong-entry",
                    f"{op.describe()}: index {op.index} holds "
                    f"{held.describe() if held else 'a no-op'}",
                )
            if where is None:
                raise InvariantViolation("client-put-lost", f"{op.describe()} never took effect")
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
