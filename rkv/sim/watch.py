"""The watch checks: every node's stream of changes (what its store recorded for watchers,
MemoryStore.take_changes) is in order, consistent with itself, agrees with every other node's,
and holds every acknowledged write exactly once.

Owns: `WatchChecker`, fed each node's changes right after each apply (rkv.sim.checks), told
of restarts and replaced disks, and asked at the end of a run to check the acknowledged
writes. Checks, by name (InvariantViolation):
- watch-order: within a node's stream revisions only go up (each revision's changes come
  together, once; a key or file changes at most once per revision), except that after a
  restart the entries past the durable applied index may be recorded again, identically;
- watch-prev: a change's previous value is the value the node's own stream last gave the
  key (unknown after a "reset", until the key changes again);
- watch-diverged: two nodes recorded different changes at the same revision;
- watch-missing: a node that applied a revision (not inside one of its reset gaps) recorded
  nothing there while another node did, or an acknowledged write is not in its stream
  exactly once with its value;
- watch-state: at the end, replaying a node's stream gives its store's values.
Must not: draw random numbers, schedule events or change the nodes (it only reads what the
stores recorded, and their values at the end).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import Protocol

from rkv.raft.types import NodeId
from rkv.sim.invariants import InvariantViolation
from rkv.store.commands import Change

_KEY_KINDS = ("put", "delete")

Group = tuple[Change, ...]
"""The changes of one revision, in the order the node recorded them."""


@dataclass(frozen=True, slots=True)
class AckedWrite:
    """A write a client was told took effect: at `revision`, `kind` ("put" or "delete") of
    `key` with `value` (puts)."""

    revision: int
    kind: str
    key: bytes
    value: bytes | None
    what: str  # for messages: the client operation


@dataclass(slots=True)
class _Stream:
    """One node's stream, across its lives."""

    groups: dict[int, Group] = field(default_factory=dict)
    last: int = 0
    """The newest revision of the current life (a reset's included)."""
    top: int = 0
    """The newest revision of any life."""
    replay_to: int = 0
    """Revisions up to this one were recorded by an earlier life: again only identically."""
    gaps: list[tuple[int, int]] = field(default_factory=list)
    """(lo, hi]: revisions a reset skipped (the node never applied them one by one)."""
    values: dict[bytes, bytes | None] = field(default_factory=dict)
    """key -> its value as the stream tells it (None: deleted)."""
    partial: bool = False
    """A reset happened: a key not in `values` has a value the stream does not know."""

    def in_gap(self, r: int) -> bool:
        return any(lo < r <= hi for lo, hi in self.gaps)


