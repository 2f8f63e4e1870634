"""Linearizability checker for key-value histories (Porcupine-style, pure standard library).

Owns: the operation record, the sequential model of one key (a register with put, get,
delete and compare-and-swap), the search that decides whether a concurrent history is
linearizable, and a small recorder that builds histories from invoke/complete events.
Must not: import trio, msgpack, lmdb or any rkv layer, do I/O, or use hidden randomness.
The search is deterministic for a given input (the optional wall-clock ``timeout`` is the
only thing that can make two runs differ, and only by turning an answer into ``unknown``).

Model (per key; keys are independent, so the history is split by key and each part is
checked on its own):

========  ====================  =====================================================
kind      input                 output
========  ====================  =====================================================
put       value                 ignored (``None``)
get       ``None``              the current value, ``None`` if the key is absent
delete    ``None``              ``True`` iff the key existed (it is absent afterwards)
cas       ``(expected, new)``   ``True`` iff it swapped: iff current == expected, where
                                ``expected=None`` means "the key must be absent"
txn       ``(expected, new,     ``True`` iff it succeeded: iff current == expected (of
          others)``             ``key``); then ``key`` and every key of the tuple
                                ``others`` hold ``new``, at one point in time
========  ====================  =====================================================

A txn spans keys, so the keys it touches are checked together: the history is split into
groups of keys connected by txns, a group of one key without txns takes the fast search
below, a group with txns the general one (rkv.sim.lingroups: the same search without the
register-specific prunings, over the tuple of the group's values).

Values are any hashable, comparable objects (``bytes`` in rkv); ``None`` is reserved for
"absent", so it may not be put or be the ``new`` of a cas.

Time: ``call_time`` and ``return_time`` are numbers on one clock (wall clock or a logical
counter). Intervals are closed: operations whose intervals touch (one returns at t, the
other is invoked at t) are treated as concurrent, which can only accept more histories.
``return_time=None`` (or ``math.inf``) means the outcome is unknown (timeout, connection
lost): the operation may take effect at any moment after its invocation, or never, and
its ``output`` is ignored. Unknown reads constrain nothing and are dropped. An operation
that definitely did not happen (e.g. rejected before it was proposed) must be left out.

API::

    result = check_history(ops, max_steps=None, timeout=None, initial=None)
    result.ok / result.verdict (Verdict.OK | ILLEGAL | UNKNOWN) / result.keys[key]
    print(result.describe())       # on failure: the key, the deepest partial
                                   # linearization, the operation that could not be
                                   # placed and the operations pending at that point

    h = History()                  # recorder; times default to a logical counter
    op = h.invoke(client, "put", key, value)
    h.complete(op, None)           # or h.fail(op) (drop) / h.timeout(op) (unknown)
    h.check().ok

``max_steps`` bounds the model steps tried per key and ``timeout`` (seconds of wall
clock) the whole call; when either runs out the key's verdict is ``UNKNOWN``, never a
false ``OK``.

Algorithm: Wing & Gong's search with Lowe's just-in-time linearization and memoisation of
(set of linearized operations, model state), as in Porcupine (used by etcd's robustness
tests). Call and return events sit in a doubly linked list sorted by time; at each point
the candidates are the pending calls before the first pending return; the search tries
them depth-first and backtracks when none leads on. Unknown-outcome operations have no
return event, so they never force anything; the search succeeds once every operation with
a known outcome is linearized. Sound prunings and a candidate order keep typical
histories near-linear (see _check_key): a matching read-like op is taken at once,
writes whose value is read soonest go last, an unknown write observed by a read gets that
read's return as its deadline when no other op writes the same value, and unknown writes
are taken only right before an op that reads the value.

Cost: write unique values (per key) in tests; that makes checking fast and failures
clear. Hard cases are many unknown-outcome writes on one key under high concurrency,
with cas/delete; pass a budget so they end as ``UNKNOWN`` instead of running long.
"""

from __future__ import annotations

import math
import time as _time
from bisect import bisect_right
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


