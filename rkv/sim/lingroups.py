"""The linearizability search for a group of keys that transactions connect (rkv.sim.
linearizability splits a history into such groups; a key no txn touches keeps its own fast
search).

Owns: `check_group`, Wing & Gong's search with Lowe's just-in-time linearization and
memoisation of (linearized set, state), as in Porcupine, over the model of several registers:
the state is the tuple of the group's values, and each operation (get, put, delete, cas on
one key; txn: if its key holds `expected`, its key and its other keys take `new`) is one
atomic step. None of the single-register prunings apply here, so it is the plain search:
exact, and bounded by `max_steps` (then UNKNOWN, never a false OK). Operations with an
unknown outcome have no return event: the search may take them or leave them out, and
succeeds once every operation with a known outcome is linearized.
Must not: import anything but rkv.sim.linearizability and the standard library, do I/O, or
use hidden randomness.
"""

from __future__ import annotations

import math
import time as _time
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from rkv.sim.linearizability import KeyResult, Operation, OpKind, Verdict, event_list


class _Budget(Exception):
    pass


def _stepper(keys: Sequence[Hashable]) -> Any:
    pos = {k: i for i, k in enumerate(keys)}

    def step(op: Operation, state: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """The state after `op`, or None if `op` cannot give its output in `state`."""
        p = pos[op.key]
        cur = state[p]
        known = not op.unknown
        kind = op.kind
        if kind is OpKind.GET:
            return state if cur == op.output else None
        if kind is OpKind.PUT:
            return (*state[:p], op.input, *state[p + 1 :])
        if kind is OpKind.DELETE:
            if known and (cur is not None) != op.output:
                return None
            return (*state[:p], None, *state[p + 1 :])
        if kind is OpKind.CAS:
            exp, new = op.input
            swap = cur == exp
            if known and swap != op.output:
                return None
            return (*state[:p], new, *state[p + 1 :]) if swap else state
        exp, new, others = op.input
        ok = cur == exp
        if known and ok != op.output:
            return None
        if not ok:
            return state
        out = list(state)
        for k in (op.key, *others):
            out[pos[k]] = new
        return tuple(out)

    return step


def check_group(
    keys: tuple[Hashable, ...],
    ops: list[Operation],
    initial: Mapping[Hashable, Any],
    max_steps: int | None,
    deadline: float | None,
) -> KeyResult:
    """The verdict for the operations `ops` on the keys `keys` (every key an op touches),
    as a KeyResult whose key is the tuple `keys` and whose state is a {key: value} map."""
    step = _stepper(keys)
    n = len(ops)
    events: list[tuple[float, int, int]] = []
    for i, op in enumerate(ops):
        events.append((op.call_time, 0, i))
        if op.return_time is not None:
            events.append((op.return_time, 1, i))
    events.sort()
    el = event_list(events, n)
    nxt, node_op, is_call, match = el.nxt, el.node_op, el.is_call, el.match
    lift, unlift = el.lift, el.unlift

    state: tuple[Any, ...] = tuple(initial.get(k) for k in keys)
    known_left = sum(1 for op in ops if op.return_time is not None)
    linearized = 0
    seen: set[tuple[int, tuple[Any, ...]]] = set()
    stack: list[tuple[int, tuple[Any, ...]]] = []  # (call node taken, state before it)
    steps = 0
    limit = math.inf if max_steps is None else max_steps
    best: tuple[list[int], int, tuple[Any, ...], list[int]] | None = None
    e = nxt[0]
    try:
        while known_left:
            if e != -1 and is_call[e]:
                steps += 1
                if steps > limit or (deadline is not None and _time.monotonic() > deadline):
                    raise _Budget
                i = node_op[e]
                new = step(ops[i], state)
                if new is not None:
                    lin = linearized | (1 << i)
                    if (lin, new) not in seen:
                        seen.add((lin, new))
                        stack.append((e, state))
                        state, linearized = new, lin
                        lift(e)
                        if match[e] != -1:
                            known_left -= 1
                        e = nxt[0]
                        continue
                e = nxt[e]
                continue
            # a return event: its operation could not be placed before it; backtrack
            if best is None or len(stack) > len(best[0]):
                window = []
                f = nxt[0]
                while f != e:
                    window.append(node_op[f])
                    f = nxt[f]
                best = ([node_op[c] for c, _ in stack], node_op[e], state, window)
            if not stack:
                lin_ops, stuck, st, pend = best
                return KeyResult(
                    keys,
                    Verdict.ILLEGAL,
                    n,
                    steps,
                    linearization=tuple(ops[j] for j in lin_ops),
                    stuck=ops[stuck],
                    pending=tuple(ops[j] for j in pend),
                    state=dict(zip(keys, st, strict=True)),
                )
            c, state = stack.pop()
            linearized &= ~(1 << node_op[c])
            unlift(c)
            if match[c] != -1:
                known_left += 1
            e = nxt[c]
    except _Budget:
        return KeyResult(keys, Verdict.UNKNOWN, n, steps)
    return KeyResult(
        keys, Verdict.OK, n, steps, linearization=tuple(ops[node_op[c]] for c, _ in stack)
    )
