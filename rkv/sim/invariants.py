"""Raft's safety properties, checked incrementally as the simulated cluster changes.

Owns: `SafetyChecker`, which the event loop feeds with every Ready it takes, every message a
node sends, every durable write and every apply, and which raises `InvariantViolation` the
moment a property breaks. Must not: drive nodes, consume randomness or look at wall time.

Each log is mirrored as prefix hashes (hash of the whole log up to an index), so comparing two
logs' prefixes, or a log with the committed sequence, is O(1); that is what makes checking
after every event affordable. Properties (names as reported):
- election-safety: at most one leader per term.
- log-matching: two logs (of any nodes, at any time) holding an entry with the same index and
  term hold identical entries up to it.
- leader-completeness: a leader of term T holds every entry committed by a leader of a term < T.
- state-machine-safety: nodes apply the same entry at each index (so of any two applied
  sequences one is a prefix of the other), in order, and only committed entries.
- committed-entry-changed / commit-beyond-log: a node's commit index covers entries of its own
  log, and those are the entries committed elsewhere.
- truncate-committed: no log ever removes a committed entry.
- term-regressed / commit-regressed / vote-changed: per node and life, and for durable state
  across restarts (a restarted node resumes from its durable hard state).
- vote-not-durable / ack-not-durable: a granted vote and an append ack leave the node only once
  the vote, or the acknowledged entries, are durable (Ready.persisted_messages).
- acked-not-committed: a proposal acknowledged to a client is the committed entry at its index.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence

from rkv.raft.types import FOLLOWER, LEADER, MT, Entry, HardState, Message, NodeId, Ready


class InvariantViolation(Exception):
    """A safety property failed. `invariant` is the short name, `detail` says where."""

    def __init__(self, invariant: str, detail: str) -> None:
        super().__init__(f"{invariant}: {detail}")
        self.invariant = invariant
        self.detail = detail


def entry_hash(e: Entry) -> int:
    return hash((e.term, e.data, int(e.type)))


class LogMirror:
    """Terms and prefix hashes of one log, 1-based (slot 0 is the empty prefix)."""

    __slots__ = ("ehash", "prefix", "terms")

    def __init__(self) -> None:
        self.terms: list[int] = [0]
        self.ehash: list[int] = [0]
        self.prefix: list[int] = [0]

    @property
    def last_index(self) -> int:
        return len(self.terms) - 1

    @staticmethod
    def prefix_of(terms: list[int], ehash: list[int], prefix: list[int], n: int) -> LogMirror:
        m = LogMirror()
        m.terms, m.ehash, m.prefix = terms[: n + 1], ehash[: n + 1], prefix[: n + 1]
        return m

    def copy(self) -> LogMirror:
        m = LogMirror()
        m.terms = self.terms.copy()
        m.ehash = self.ehash.copy()
        m.prefix = self.prefix.copy()
        return m

    def write(self, entries: Sequence[Entry]) -> tuple[int, int]:
        """Replace everything from entries[0].index on (the storage contract). Returns the first
        index whose entry was removed or changed (0 if nothing was lost) and the prefix hash
        the log had there before."""
        if not entries:
            return 0, 0
        first = entries[0].index
        if first < 1 or first > self.last_index + 1:
            raise InvariantViolation(
                "log-gap", f"write at {first} but the log ends at {self.last_index}"
            )
        old_last = self.last_index
        old_eh = self.ehash[first:]
        old_prefix = self.prefix[first:]
        del self.terms[first:], self.ehash[first:], self.prefix[first:]
        removed = 0
        for k, e in enumerate(entries):
            if e.index != first + k:
                raise InvariantViolation("log-gap", f"entries not contiguous at {e.index}")
            eh = entry_hash(e)
            if not removed and k < len(old_eh) and old_eh[k] != eh:
                removed = e.index
            self.terms.append(e.term)
            self.ehash.append(eh)
            self.prefix.append(hash((self.prefix[-1], eh)))
        if not removed and self.last_index < old_last:
            removed = self.last_index + 1
        return removed, (old_prefix[removed - first] if removed else 0)


class NodeTrack:
    """What the checker knows about one node: its log as the core sees it (`view`: durable plus
    taken-but-unpersisted entries), its durable log, hard state, role and applied index."""

    __slots__ = ("applied", "durable", "durable_hs", "hs", "leader", "role", "view")

    def __init__(self) -> None:
        self.view = LogMirror()
        self.durable = LogMirror()
        self.hs = HardState()
        self.durable_hs = HardState()
        self.role = FOLLOWER
        self.leader: NodeId = ""
        self.applied = 0


class SafetyChecker:
    def __init__(self, ids: Iterable[NodeId]) -> None:
        self.nodes: dict[NodeId, NodeTrack] = {i: NodeTrack() for i in ids}
        self.leaders: dict[int, NodeId] = {}
        # every (index, term) ever seen in a log -> prefix hash (log matching across time)
        self.entry_prefix: dict[tuple[int, int], int] = {}
        # the committed sequence: slot 0 is the empty prefix
        self.c_terms: list[int] = [0]
        self.c_ehash: list[int] = [0]
        self.c_prefix: list[int] = [0]
        self.c_commit_term: list[int] = [0]  # term of the leader that committed each index
        # the globally applied sequence (entry hashes), from whichever node applied first
        self.applied_seq: list[int] = [0]
        self.leader_changes = 0

    @property
    def committed_index(self) -> int:
        return len(self.c_terms) - 1

    # -- lifecycle ---------------------------------------------------------------------------

    def add_node(self, node: NodeId) -> None:
        """A node joined the cluster (membership changes): it starts with nothing."""
        self.nodes[node] = NodeTrack()

    def wipe(self, node: NodeId) -> None:
        """The node's storage was replaced: it has nothing, not even its terms and votes
        (what it promised before stays in the global records: leaders, the committed log)."""
        self.nodes[node] = NodeTrack()

    def restart(self, node: NodeId, applied: int) -> None:
        """The node crashed and came back: its volatile view is what was durable."""
        t = self.nodes[node]
        t.view = t.durable.copy()
        t.hs = t.durable_hs
        t.role = FOLLOWER
        t.leader = ""
        t.applied = applied

    # -- hooks -------------------------------------------------------------------------------

    def _committed_log(self, index: int, what: str) -> LogMirror:
        """The log a snapshot at `index` stands for: the committed prefix up to it."""
        if index > self.committed_index:
            raise InvariantViolation(
                "snapshot-not-committed",
                f"{what}: a snapshot at {index} but only {self.committed_index} is committed",
            )
        return LogMirror.prefix_of(self.c_terms, self.c_ehash, self.c_prefix, index)

    def on_snapshot_installed(self, node: NodeId, index: int) -> None:
        """The node durably replaced its log and state machine by a snapshot at `index`."""
        t = self.nodes[node]
        t.durable = self._committed_log(index, node)
        if index < t.applied:
            raise InvariantViolation(
                "state-machine-safety", f"{node} restores a snapshot at {index} after {t.applied}"
            )
        t.applied = index

    def on_ready(self, node: NodeId, rd: Ready) -> None:
        """A Ready was taken from `node` (before anything in it is persisted or sent)."""
        t = self.nodes[node]
        if rd.snapshot is not None and not rd.snapshot.is_empty():
            t.view = self._committed_log(rd.snapshot.meta.index, node)
        if rd.entries:
            removed, old_prefix = t.view.write(rd.entries)
            if removed:
                self._check_removal(node, t, removed, old_prefix)
            self._note_entries(node, t.view, rd.entries[0].index)
        if rd.hard_state is not None:
            hs = rd.hard_state
            old = t.hs
            if hs.term < old.term:
                raise InvariantViolation("term-regressed", f"{node} term {old.term} -> {hs.term}")
            if hs.commit < old.commit:
                raise InvariantViolation(
                    "commit-regressed", f"{node} commit {old.commit} -> {hs.commit}"
                )
            if hs.term == old.term and old.vote and hs.vote != old.vote:
                raise InvariantViolation(
                    "vote-changed", f"{node} vote in term {hs.term}: {old.vote} -> {hs.vote or '-'}"
                )
            t.hs = hs
            if hs.commit > old.commit:
                self._note_commit(node, t, hs.commit)
        if rd.soft_state is not None:
            t.role = rd.soft_state.role
            t.leader = rd.soft_state.leader
            if t.role == LEADER:
                term = t.hs.term
                other = self.leaders.get(term)
                if other is not None and other != node:
                    raise InvariantViolation(
                        "election-safety", f"{other} and {node} both leader in term {term}"
                    )
                if other is None:
                    self.leaders[term] = node
                    self.leader_changes += 1
        if t.role == LEADER:
            self._check_leader_complete(node, t)

    def on_send(self, node: NodeId, msg: Message) -> None:
        """`node` is sending `msg` now: what it promises must already be durable."""
        if msg.reject:
            return
        if msg.type == MT.VOTE_RESP:
            d = self.nodes[node].durable_hs
            # A durable later term also keeps the promise: the node never votes in msg.term
            # again (a grant and a newer term can leave in the same Ready).
            if d.term < msg.term or (d.term == msg.term and d.vote != msg.to):
                raise InvariantViolation(
                    "vote-not-durable",
                    f"{node} grants {msg.to} its vote in term {msg.term} but durably has "
                    f"term={d.term} vote={d.vote or '-'}",
                )
        elif msg.type == MT.APPEND_RESP:
            t = self.nodes[node]
            k = msg.index
            if (
                k > t.durable.last_index
                or k > t.view.last_index
                or t.durable.prefix[k] != t.view.prefix[k]
            ):
                raise InvariantViolation(
                    "ack-not-durable",
                    f"{node} acks index {k} to {msg.to} but its durable log ends at "
                    f"{t.durable.last_index} (or differs)",
                )

    def on_persisted(
        self, node: NodeId, hard_state: HardState | None, entries: Sequence[Entry]
    ) -> None:
        """One durable write of `node` completed."""
        t = self.nodes[node]
        if entries:
            t.durable.write(entries)
        if hard_state is not None:
            old = t.durable_hs
            if hard_state.term < old.term:
                raise InvariantViolation(
                    "term-regressed",
                    f"{node} durable term {old.term} -> {hard_state.term}",
                )
            if hard_state.commit < old.commit:
                raise InvariantViolation(
                    "commit-regressed",
                    f"{node} durable commit {old.commit} -> {hard_state.commit}",
                )
            if hard_state.term == old.term and old.vote and hard_state.vote != old.vote:
                raise InvariantViolation(
                    "vote-changed",
                    f"{node} durable vote in term {old.term}: {old.vote} -> {hard_state.vote or '-'}",
                )
            t.durable_hs = hard_state

    def on_applied(self, node: NodeId, e: Entry) -> None:
        t = self.nodes[node]
        if e.index != t.applied + 1:
            raise InvariantViolation(
                "state-machine-safety", f"{node} applies {e.index} after {t.applied}"
            )
        if e.index > t.hs.commit:
            raise InvariantViolation(
                "state-machine-safety",
                f"{node} applies {e.describe()} beyond its commit index {t.hs.commit}",
            )
        eh = entry_hash(e)
        if e.index < len(self.applied_seq):
            if self.applied_seq[e.index] != eh:
                raise InvariantViolation(
                    "state-machine-safety",
                    f"{node} applies {e.describe()}, another node applied a different entry there",
                )
        else:
            self.applied_seq.append(eh)
        if e.index > self.committed_index or self.c_ehash[e.index] != eh:
            raise InvariantViolation(
                "state-machine-safety",
                f"{node} applies {e.describe()}, which is not the committed entry",
            )
        t.applied = e.index

    def on_ack(self, index: int, term: int) -> None:
        """A proposal made at (index, term) was acknowledged to its client."""
        if index > self.committed_index or self.c_terms[index] != term:
            raise InvariantViolation(
                "acked-not-committed", f"acknowledged entry {index}@{term} is not committed"
            )

    # -- internals ---------------------------------------------------------------------------

    def _note_entries(self, node: NodeId, log: LogMirror, first: int) -> None:
        seen = self.entry_prefix
        for i in range(first, log.last_index + 1):
            key = (i, log.terms[i])
            p = seen.get(key)
            if p is None:
                seen[key] = log.prefix[i]
            elif p != log.prefix[i]:
                raise InvariantViolation(
                    "log-matching",
                    f"{node} holds entry {i}@{log.terms[i]} with a log prefix that differs "
                    "from another log holding the same index and term",
                )

    def _check_removal(self, node: NodeId, t: NodeTrack, removed: int, old_prefix: int) -> None:
        known = max(t.hs.commit, t.applied)
        if removed <= known:
            raise InvariantViolation(
                "truncate-committed",
                f"{node} removes entries from {removed} at or below its commit index {known}",
            )
        # Removing an entry the cluster committed, even if this node did not know it was: a
        # violation when the node was already in the committing leader's term (or later)
        # before this Ready. A node still in an older term may legally drop it: the leader of
        # that older term never held it, and the later leader committed it with a majority
        # this node's copy was not part of (the Ready may show the later term too, learned
        # after the removal: sim seed 9203218 on 5 nodes, at cc577c8).
        if (
            removed <= self.committed_index
            and old_prefix == self.c_prefix[removed]
            and self.c_commit_term[removed] <= t.hs.term
        ):
            raise InvariantViolation(
                "truncate-committed",
                f"{node} removes committed entry {removed}@{self.c_terms[removed]}; the cluster "
                f"committed up to {self.committed_index}",
            )

    def _note_commit(self, node: NodeId, t: NodeTrack, commit: int) -> None:
        log = t.view
        if commit > log.last_index:
            raise InvariantViolation(
                "commit-beyond-log", f"{node} commit {commit} > its last index {log.last_index}"
            )
        have = self.committed_index
        k = min(commit, have)
        if log.prefix[k] != self.c_prefix[k]:
            raise InvariantViolation(
                "committed-entry-changed",
                f"{node} commits up to {commit} but its log differs from the committed "
                f"sequence at or before {k}",
            )
        if commit > have:
            ct = max(t.hs.term, self.c_commit_term[-1])
            for i in range(have + 1, commit + 1):
                self.c_terms.append(log.terms[i])
                self.c_ehash.append(log.ehash[i])
                self.c_prefix.append(log.prefix[i])
                self.c_commit_term.append(ct)

    def _check_leader_complete(self, node: NodeId, t: NodeTrack) -> None:
        # the highest index committed by a leader of an earlier term than this one
        k = bisect_left(self.c_commit_term, t.hs.term) - 1
        if k <= 0:
            return
        if k > t.view.last_index or t.view.prefix[k] != self.c_prefix[k]:
            raise InvariantViolation(
                "leader-completeness",
                f"{node}, leader of term {t.hs.term}, lacks committed entry {k}@{self.c_terms[k]} "
                f"(its log ends at {t.view.last_index})",
            )