@dataclass(slots=True)
class EventList:
    """The search's doubly linked list of call and return events (Porcupine's dancing links):
    node 0 is the head sentinel, -1 the end; `node_op`/`node_time`/`is_call` say what each
    node is, `match` maps a call node to its return node (-1 if the outcome is unknown).
    `lift(c)` takes call c and its return out of the list, `unlift(c)` puts them back."""

    nxt: list[int]
    prv: list[int]
    node_op: list[int]
    node_time: list[float]
    is_call: list[bool]
    match: list[int]
    lift: Callable[[int], None]
    unlift: Callable[[int], None]


def event_list(events: list[tuple[float, int, int]], n: int) -> EventList:
    """The list of sorted `events` ((time, 0 = call / 1 = return, op index)) of `n` ops."""
    size = len(events) + 1
    nxt = [*range(1, size), -1]
    prv = [-1, *range(size - 1)]
    node_op = [-1] * size
    node_time: list[float] = [0] * size
    is_call = [False] * size
    match = [-1] * size
    call_node = [0] * n
    for pos, (t, is_ret, i) in enumerate(events, start=1):
        node_op[pos] = i
        node_time[pos] = t
        if is_ret:
            match[call_node[i]] = pos
        else:
            is_call[pos] = True
            call_node[i] = pos

    def lift(c: int) -> None:
        nxt[prv[c]] = nxt[c]
        if nxt[c] != -1:
            prv[nxt[c]] = prv[c]
        r = match[c]
        if r != -1:
            nxt[prv[r]] = nxt[r]
            if nxt[r] != -1:
                prv[nxt[r]] = prv[r]

    def unlift(c: int) -> None:
        r = match[c]
        if r != -1:
            nxt[prv[r]] = r
            if nxt[r] != -1:
                prv[nxt[r]] = r
        nxt[prv[c]] = c
        if nxt[c] != -1:
            prv[nxt[c]] = c

    return EventList(nxt, prv, node_op, node_time, is_call, match, lift, unlift)


class OpKind(StrEnum):
    PUT = "put"
    GET = "get"
    DELETE = "delete"
    CAS = "cas"
    TXN = "txn"


class Verdict(StrEnum):
    OK = "ok"
    ILLEGAL = "illegal"
    UNKNOWN = "unknown"
    """The budget ran out before the search decided; never treat as a pass."""


@dataclass(frozen=True, slots=True)
class Operation:
    """One client operation on one key, with its real-time interval."""

    client: Hashable
    kind: OpKind
    key: Hashable
    input: Any
    output: Any
    call_time: float
    return_time: float | None
    id: int | None = None
    """Optional caller-side identity (History sets it); shown by describe()."""

    def __post_init__(self) -> None:
        kind = OpKind(self.kind)
        object.__setattr__(self, "kind", kind)
        if self.return_time is not None and math.isinf(self.return_time):
            object.__setattr__(self, "return_time", None)
        if isinstance(self.call_time, float) and math.isnan(self.call_time):
            raise ValueError("call_time is NaN")
        if self.return_time is not None:
            if isinstance(self.return_time, float) and math.isnan(self.return_time):
                raise ValueError("return_time is NaN")
            if self.return_time < self.call_time:
                raise ValueError(f"return_time {self.return_time} < call_time {self.call_time}")
        if kind is OpKind.PUT and self.input is None:
            raise ValueError("put of None (None means absent; use delete)")
        if kind is OpKind.CAS:
            if not (isinstance(self.input, tuple) and len(self.input) == 2):
                raise ValueError("cas input must be the tuple (expected, new)")
            if self.input[1] is None:
                raise ValueError("cas new value None (None means absent)")
        if kind is OpKind.TXN:
            if not (
                isinstance(self.input, tuple)
                and len(self.input) == 3
                and isinstance(self.input[2], tuple)
            ):
                raise ValueError("txn input must be the tuple (expected, new, other keys)")
            if self.input[1] is None:
                raise ValueError("txn new value None (None means absent)")

    @property
    def keys(self) -> tuple[Hashable, ...]:
        """The keys it touches: its key, and a txn's other keys."""
        if self.kind is OpKind.TXN:
            return (self.key, *self.input[2])
        return (self.key,)

    @property
    def unknown(self) -> bool:
        """True if the outcome is unknown (it may or may not have taken effect)."""
        return self.return_time is None

    def describe(self, index: int | None = None) -> str:
        ident = self.id if self.id is not None else index
        who = f"#{ident} " if ident is not None else ""
        if self.kind is OpKind.PUT:
            call = f"put({self.key!r}, {self.input!r})"
            out = "ok"
        elif self.kind is OpKind.GET:
            call = f"get({self.key!r})"
            out = repr(self.output)
        elif self.kind is OpKind.DELETE:
            call = f"delete({self.key!r})"
            out = f"existed={self.output!r}"
        elif self.kind is OpKind.TXN:
            exp, new, _others = self.input
            call = f"txn(if {self.key!r}=={exp!r}: {', '.join(map(repr, self.keys))} := {new!r})"
            out = f"succeeded={self.output!r}"
        else:
            call = f"cas({self.key!r}, expected={self.input[0]!r}, new={self.input[1]!r})"
            out = f"swapped={self.output!r}"
        if self.unknown:
            return f"{who}client {self.client!r}: {call} -> ? (outcome unknown) [{self.call_time}, inf)"
        return (
            f"{who}client {self.client!r}: {call} -> {out} [{self.call_time}, {self.return_time}]"
        )


