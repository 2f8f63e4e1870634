"""Errors the Raft core raises to its caller.

Owns: ProposalDropped (a request the core could not take; retry elsewhere or later),
ConfChangeRefused (a membership change that must wait) and
LogSafetyError (an invariant of Raft was about to be broken: a bug, never a normal outcome).
Must not: carry I/O details; the runtime maps these to client errors.
"""

from __future__ import annotations

from rkv.raft.types import NONE, NodeId


class RaftError(Exception):
    """Base of the errors raised by rkv.raft."""


class ProposalDropped(RaftError):
    """The core did not accept a proposal or read: not leader, no leader, or transfer under way.

    `leader` is the leader this node knows of (NONE when unknown), so callers can redirect.
    """

    def __init__(self, reason: str, leader: NodeId = NONE) -> None:
        super().__init__(f"{reason} (leader={leader or '-'})")
        self.reason = reason
        self.leader = leader


class LogSafetyError(AssertionError, RaftError):
    """A Raft safety invariant would be violated (e.g. truncating a committed entry).

    An AssertionError on purpose: it signals a bug (or corrupted storage), and must stop the
    node loudly rather than be handled. Raised explicitly, so `python -O` does not remove it.
    """


class ConfChangeRefused(RaftError):
    """The leader will not take a membership change now: another change is not applied yet,
    or it has not committed an entry of its own term (the fix to single-server changes from
    Ongaro's 2015 raft-dev note). Retrying later is safe."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
