"""Judging a nemesis run: the recorded history and the nodes' final states.

Owns: `check_histories` (every key's history through the linearizability checker, each key
with its own time budget), `lost_acknowledged_writes` (a direct, checker-independent count of
acknowledged writes that a final linearizable read proves lost), and `compare_replicas`
(every node ends with the same commit/applied index and the same value of every key).
Must not: run processes or clients; it only looks at data handed to it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rkv.sim.linearizability import Operation, OpKind, Verdict, check_history


@dataclass(slots=True)
class HistoryCheck:
    """The verdict over all keys' histories."""

    histories: int = 0
    """Independent histories checked (one per key)."""
    operations: int = 0
    violations: list[str] = field(default_factory=list)
    """One description per key that is not linearizable."""
    inconclusive: list[str] = field(default_factory=list)
    """Keys whose search ran out of budget (never counted as a pass)."""

    @property
    def ok(self) -> bool:
        return not self.violations and not self.inconclusive


def check_histories(ops: Iterable[Operation], *, timeout_per_key: float = 60.0) -> HistoryCheck:
    """Check each key's operations on its own (keys are independent registers)."""
    by_key: dict[Hashable, list[Operation]] = defaultdict(list)
    for op in ops:
        by_key[op.key].append(op)
    out = HistoryCheck()
    for key in sorted(by_key, key=repr):
        res = check_history(by_key[key], timeout=timeout_per_key)
        out.histories += 1
        out.operations += len(by_key[key])
        for kr in res.keys.values():
            if kr.verdict is Verdict.ILLEGAL:
                out.violations.append(kr.describe())
            elif kr.verdict is Verdict.UNKNOWN:
                out.inconclusive.append(kr.describe())
    return out


def _written(op: Operation) -> Any:
    if op.kind is OpKind.PUT:
        return op.input
    if op.kind is OpKind.CAS:
        return op.input[1]
    return None


def lost_acknowledged_writes(ops: Sequence[Operation], final: Mapping[Any, Any]) -> list[str]:
    """Acknowledged writes that the final value of their key proves lost.

    Values are unique per write, so the final value names the write X that produced it.
    If X was acknowledged, every acknowledged write (put, delete, or cas that swapped) to
    that key invoked after X returned must have been ordered after X, so the final value
    cannot be X's: such writes are lost. A final value nobody wrote is reported too. (The
    linearizability check covers this and more once final reads are in the history; this
    count is a plain, independent statement of "acknowledged writes survived".)
    """
    by_key: dict[Hashable, list[Operation]] = defaultdict(list)
    for op in ops:
        by_key[op.key].append(op)
    lost: list[str] = []
    for key, value in final.items():
        if value is None:
            continue
        writers = [op for op in by_key.get(key, []) if op.kind in (OpKind.PUT, OpKind.CAS)]
        producers = [op for op in writers if _written(op) == value]
        if not producers:
            lost.append(f"key {key!r}: final value {value!r} was never written")
            continue
        x = producers[0]
        if x.return_time is None:
            continue
        for w in by_key[key]:
            acked = w.return_time is not None and (
                w.kind in (OpKind.PUT, OpKind.DELETE) or (w.kind is OpKind.CAS and w.output)
            )
            if acked and w is not x and w.call_time > x.return_time:
                lost.append(
                    f"key {key!r}: acknowledged {w.describe()} lost: final value is from "
                    f"{x.describe()}"
                )
    return lost


def compare_replicas(
    statuses: Mapping[str, Mapping[str, Any]],
    values: Mapping[str, Mapping[Any, Any]],
    expected_nodes: Sequence[str],
) -> list[str]:
    """Problems with the final replica states (empty: all nodes converged and agree).

    `statuses`: node -> status reply; `values`: node -> {key: value read with stale=true}.
    """
    problems: list[str] = []
    missing = [n for n in expected_nodes if n not in statuses or n not in values]
    if missing:
        problems.append(f"no final state from {', '.join(missing)}")
    idx = {
        n: (st.get("commit"), st.get("applied"), st.get("last_index")) for n, st in statuses.items()
    }
    if len(set(idx.values())) > 1:
        problems.append(
            "nodes differ in (commit, applied, last_index): "
            + ", ".join(f"{n}={v}" for n, v in sorted(idx.items()))
        )
    for n, (commit, applied, _) in idx.items():
        if commit != applied:
            problems.append(f"{n}: applied {applied} != commit {commit} after quiescing")
    keys = sorted({k for v in values.values() for k in v}, key=repr)
    for k in keys:
        seen = {n: v.get(k) for n, v in values.items()}
        if len(set(seen.values())) > 1:
            problems.append(
                f"key {k!r}: nodes disagree: "
                + ", ".join(f"{n}={v!r}" for n, v in sorted(seen.items()))
            )
    return problems