@dataclass(frozen=True, slots=True)
class KeyResult:
    """The verdict for one key, with a witness (OK) or the point where the search stuck."""

    key: Hashable
    verdict: Verdict
    operations: int
    """How many operations of this key were checked (unknown reads excluded)."""
    steps: int
    """Model steps the search tried."""
    linearization: tuple[Operation, ...] = ()
    """OK: one valid order (unknown-outcome ops absent from it never took effect).
    ILLEGAL: the longest partial linearization the search reached."""
    stuck: Operation | None = None
    """ILLEGAL: the operation that could not take effect before it returned."""
    pending: tuple[Operation, ...] = ()
    """ILLEGAL: the operations that were candidates to go next at that point."""
    state: Any = None
    """ILLEGAL: the key's value after `linearization` (None = absent)."""

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.OK

    def describe(self, context: int = 8) -> str:
        head = f"key {self.key!r}: {self.verdict.value} ({self.operations} ops, {self.steps} steps)"
        if self.verdict is Verdict.OK:
            return head
        if self.verdict is Verdict.UNKNOWN:
            return head + ": search budget exhausted before a decision"
        lines = [head + ": not linearizable"]
        n = len(self.linearization)
        lines.append(f"  deepest partial linearization: {n} operations; the last ones:")
        if n > context:
            lines.append(f"    ... {n - context} earlier operations")
        lines += [f"    {op.describe()}" for op in self.linearization[-context:]]
        lines.append(
            f"  leaving the value {self.state!r}" + (" (absent)" if self.state is None else "")
        )
        if self.stuck is not None:
            lines.append("  then this operation cannot take effect before it returns:")
            lines.append(f"    {self.stuck.describe()}")
        others = [op for op in self.pending if op is not self.stuck]
        if others:
            lines.append(
                "  other operations that could have gone next (none leads to a valid order):"
            )
            lines += [f"    {op.describe()}" for op in others]
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class CheckResult:
    verdict: Verdict
    keys: Mapping[Hashable, KeyResult] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.OK

    @property
    def unknown(self) -> bool:
        return self.verdict is Verdict.UNKNOWN

    @property
    def failures(self) -> list[KeyResult]:
        """Keys that are illegal, then keys left unknown."""
        bad = [r for r in self.keys.values() if r.verdict is Verdict.ILLEGAL]
        return bad + [r for r in self.keys.values() if r.verdict is Verdict.UNKNOWN]

    def describe(self) -> str:
        head = f"history {self.verdict.value}: {len(self.keys)} keys, " + (
            f"{sum(r.operations for r in self.keys.values())} ops"
        )
        return "\n".join([head, *(r.describe() for r in self.failures)])


