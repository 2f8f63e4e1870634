"""Majority arithmetic: committed index and vote outcome for one voter set.

Owns: pure functions over (voters, per-voter values). Must not: hold state or know about
progress tracking, terms or messages.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import IntEnum

from rkv.raft.types import NodeId


class VoteResult(IntEnum):
    PENDING = 0
    WON = 1
    LOST = 2


def majority(n: int) -> int:
    """Smallest number of voters that forms a majority of n."""
    return n // 2 + 1


def committed_index(voters: Iterable[NodeId], match: Mapping[NodeId, int]) -> int:
    """Largest index that a majority of voters has (absent voters count as 0).

    An empty voter set commits nothing (0).
    """
    acked = sorted((match.get(v, 0) for v in voters), reverse=True)
    if not acked:
        return 0
    return acked[majority(len(acked)) - 1]


def vote_result(voters: Iterable[NodeId], votes: Mapping[NodeId, bool]) -> VoteResult:
    """WON once a majority granted, LOST once a majority is out of reach, else PENDING.

    Votes from ids outside `voters` are ignored.
    """
    granted = rejected = missing = 0
    for v in voters:
        got = votes.get(v)
        if got is None:
            missing += 1
        elif got:
            granted += 1
        else:
            rejected += 1
    q = majority(granted + rejected + missing)
    if granted >= q:
        return VoteResult.WON
    if granted + missing >= q:
        return VoteResult.PENDING
    return VoteResult.LOST
