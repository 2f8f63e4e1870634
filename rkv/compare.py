"""Replica comparison: every member's state hash at a common applied index.

Owns: the `state_hashes` request (a member's comparable (applied index, state hash) pairs:
rkv.store.state_hash.History), `compare` (the verdict on each member from everyone's pairs),
and `Comparer`: gathering every member's pairs (this node's from its store, the others' over
RPC), the `check` request (`rkv check`: a comparison on demand through any node), and the
leader's periodic comparison with its alarm (a warning naming each differing member, the
`rkv_replica_mismatch` metrics, the node's degraded flag until a comparison finds every
member agreeing again).
Must not: touch the raft loop or the store beyond `state_hashes()`, or repair anything.

The verdict: the newest index every member that answered holds a hash for (else the newest
held by the most members, at least two) is compared; the members whose hash is the strict
majority's "agree", the others "differ" (no strict majority: all compared members "differ",
as nobody can tell which is right). A member that holds no hash at that index (it lags by
more than the history a node keeps, or just restarted and has not applied anything yet) is
"not compared"; one that did not answer "unreachable". Nothing is compared at an index a
member has not applied, so writes may go on meanwhile.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import trio

from rkv.errors import BadRequest, RkvError
from rkv.protocol import CheckRequest, StateHashesRequest
from rkv.store import state_hash as sh

Frame = dict[str, Any]
Pairs = list[tuple[int, int]]
Call = Callable[[str, Frame, float], Awaitable[Frame]]
"""Send one request to a member (by id) and return its ok frame; raises on failure."""

AGREES = "agrees"
DIFFERS = "differs"
NOT_COMPARED = "not compared"
UNREACHABLE = "unreachable"


@dataclass(frozen=True, slots=True)
class MemberVerdict:
    node: str
    verdict: str
    index: int | None = None
    """The index compared at (None: not compared)."""
    hash: str | None = None
    """The member's state hash at `index` (hex)."""
    applied: int | None = None
    """The newest applied index the member reported."""
    reason: str = ""


def compare(answers: Mapping[str, Pairs | str]) -> tuple[int | None, list[MemberVerdict]]:
    """The index compared at and each member's verdict; `answers`: member -> its pairs, or
    why it did not answer."""
    held = {m: dict(a) for m, a in answers.items() if not isinstance(a, str)}
    count: Counter[int] = Counter(i for pairs in held.values() for i in pairs)
    index: int | None = None
    if held:
        everyone = [i for i, n in count.items() if n == len(held)]
        if everyone:
            index = max(everyone)
        else:
            most = max(count.values(), default=0)
            index = max((i for i, n in count.items() if n == most), default=None)
            if most < 2:
                index = None
        if len(held) < 2 and len(answers) > 1:
            index = None  # nobody to compare with (a single-member cluster compares itself)
    compared = {
        m: pairs[index] for m, pairs in held.items() if index is not None and index in pairs
    }
    votes = Counter(compared.values())
    top = votes.most_common(2)
    majority = None
    if len(answers) == 1 and compared:
        majority = top[0][0]  # a single-member cluster: nothing to disagree with
    elif top and top[0][1] * 2 > len(compared) and len(compared) >= 2:
        majority = top[0][0]
    out = []
    for m in sorted(answers):
        a = answers[m]
        if isinstance(a, str):
            out.append(MemberVerdict(m, UNREACHABLE, reason=a))
            continue
        applied = max(held[m], default=None)
        if m not in compared:
            out.append(
                MemberVerdict(m, NOT_COMPARED, applied=applied, reason=_why_not(held[m], index))
            )
            continue
        h = compared[m]
        if majority is not None and h == majority:
            out.append(MemberVerdict(m, AGREES, index, sh.hex_of(h), applied))
            continue
        why = (
            f"its state hash at index {index} differs from the majority's"
            if majority is not None
            else f"no majority among {len(compared)} members' state hashes at index {index}"
        )
        out.append(MemberVerdict(m, DIFFERS, index, sh.hex_of(h), applied, why))
    return index, out


def _why_not(pairs: Mapping[int, int], index: int | None) -> str:
    if index is None:
        return "no index held by two members that answered"
    if not pairs:
        return f"holds no state hash (comparing at {index})"
    return f"holds state hashes for {min(pairs)}..{max(pairs)} only, not for {index}"


def pairs_frame(node_id: str, pairs: Pairs) -> Frame:
    """The answer to a `state_hashes` request."""
    return {
        "t": "ok",
        "node": node_id,
        "hashes": [[i, sh.to_bytes(h)] for i, h in pairs],
    }


