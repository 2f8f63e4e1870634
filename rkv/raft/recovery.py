"""Recovery of a voter whose storage is new: it may have forgotten votes and log entries it gave.

Owns: the bookkeeping of one recovery (its nonce, the terms its peers reported, the commit
index a current leader named) and the rule that decides when the node may act as a voter
again. Must not: send messages, change terms or touch the log (rkv.raft.core does, on its
word).

Why. Raft's safety assumes a voter never forgets its log or its vote. A node whose disk was
replaced and that is started again with its usual flags (`rkv serve --peers ...` on an empty
data dir) has forgotten both, and nothing on disk tells it from a node that never ran. With
one other node down, its empty log would vote for a candidate lacking acknowledged writes
(issue 20: a partitioned node and the replaced one elected a leader without them). So a
store is created `recovering` (HardState.recovering) and the node takes part in no election
and acknowledges nothing before it has proven that it cannot contradict what its earlier
self promised:

1. It sends RECOVER (with a random nonce) to the other voters of its configuration until
   answers from `needed(n)` of them arrived: so many that they share a node with every
   majority its earlier self was part of, this node excepted. Each answer carries the
   responder's current term; the largest is T. Until then it drops every other message: an
   acknowledgement to a leader its earlier self had already deposed (a term it forgot) could
   commit a conflicting entry.
2. If T is 0, no node of the cluster has ever left term 0: nothing was ever elected or
   committed, by its earlier self or anyone (a fresh cluster, or a fresh start). It is done.
3. Else it moves to term T and follows leaders as usual (it acknowledges what it really
   stored) but still neither votes nor campaigns, until a leader of term >= T named its
   commit index c (a leader answers RECOVER with c once it has committed an entry of its own
   term) and this node's log is committed up to c. Every entry committed with its earlier
   self's help was committed at term <= T and before the RECOVER was sent, so it is at or
   below c: the node now holds it, and may vote again.

Answers count only if they echo this recovery's nonce: answers to an earlier life's RECOVER
(still queued in a peer's link) say nothing about the terms after the disk was replaced.
The rule holds while at most one voter of a majority forgets at a time (as Raft's tolerates
a minority of crashes), with the configuration the node knows; docs/operations.md ("Replaced
disks") says what it does not cover.
"""

from __future__ import annotations

import random

from rkv.raft.types import NodeId


def needed(n: int) -> int:
    """Answers a recovering voter of an n-voter configuration needs from the others: enough
    to meet every majority that includes it in one other node (n - majority(n) + 1)."""
    return n - (n // 2 + 1) + 1


class Recovery:
    __slots__ = ("elapsed", "leader_commit", "nonce", "term", "terms")

    def __init__(self, rng: random.Random) -> None:
        self.nonce = rng.getrandbits(64).to_bytes(8, "big")
        self.elapsed = -1
        """Ticks since RECOVER was last sent (-1: never; the first tick sends it)."""
        self.terms: dict[NodeId, int] = {}
        """The largest term each other voter answered with."""
        self.term: int | None = None
        """T, once enough voters answered (phase 3), else None (phase 1)."""
        self.leader_commit: tuple[int, int] = (0, 0)
        """(term, commit) of the newest leader answer: the commit index a leader of `term`
        had when it answered, having committed an entry of its own term."""

    @property
    def knows_term(self) -> bool:
        return self.term is not None

    def on_answer(self, frm: NodeId, term: int, leader_commit: int) -> None:
        if term > self.terms.get(frm, -1):
            self.terms[frm] = term
        if leader_commit and term >= self.leader_commit[0]:
            self.leader_commit = (term, max(leader_commit, self.leader_commit[1]))

    def decide(self, me: NodeId, voters: tuple[NodeId, ...]) -> int | None:
        """Phase 1's verdict: T once enough of the other voters answered, else None."""
        if self.term is not None:
            return self.term
        others = [self.terms[v] for v in voters if v != me and v in self.terms]
        # Not a voter of the configuration it knows (a learner): nothing it says is counted.
        # The only voter: nobody else can hold what it forgot.
        need = needed(len(voters)) if me in voters and len(voters) > 1 else 0
        if len(others) < need:
            return None
        self.term = max(others, default=0)
        return self.term

    def target(self) -> int | None:
        """The commit index to reach (phase 3), once a leader of term >= T named one."""
        t, c = self.leader_commit
        if self.term is None or not c or t < self.term:
            return None
        return c
