"""Checks of the nemesis' watchers and lock holders (`--watchers`, `--locks`).

Owns: `WatchLog` (what one watcher saw: its events and the revision ranges it covered),
`FenceAttempt` (one write of a lock holder to the fenced store), and the two judges:
- `check_watchers(ops, logs, end_rev)`: every acknowledged put / swapped cas of the history
  appears in every watcher's stream exactly once, on its key, with its value, unless that
  watcher provably could not see it (its revision falls in a gap the watcher skipped after
  a Compacted and restarted from a scan); any value (acknowledged or not) at most once per
  stream; each stream in revision order (no (revision, key) twice); a value is at the same
  revision and key in every stream; no event carries a value nobody wrote.
- `check_fence(attempts, final_token)`: the tokens the fenced store accepted never go
  backwards in revision order (so no two holders' accepted writes interleave), and the
  store's final token is the highest accepted one, or one of a write of unknown outcome.
Must not: run anything (rkv.nemesis.coord runs the watchers and holders).

Values are unique in the nemesis workload (`<client>.<n>`), so a write is traced to its
event by its value. A write's revision is known when some watcher saw it; a write no
watcher saw is missing from every watcher whose coverage is complete (no gap, through the
end revision), and "unplaced" (not checkable) for the others. Deletes carry no value:
they are checked only by the ordering rules.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from rkv.sim.linearizability import Operation, OpKind

MAX_PROBLEMS = 50
"""Problems kept per check (the counts go on)."""


@dataclass(slots=True)
class WatchLog:
    """One watcher's record. `segments`: (first, through) revision ranges it covered, each
    from a watch start (the revision after its scan, or after the last it covered) through
    the last revision it was told about (an event or a progress); a gap between two
    segments is what it skipped after a Compacted (it re-read the prefix by a scan there)."""

    name: str
    events: list[tuple[int, str, bytes, bytes | None]] = field(default_factory=list)
    """(revision, type, key, value) in the order received."""
    segments: list[list[int]] = field(default_factory=list)
    compacted: int = 0
    restarts: int = 0
    """Watches started again (after a Compacted, from a scan; or after Unavailable, from
    where it was, without a gap)."""

    def start(self, first: int) -> None:
        self.segments.append([first, first - 1])

    def saw(self, rev: int) -> None:
        seg = self.segments[-1]
        seg[1] = max(seg[1], rev)

    @property
    def through(self) -> int:
        return self.segments[-1][1] if self.segments else 0

    def covers(self, rev: int) -> bool:
        return any(lo <= rev <= hi for lo, hi in self.segments)

    def complete(self, end_rev: int) -> bool:
        """No gap between its segments, and through `end_rev`."""
        for (_, hi), (lo, _) in zip(self.segments, self.segments[1:], strict=False):
            if lo > hi + 1:
                return False
        return bool(self.segments) and self.through >= end_rev


@dataclass(frozen=True, slots=True)
class WatchVerdict:
    problems: list[str]
    events: int
    checked_writes: int
    unplaced: int
    """(write, watcher) pairs not checkable: no watcher saw the write and this one had a gap."""
    skipped: int
    """(write, watcher) pairs excused: the write's revision is in this watcher's gap."""


def _value_and_key(op: Operation, acknowledged: bool) -> tuple[bytes, bytes] | None:
    """(value, key) of a put or cas that took effect (`acknowledged`) or may have (else:
    also unknown outcomes). A cas answered False wrote nothing; failed writes are not in
    the history at all."""
    if op.return_time is None and acknowledged:
        return None
    if op.kind is OpKind.PUT:
        value = op.input
    elif op.kind is OpKind.CAS and (op.output is True or op.return_time is None):
        value = op.input[1]
    else:
        return None
    if isinstance(value, bytes) and isinstance(op.key, bytes):
        return value, op.key
    return None


def acknowledged_values(ops: Sequence[Operation]) -> dict[bytes, bytes]:
    """value -> key of every acknowledged put and swapped cas."""
    return dict(vk for op in ops if (vk := _value_and_key(op, True)) is not None)


def _written_values(ops: Sequence[Operation]) -> dict[bytes, bytes]:
    return dict(vk for op in ops if (vk := _value_and_key(op, False)) is not None)


def check_watchers(
    ops: Sequence[Operation], logs: Sequence[WatchLog], end_rev: int
) -> WatchVerdict:
    problems: list[str] = []

    def bad(text: str) -> None:
        if len(problems) < MAX_PROBLEMS:
            problems.append(text)

    written = _written_values(ops)
    place: dict[bytes, tuple[int, bytes]] = {}
    seen: list[set[bytes]] = []
    for log in logs:
        last = 0
        pairs: set[tuple[int, bytes]] = set()
        values: Counter[bytes] = Counter()
        for rev, typ, key, value in log.events:
            if rev < last:
                bad(f"watcher {log.name}: event at revision {rev} after one at {last}")
            last = max(last, rev)
            if (rev, key) in pairs:
                bad(f"watcher {log.name}: key {key!r} twice at revision {rev}")
            pairs.add((rev, key))
            if not log.covers(rev):
                bad(f"watcher {log.name}: event at revision {rev} outside what it watched")
            if typ != "put" or value is None:
                continue
            values[value] += 1
            if values[value] == 2:
                bad(f"watcher {log.name}: value {value!r} of key {key!r} seen twice")
            if value not in written:
                bad(f"watcher {log.name}: key {key!r} = {value!r} was never written")
            elif written[value] != key:
                bad(f"watcher {log.name}: {value!r} on key {key!r}, written to {written[value]!r}")
            prior = place.setdefault(value, (rev, key))
            if prior != (rev, key):
                bad(f"watchers disagree: {value!r} at {prior} and at {(rev, key)}")
        seen.append(set(values))
    acked = acknowledged_values(ops)
    unplaced = skipped = 0
    for value, key in sorted(acked.items()):
        at = place.get(value)
        for log, vals in zip(logs, seen, strict=True):
            if value in vals:
                continue
            if at is not None:
                if log.covers(at[0]):
                    bad(
                        f"watcher {log.name}: acknowledged {key!r} = {value!r} (revision "
                        f"{at[0]}) missing"
                    )
                else:
                    skipped += 1
            elif log.complete(end_rev):
                bad(
                    f"watcher {log.name}: acknowledged {key!r} = {value!r} missing (no "
                    "watcher saw it)"
                )
            else:
                unplaced += 1
    for log in logs:
        if log.through < end_rev:
            bad(f"watcher {log.name}: stopped at revision {log.through}, before {end_rev}")
    return WatchVerdict(
        problems,
        sum(len(log.events) for log in logs),
        len(acked),
        unplaced,
        skipped,
    )


@dataclass(frozen=True, slots=True)
class FenceAttempt:
    """One fenced write: `holder`'s `token`; `late`: tried after its lock was released or
    lost (as a holder woken from a long pause would); `outcome` "accepted", "refused" or
    "unknown" (the txn gave up); `revision` of the txn (0 if unknown)."""

    holder: str
    token: int
    late: bool
    outcome: str
    revision: int = 0


def check_fence(attempts: Sequence[FenceAttempt], final_token: int | None) -> list[str]:
    problems: list[str] = []
    accepted = sorted((a for a in attempts if a.outcome == "accepted"), key=lambda a: a.revision)
    high: FenceAttempt | None = None
    done: set[int] = set()
    for a in accepted:
        if high is not None and a.token < high.token:
            problems.append(
                f"stale token accepted: {a.holder}'s token {a.token} at revision {a.revision} "
                f"after {high.holder}'s {high.token} at revision {high.revision}"
            )
        if high is not None and a.token != high.token:
            done.add(high.token)
        if a.token in done:
            problems.append(
                f"critical sections overlap: token {a.token} accepted again at revision "
                f"{a.revision} after another token's write"
            )
        if high is None or a.token >= high.token:
            high = a
        if len(problems) >= MAX_PROBLEMS:
            break
    if high is not None:
        unknown = {a.token for a in attempts if a.outcome == "unknown"}
        ok = final_token == high.token or (
            final_token in unknown and final_token is not None and final_token > high.token
        )
        if not ok:
            problems.append(
                f"fenced store ends with token {final_token}, highest accepted {high.token}"
            )
    return problems