class WatchChecker:
    def __init__(self) -> None:
        self.streams: dict[NodeId, _Stream] = {}
        self.first: dict[int, tuple[Group, NodeId]] = {}
        """revision -> (its changes, the node that recorded them first)."""

    def _stream(self, node: NodeId) -> _Stream:
        s = self.streams.get(node)
        if s is None:
            s = self.streams[node] = _Stream()
        return s

    # -- feeding -------------------------------------------------------------------------------

    def feed(self, node: NodeId, changes: Sequence[Change]) -> None:
        """The changes `node`'s store recorded since the last feed, in order."""
        if not changes:
            return
        s = self._stream(node)
        for r, grp in groupby(changes, key=_revision):
            g = tuple(grp)
            if g[0].kind == "reset":
                for c in g:
                    self._reset(node, s, c)
            else:
                self._group(node, s, r, g)

    def _reset(self, node: NodeId, s: _Stream, c: Change) -> None:
        r = c.revision
        if r <= s.last:
            raise InvariantViolation(
                "watch-order", f"{node}: a reset at {r} after revision {s.last} in its stream"
            )
        s.gaps.append((s.last, r))
        s.last = r
        s.top = max(s.top, r)
        s.values = {}
        s.partial = True

    def _group(self, node: NodeId, s: _Stream, r: int, g: Group) -> None:
        if r <= s.last:
            raise InvariantViolation(
                "watch-order",
                f"{node}: revision {r} after revision {s.last} in its stream: {_show(g)}",
            )
        if any(c.kind == "reset" for c in g):
            raise InvariantViolation(
                "watch-order", f"{node}: a reset among the changes at {r}: {_show(g)}"
            )
        seen = set()
        for c in g:
            k = (c.kind in _KEY_KINDS, c.key)
            if k in seen:
                raise InvariantViolation(
                    "watch-order", f"{node}: {c.key!r} changes twice at revision {r}: {_show(g)}"
                )
            seen.add(k)
        if r <= s.replay_to and r in s.groups:
            if s.groups[r] != g:
                raise InvariantViolation(
                    "watch-order",
                    f"{node}: revision {r} recorded again differently after a restart: "
                    f"{_show(s.groups[r])} then {_show(g)}",
                )
        else:
            s.groups[r] = g
        s.last = r
        s.top = max(s.top, r)
        first = self.first.get(r)
        if first is None:
            self.first[r] = (g, node)
        elif first[0] != g:
            raise InvariantViolation(
                "watch-diverged",
                f"at revision {r}: {first[1]} recorded {_show(first[0])}, {node} {_show(g)}",
            )
        values = s.values
        for c in g:
            if c.kind not in _KEY_KINDS:
                continue
            if c.key in values or not s.partial:
                want = values.get(c.key)
                if c.prev != want or (c.kind == "delete" and want is None):
                    raise InvariantViolation(
                        "watch-prev",
                        f"{node}: {_show((c,))} but its stream last gave {c.key!r} "
                        f"the value {want!r}",
                    )
            values[c.key] = c.value

    # -- lives ---------------------------------------------------------------------------------

    def restart(self, node: NodeId, applied: int) -> None:
        """`node` restarts from a store whose applied index is `applied`: the entries after it
        may be applied (and recorded) again."""
        s = self._stream(node)
        if applied < s.last:
            s.replay_to = max(s.replay_to, s.last)
            s.last = applied
            # the stream is ahead of the store: the values it gives are not the store's
            s.values = {}
            s.partial = True

    def replaced(self, node: NodeId) -> None:
        """`node`'s storage is gone: its new store starts empty, at revision 0."""
        s = self._stream(node)
        s.replay_to = max(s.replay_to, s.last)
        s.last = 0
        s.values = {}
        s.partial = False

    # -- the end -------------------------------------------------------------------------------

    def finish(self, acked: Iterable[AckedWrite], stores: Mapping[NodeId, _Store]) -> None:
        """Every node's stream against the others' and the acknowledged writes, and against
        its store's values (`stores`: each node's current store, every change it recorded
        fed)."""
        acked = list(acked)
        for node, s in self.streams.items():
            groups = s.groups
            for r, (g, other) in self.first.items():
                if r <= s.top and r not in groups and not s.in_gap(r):
                    raise InvariantViolation(
                        "watch-missing",
                        f"{node} applied revision {r} but recorded nothing there; "
                        f"{other} recorded {_show(g)}",
                    )
            for w in acked:
                if w.revision > s.top or (w.revision not in groups and s.in_gap(w.revision)):
                    continue
                hits = [c for c in groups.get(w.revision, ()) if c.key == w.key]
                if len(hits) != 1 or hits[0].kind != w.kind or hits[0].value != w.value:
                    raise InvariantViolation(
                        "watch-missing",
                        f"{node}'s stream has {_show(tuple(hits)) or 'nothing'} for "
                        f"{w.key!r} at revision {w.revision}, where {w.what} took effect",
                    )
            store = stores[node]
            for key, v in s.values.items():
                if store.get(key) != v:
                    raise InvariantViolation(
                        "watch-state",
                        f"{node}: its stream gives {key!r} the value {v!r}, "
                        f"its store {store.get(key)!r}",
                    )


class _Store(Protocol):
    """What finish() reads of a store (rkv.store.MemoryStore)."""

    def get(self, key: bytes) -> bytes | None: ...


def _revision(c: Change) -> int:
    return c.revision


def _show(g: Group) -> str:
    return ", ".join(
        f"{c.kind} {c.key!r}"
        + ("" if c.value is None else f"={c.value!r}")
        + ("" if c.prev is None else f" (prev {c.prev!r})")
        for c in g
    )
