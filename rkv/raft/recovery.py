"""Recovery of a voter whose storage is new: it may have forgotten votes and log entries it gave.

Owns: the bookkeeping of one recovery (its nonce, the terms and logs its peers reported) and
the rules that decide whom the node may vote for meanwhile and when it is a voter like any
other again. Must not: send messages, change terms or touch the log (rkv.raft.core does, on
its word).

Why. Raft's safety assumes a voter never forgets its log or its vote. A node whose disk was
replaced and that is started again with its usual flags (`rkv serve --peers ...` on an empty
data dir) has forgotten both, and nothing on disk tells it from a node that never ran. With
one other node down, its empty log would vote for a candidate lacking acknowledged writes
(issue 20: a partitioned node and the replaced one elected a leader without them). So a
store is created `recovering` (HardState.recovering) and the node proves that it cannot
contradict what its earlier self promised before it acts as a voter:

1. It sends RECOVER (with a random nonce) to every other voter of its configuration until
   each answered. An answer carries the responder's current term and the (term, index) of
   its last log entry. Until then it drops every other message: an acknowledgement to a
   leader its earlier self had already deposed (a term it forgot) could commit a conflicting
   entry. Only answers that echo this recovery's nonce count: answers to an earlier life's
   RECOVER (still queued in a peer's link) say nothing about the time after the disk was
   replaced.
2. Let T be the largest term answered and L the most up-to-date log answered. If T is 0,
   no node ever left term 0: nothing was ever elected or voted, by its earlier self or
   anyone (a new cluster). It is done.
3. Else it moves to term T + 1 and follows leaders as usual (it acknowledges only what it
   really stored), does not campaign, and grants a vote only in a term above T, and only to
   a candidate whose log is at least as up to date as L (and its own). Once its own log is
   at least as up to date as L, it is a voter like any other.

Why this is safe (every other voter answered, after the disk was replaced):

- Votes. If its earlier self voted for X in term t, X was in term t or later before the
  replacement, so X's answer carries a term >= t and t <= T. The node votes only above T:
  never twice in a term. (Asking only a majority would not do: with 5 voters, X may be the
  one that did not answer, win term t with the earlier vote and one delayed vote, while the
  new self votes for another candidate of term t; hence every other voter.)
- Acknowledgements. Every entry e its earlier self acknowledged was sent by a leader X of
  some term t_x before the replacement; X held e from then on while it led t_x, and it could
  count that acknowledgement (commit e) only while it led t_x, so X's answer carries t_x or
  more (t_x <= T) and a log holding e, or X never counts it. Acknowledgements of the new self
  go only to leaders of terms above T, which never count one of the earlier self (a leader
  ignores responses of older terms, and starts its progress afresh when elected).
- Leaders keep e. Every leader W of a term above t_x holds e (by induction on the term).
  W's electing majority shares a voter with the majority that committed e. If that is a
  voter other than this node, it held e when it voted (Raft's own argument). If it is this
  node's new self, W's log is at least as up to date as L, so as X's answered log, whose last
  entry is of term >= t_x and at an index >= e's: if W's last term equals that log's last
  term, both entries come from that term's one leader and log matching gives W the entry at
  e's index; if it is larger, W's last entry came from a leader of a term above t_x, which
  holds e by induction and appended that entry after e. The same argument shows that once
  the node's own log is as up to date as L, it holds e (and no later leader removes it), so
  from then on Raft's usual vote check against its own log keeps e.

Assumptions (docs/operations.md, "Replaced disks"): at most one voter recovers at a time;
the configuration it knows (its `--peers` after a replaced disk) is the cluster's, so every
voter that could have counted its earlier self answers; and the network does not deliver,
after every other voter answered, a message its earlier self sent before the disk was
replaced (a TCP connection dies with the process that wrote to it).
"""

from __future__ import annotations

import random

from rkv.raft.types import NodeId

ANSWER_MARK = b"\x02"
"""An answer echoes the nonce followed by this byte. Answers of an rkv from before answers
carried a log position echo the nonce alone and are not counted: their missing position
would read as an empty log and let the node vote for a candidate lacking entries. In a
cluster that is being upgraded, a replaced disk waits until the other voters run this rkv."""


def needed(n: int) -> int:
    """Answers a recovering voter of an n-voter configuration needs: one from every other
    voter (the proof in the module docstring needs each voter that could have counted a vote
    or an acknowledgement of its earlier self; tests/raft/test_recovery.py shows two leaders
    in one term when a majority's answers are taken as enough)."""
    return max(n - 1, 0)


LogPos = tuple[int, int]
"""(term, index) of a log's last entry: tuples compare as Raft's "at least as up to date"."""


class Recovery:
    __slots__ = ("best_log", "elapsed", "logs", "nonce", "term", "terms")

    def __init__(self, rng: random.Random) -> None:
        self.nonce = rng.getrandbits(64).to_bytes(8, "big")
        self.elapsed = -1
        """Ticks since RECOVER was last sent (-1: never; the first tick sends it)."""
        self.terms: dict[NodeId, int] = {}
        """The largest term each other voter answered with."""
        self.logs: dict[NodeId, LogPos] = {}
        """The most up-to-date last entry each other voter answered with."""
        self.term: int | None = None
        """T, once every other voter answered (step 3), else None (step 1)."""
        self.best_log: LogPos = (0, 0)
        """L: the most up-to-date log answered, fixed with T."""

    def is_answer(self, context: bytes) -> bool:
        """A RECOVER_RESP's context: an answer to this recovery (ANSWER_MARK)."""
        return context == self.nonce + ANSWER_MARK

    @property
    def knows_term(self) -> bool:
        return self.term is not None

    def on_answer(self, frm: NodeId, term: int, last: LogPos) -> None:
        if self.term is not None:
            return  # T and L are fixed once decided: later answers change nothing
        if term > self.terms.get(frm, -1):
            self.terms[frm] = term
        if last > self.logs.get(frm, (0, 0)):
            self.logs[frm] = last

    def decide(self, me: NodeId, voters: tuple[NodeId, ...]) -> int | None:
        """Step 1's verdict: T once every other voter answered, else None."""
        if self.term is not None:
            return self.term
        # Not a voter of the configuration it knows (a learner): nothing it says is counted.
        # The only voter: nobody else can hold what it forgot.
        others = [v for v in voters if v != me] if me in voters else []
        if sum(v in self.terms for v in others) < needed(len(voters)) and others:
            return None
        self.term = max((self.terms.get(v, 0) for v in others), default=0)
        self.best_log = max((self.logs.get(v, (0, 0)) for v in others), default=(0, 0))
        return self.term

    def first_term(self) -> int:
        """The term it moves to once T is known: it acknowledges only leaders of terms above
        T, which never counted an acknowledgement of its earlier self."""
        assert self.term is not None
        return self.term + 1

    def may_vote(self, term: int, candidate_last: LogPos) -> bool:
        """Step 3: a vote in `term` for a candidate whose last entry is `candidate_last`."""
        return self.term is not None and term > self.term and candidate_last >= self.best_log

    def caught_up(self, own_last: LogPos) -> bool:
        """Step 3 ends: its own log is at least as up to date as L (its term is above T)."""
        return self.term is not None and own_last >= self.best_log