def pairs_from_frame(f: Frame) -> Pairs:
    raw = f.get("hashes")
    if not isinstance(raw, list):
        raise BadRequest("state_hashes answer: hashes must be a list")
    out = []
    for p in raw:
        if (
            not isinstance(p, list | tuple)
            or len(p) != 2
            or type(p[0]) is not int
            or not isinstance(p[1], bytes)
            or len(p[1]) != sh.HASH_BYTES
        ):
            raise BadRequest("state_hashes answer: each pair must be [index, 16 bytes]")
        out.append((p[0], sh.from_bytes(p[1])))
    return out


class Comparer:
    """One node's side of replica comparison (see the module docstring)."""

    def __init__(
        self,
        node_id: str,
        local: Callable[[], Pairs],
        members: Callable[[], Sequence[str]],
        call: Call,
        *,
        is_leader: Callable[[], bool],
        on_alarm: Callable[[str | None], None],
        log: logging.Logger,
        interval: float,
        timeout: float,
    ) -> None:
        self.node_id = node_id
        self._local = local
        self._members = members
        self._call = call
        self._is_leader = is_leader
        self._on_alarm = on_alarm
        self._log = log
        self.interval = interval
        self.timeout = timeout
        self.comparisons = 0
        """Comparisons run as the leader (periodic or on demand)."""
        self.mismatches = 0
        """Of those, the ones that found a member differing."""
        self.differing = 0
        """Members that differed at the last comparison run as the leader."""
        self.last_index: int | None = None
        self._reported: dict[str, str] = {}

    async def state_hashes(self, r: StateHashesRequest) -> Frame:
        """The `state_hashes` request: this node's pairs."""
        return pairs_frame(self.node_id, self._local())

    async def check(self, r: CheckRequest) -> Frame:
        """The `check` request: compare every member now."""
        index, verdicts = await self.run_once()
        return {
            "t": "ok",
            "node": self.node_id,
            "index": index,
            "members": [asdict(v) for v in verdicts],
        }

    async def gather(self) -> dict[str, Pairs | str]:
        """Every member's pairs (this node's own from its store), or why it did not answer."""
        answers: dict[str, Pairs | str] = {}

        async def ask(m: str) -> None:
            try:
                with trio.fail_after(self.timeout):
                    answers[m] = pairs_from_frame(
                        await self._call(m, StateHashesRequest().to_frame(), self.timeout)
                    )
            except trio.TooSlowError:
                answers[m] = f"no answer within {self.timeout:g} s"
            except RkvError as e:
                answers[m] = e.msg
            except OSError as e:
                answers[m] = str(e) or type(e).__name__

        async with trio.open_nursery() as nursery:
            for m in self._members():
                if m == self.node_id:
                    answers[m] = self._local()
                else:
                    nursery.start_soon(ask, m)
        # our own pairs are read last: the others' answers hold indexes at most this new
        if self.node_id in answers:
            answers[self.node_id] = self._local()
        return answers

    async def run_once(self) -> tuple[int | None, list[MemberVerdict]]:
        """Compare every member; as the leader, raise or clear the alarm."""
        index, verdicts = compare(await self.gather())
        if self._is_leader():
            self._alarm(index, verdicts)
        return index, verdicts

    def _alarm(self, index: int | None, verdicts: list[MemberVerdict]) -> None:
        differ = [v for v in verdicts if v.verdict == DIFFERS]
        self.comparisons += 1
        self.last_index = index
        self.differing = len(differ)
        if not differ:
            if self._reported:
                self._log.info("%s: replica comparison at index %s: all agree", self.node_id, index)
            self._reported = {}
            self._on_alarm(None)
            return
        self.mismatches += 1
        reported = {}
        for v in differ:
            reported[v.node] = v.hash or ""
            if self._reported.get(v.node) != v.hash:
                self._log.warning(
                    "%s: replica mismatch: member %s has state hash %s at index %s: %s",
                    self.node_id,
                    v.node,
                    v.hash,
                    index,
                    v.reason,
                )
        self._reported = reported
        names = ", ".join(v.node for v in differ)
        self._on_alarm(f"replica mismatch at index {index}: {names} differ(s)")

    async def run(self) -> None:
        """The leader's periodic comparison, every `interval` seconds (0: never)."""
        if not self.interval:
            await trio.sleep_forever()
        while True:
            await trio.sleep(self.interval)
            if not self._is_leader():
                if self.differing:  # the new leader compares (and raises its own alarm)
                    self.differing = 0
                    self._reported = {}
                    self._on_alarm(None)
                continue
            try:
                await self.run_once()
            except Exception:  # a bug here must not take the node down
                self._log.exception("%s: replica comparison failed", self.node_id)

    def statistics(self) -> dict[str, Any]:
        return {
            "comparisons": self.comparisons,
            "mismatches": self.mismatches,
            "differing": self.differing,
            "last_index": math.nan if self.last_index is None else self.last_index,
        }