_GET, _PUT, _DELETE, _CAS = 0, 1, 2, 3
_CODE = {OpKind.GET: _GET, OpKind.PUT: _PUT, OpKind.DELETE: _DELETE, OpKind.CAS: _CAS}


_NO_NEED = object()


class _BudgetExhausted(Exception):
    pass


def check_history(
    ops: Iterable[Operation],
    *,
    max_steps: int | None = None,
    timeout: float | None = None,
    initial: Mapping[Hashable, Any] | None = None,
) -> CheckResult:
    """Decide whether `ops` is linearizable w.r.t. the per-key register model.

    max_steps: model steps allowed per key (None: unbounded).
    timeout: wall-clock seconds for the whole call (None: unbounded).
    initial: values of keys before the history (default: every key absent).
    """
    deadline = None if timeout is None else _time.monotonic() + timeout
    by_key: dict[Hashable, list[Operation]] = {}
    group: dict[Hashable, Hashable] = {}  # union-find over the keys txns connect

    def root(k: Hashable) -> Hashable:
        while group.get(k, k) != k:
            k = group[k]
        return k

    txns = False
    for op in ops:
        if op.kind is OpKind.GET and op.unknown:
            continue
        by_key.setdefault(op.key, []).append(op)
        if op.kind is OpKind.TXN:
            txns = True
            for other in op.keys[1:]:
                a, b = root(op.key), root(other)
                if a != b:
                    group[b] = a
    init = initial or {}
    results: dict[Hashable, KeyResult] = {}
    if txns:
        from rkv.sim import lingroups  # here: it imports this module

        groups: dict[Hashable, list[Hashable]] = {}
        for key in by_key:
            groups.setdefault(root(key), []).append(key)
        for members in groups.values():
            g_ops = [op for k in members for op in by_key[k]]
            if len(members) == 1 and all(op.kind is not OpKind.TXN for op in g_ops):
                results[members[0]] = _check_key(
                    members[0], g_ops, init.get(members[0]), max_steps, deadline
                )
                continue
            g_keys = tuple(sorted({k for op in g_ops for k in op.keys}, key=repr))
            results[g_keys] = lingroups.check_group(g_keys, g_ops, init, max_steps, deadline)
        by_key = {}
    for key, key_ops in by_key.items():
        results[key] = _check_key(key, key_ops, init.get(key), max_steps, deadline)
    verdicts = {r.verdict for r in results.values()}
    if Verdict.ILLEGAL in verdicts:
        verdict = Verdict.ILLEGAL
    elif Verdict.UNKNOWN in verdicts:
        verdict = Verdict.UNKNOWN
    else:
        verdict = Verdict.OK
    return CheckResult(verdict, results)


def _bound_unknown_writes(
    ops: list[Operation], initial: Any
) -> tuple[list[Operation], list[float | None]]:
    """Tighten unknown-outcome writes where that is sound; returns (ops, return times).

    Unknown writes are what makes the search expensive: each stays pending to the end of
    the history and can be placed anywhere. Two sound reductions:
    - a value observed by a known-outcome op (a get returning it, a successful cas
      expecting it) and written by exactly one op u (not the initial value) must have
      been written by u before the observer returned: u gets that as its return time;
    - in a key with only puts and gets, an unknown put whose value no get returns can be
      dropped: wherever it took effect, no read saw it before the next put.
    """
    writers: dict[Any, int] = {}
    observed_by: dict[Any, float] = {}
    only_put_get = True
    for op in ops:
        if op.kind is OpKind.PUT:
            writers[op.input] = writers.get(op.input, 0) + 1
        elif op.kind is OpKind.CAS:
            writers[op.input[1]] = writers.get(op.input[1], 0) + 1
        if op.kind in (OpKind.CAS, OpKind.DELETE):
            only_put_get = False
        if op.return_time is None:
            continue
        if op.kind is OpKind.GET:
            seen = op.output
        elif op.kind is OpKind.CAS and op.output is True:
            seen = op.input[0]
        else:
            continue
        if seen not in observed_by or op.return_time < observed_by[seen]:
            observed_by[seen] = op.return_time
    kept: list[Operation] = []
    ret: list[float | None] = []
    for op in ops:
        r = op.return_time
        if r is None and op.kind in (OpKind.PUT, OpKind.CAS):
            v = op.input if op.kind is OpKind.PUT else op.input[1]
            if v in observed_by:
                if writers[v] == 1 and v != initial:
                    # An observer that returned before u was invoked makes the history
                    # illegal; clamping keeps the interval well-formed so the search says so.
                    r = max(observed_by[v], op.call_time)
            elif only_put_get:
                continue
        kept.append(op)
        ret.append(r)
    return kept, ret


def _check_key(
    key: Hashable,
    all_ops: list[Operation],
    initial: Any,
    max_steps: int | None,
    deadline: float | None,
) -> KeyResult:
    ops, eff_ret = _bound_unknown_writes(all_ops, initial)
    n = len(ops)
    kind = [_CODE[op.kind] for op in ops]
    arg_a = [op.input[0] if op.kind is OpKind.CAS else op.input for op in ops]
    arg_b = [op.input[1] if op.kind is OpKind.CAS else None for op in ops]
    out = [op.output for op in ops]
    unknown = [op.unknown for op in ops]
    # Observers: known-outcome ops that leave the value unchanged whenever their output
    # matches (get; delete -> False; cas -> False). If an observer matches now, taking it
    # now is as good as any later placement: it changes nothing, and none of its
    # real-time predecessors can still be pending (its call precedes every pending
    # return). So such an observer is the only child worth exploring.
    observer = [
        not op.unknown
        and (
            op.kind is OpKind.GET or (op.kind in (OpKind.DELETE, OpKind.CAS) and op.output is False)
        )
        for op in ops
    ]
    # Exploration order among writes (Lowe's search is complete in any order; a good
    # order avoids backtracking). Values nobody reads again are written first, then
    # values a pending read is waiting for, then values read in the future, soonest
    # first, so that the last write is the one whose value must survive. Ops with no
    # return event go last: they never force anything.
    obs_calls: dict[Any, list[float]] = {}
    for op in ops:
        if op.unknown:
            continue
        if op.kind is OpKind.GET:
            v = op.output
        elif op.kind is OpKind.CAS and op.output is True:
            v = op.input[0]
        else:
            continue
        obs_calls.setdefault(v, []).append(op.call_time)
    for calls_of_v in obs_calls.values():
        calls_of_v.sort()
    needs = [
        (op.output if op.kind is OpKind.GET else op.input[0])
        if not op.unknown
        and (op.kind is OpKind.GET or (op.kind is OpKind.CAS and op.output is True))
        else _NO_NEED
        for op in ops
    ]
    no_return = [r is None for r in eff_ret]
    order = sorted(range(n), key=lambda j: (no_return[j], eff_ret[j] or 0, j))
    rank = [0] * n
    for place, j in enumerate(order):
        rank[j] = place

    # Events: (time, 0=call/1=return, op). Calls sort before returns at equal times, so
    # touching intervals count as concurrent.
    events: list[tuple[float, int, int]] = []
    for i, op in enumerate(ops):
        events.append((op.call_time, 0, i))
        ret_time = eff_ret[i]
        if ret_time is not None:
            events.append((ret_time, 1, i))
    events.sort()

    # the search's locals (reading them through the EventList would cost an attribute each)
    el = event_list(events, n)
    nxt, node_op, node_time = el.nxt, el.node_op, el.node_time
    is_call, lift, unlift = el.is_call, el.lift, el.unlift

    steps = 0
    step_limit = math.inf if max_steps is None else max_steps

    # An op with no return event is optional: the search may leave it out. In some valid
    # order, each optional op that is taken changes the value and is followed at once by
    # an op that reads the value (get, cas, known delete): otherwise drop it from that
    # order and the rest still checks out. So only such orders are explored.
    reads_value = [
        kind[i] in (_GET, _CAS) or (kind[i] == _DELETE and not unknown[i]) for i in range(n)
    ]

    def children(state: Any, after_optional: bool) -> tuple[list[tuple[int, Any]], int] | None:
        """The pending calls that may go next, best first, with the state each leaves.

        None means no return event is left: every known-outcome op is linearized.
        Also returns the return node that bounds the window (for diagnostics).
        """
        nonlocal steps
        window: list[int] = []
        e = nxt[0]
        while e != -1 and is_call[e]:
            window.append(e)
            e = nxt[e]
        if e == -1:
            return None
        steps += len(window)
        if steps > step_limit:
            raise _BudgetExhausted
        if deadline is not None and _time.monotonic() > deadline:
            raise _BudgetExhausted
        if after_optional:
            window = [c for c in window if reads_value[node_op[c]]]
        wanted = set()
        for c in window:
            v = needs[node_op[c]]
            if v is not _NO_NEED and v != state:
                wanted.add(v)
        now = node_time[e]
        scored: list[tuple[bool, int, float, int, int, Any]] = []
        for c in window:
            i = node_op[c]
            k = kind[i]
            if k == _GET:
                if state == out[i]:
                    return [(c, state)], e
                continue
            if k == _PUT:
                new_state = arg_a[i]
            elif k == _DELETE:
                if not unknown[i] and (state is not None) != out[i]:
                    continue
                if observer[i]:
                    return [(c, state)], e
                new_state = None
            else:
                swap = state == arg_a[i]
                if not unknown[i] and swap != out[i]:
                    continue
                if observer[i]:
                    return [(c, state)], e
                new_state = arg_b[i] if swap else state
            if no_return[i] and new_state == state:
                continue
            if new_state in wanted:
                tier, when = 1, 0.0
            else:
                later = obs_calls.get(new_state)
                at = bisect_right(later, now) if later else 0
                if later and at < len(later):
                    tier, when = 2, later[at]
                else:
                    tier, when = 0, 0.0
            scored.append((no_return[i], tier, when, rank[i], c, new_state))
        scored.sort(key=_sort_key)
        return [(c, s) for _, _, _, _, c, s in scored], e

    # Memo: (linearized set, value, whether the last op taken was optional).
    seen: set[tuple[int, Any, bool]] = set()
    # DFS frames: (children, next child index, state, linearized set, optional flag,
    # call node taken)
    stack: list[tuple[list[tuple[int, Any]], int, Any, int, bool, int]] = []
    state = initial
    linearized = 0
    after_opt = False
    best_depth = -1
    best: tuple[list[int], int, list[int], Any] | None = None
    try:
        found = children(state, after_opt)
        idx = 0
        while found is not None:
            kids, bound = found
            while idx < len(kids):
                c, new_state = kids[idx]
                idx += 1
                i = node_op[c]
                new_lin = linearized | (1 << i)
                memo = (new_lin, new_state, no_return[i])
                if memo in seen:
                    continue
                seen.add(memo)
                stack.append((kids, idx, state, linearized, after_opt, c))
                lift(c)
                state = new_state
                linearized = new_lin
                after_opt = no_return[i]
                found = children(state, after_opt)
                idx = 0
                break
            else:
                # Every way on from this prefix is a dead end.
                if len(stack) > best_depth:
                    best_depth = len(stack)
                    pending = []
                    e = nxt[0]
                    while e != bound:
                        pending.append(node_op[e])
                        e = nxt[e]
                    best = ([node_op[f[5]] for f in stack], node_op[bound], pending, state)
                if not stack:
                    assert best is not None
                    lin, stuck, pend, st = best
                    return KeyResult(
                        key,
                        Verdict.ILLEGAL,
                        len(all_ops),
                        steps,
                        linearization=tuple(ops[j] for j in lin),
                        stuck=ops[stuck],
                        pending=tuple(ops[j] for j in pend),
                        state=st,
                    )
                kids, idx, state, linearized, after_opt, c = stack.pop()
                unlift(c)
                found = (kids, _return_bound(nxt, is_call))
    except _BudgetExhausted:
        return KeyResult(key, Verdict.UNKNOWN, len(all_ops), steps)
    return KeyResult(
        key, Verdict.OK, len(all_ops), steps, linearization=tuple(ops[node_op[f[5]]] for f in stack)
    )


def _sort_key(t: tuple[bool, int, float, int, int, Any]) -> tuple[bool, int, float, int]:
    return t[0], t[1], t[2], t[3]


def _return_bound(nxt: list[int], is_call: list[bool]) -> int:
    e = nxt[0]
    while e != -1 and is_call[e]:
        e = nxt[e]
    return e


class History:
    """Records operations as they are invoked and complete, for check_history().

    Times: pass `time` to every invoke/complete (one clock, e.g. time.monotonic()), or to
    none, in which case each event takes the next tick of an internal logical clock. The
    logical clock is exact when all events are recorded by one thread in real-time order
    (record the invocation before sending, the completion after the reply arrives).
    Operations still pending when operations() is called count as unknown outcomes.
    """

    __slots__ = ("_explicit", "_ops", "_tick")

    def __init__(self) -> None:
        # op id -> [client, kind, key, input, output, call, return, status]
        self._ops: list[list[Any]] = []
        self._tick = 0
        self._explicit: bool | None = None

    def _now(self, time: float | None) -> float:
        explicit = time is not None
        if self._explicit is None:
            self._explicit = explicit
        elif self._explicit != explicit:
            raise ValueError("pass a time to every History event or to none")
        if time is not None:
            return time
        self._tick += 1
        return self._tick

    def invoke(
        self,
        client: Hashable,
        kind: OpKind | str,
        key: Hashable,
        input: Any = None,
        time: float | None = None,
    ) -> int:
        """Record an invocation; returns the op id to pass to complete/fail/timeout."""
        kind = OpKind(kind)
        if kind is OpKind.CAS and isinstance(input, list):
            input = tuple(input)
        self._ops.append([client, kind, key, input, None, self._now(time), None, "pending"])
        return len(self._ops) - 1

    def _pending(self, op_id: int) -> list[Any]:
        rec = self._ops[op_id]
        if rec[7] != "pending":
            raise ValueError(f"operation {op_id} already {rec[7]}")
        return rec

    def complete(self, op_id: int, output: Any = None, time: float | None = None) -> None:
        """The operation returned `output` (see the model table in the module docstring)."""
        rec = self._pending(op_id)
        rec[4] = output
        rec[6] = self._now(time)
        if rec[6] < rec[5]:
            raise ValueError(f"operation {op_id} completes before it was invoked")
        rec[7] = "ok"

    def fail(self, op_id: int) -> None:
        """The operation definitely did not take effect: it is left out of the history."""
        self._pending(op_id)[7] = "failed"

    def timeout(self, op_id: int) -> None:
        """The outcome is unknown: it may have taken effect at any time after invocation."""
        self._pending(op_id)[7] = "unknown"

    def __len__(self) -> int:
        return len(self._ops)

    def operations(self) -> list[Operation]:
        result = []
        for op_id, (client, kind, key, inp, output, call, ret, status) in enumerate(self._ops):
            if status == "failed":
                continue
            if status != "ok":
                output, ret = None, None
            result.append(Operation(client, kind, key, inp, output, call, ret, id=op_id))
        return result

    def check(
        self,
        *,
        max_steps: int | None = None,
        timeout: float | None = None,
        initial: Mapping[Hashable, Any] | None = None,
    ) -> CheckResult:
        return check_history(
            self.operations(), max_steps=max_steps, timeout=timeout, initial=initial
        )
