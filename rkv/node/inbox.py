"""What flows into the raft loop and what it shows the other rooms.

Owns: `Waiter` (a request waiting on the raft loop), the inputs the loop takes from its one
bounded channel (`Input`), and `RaftView`, the read-only view of role, leader, term, commit,
applied and configuration the loop publishes after each Ready. Must not: hold state of its
own, or import anything of the node's other rooms.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from rkv.errors import RkvError
from rkv.raft.confchange import ConfChange
from rkv.raft.types import ConfState, Entry, Message, Role

log = logging.getLogger("rkv.node")

Frame = dict[str, Any]


@dataclass(eq=False, slots=True)
class Waiter:
    """A client request waiting on the raft loop (a proposal or a linearizable read)."""

    event: trio.Event = field(default_factory=trio.Event)
    entry: Entry | None = None
    result: Any = None
    error: RkvError | None = None
    deadline: float = math.inf
    """When the raft loop answers Timeout (request_timeout after the request arrived)."""
    what: str = "request not done"
    on_done: Callable[[Waiter], None] | None = None
    """Called (by the raft loop) when done, for a request that has no task waiting on `event`."""

    def done(self) -> bool:
        return self.event.is_set()

    def fail(self, err: RkvError) -> None:
        """Answer `err`, unless already answered."""
        if not self.event.is_set():
            self.error = err
            self.finish()

    def finish(self) -> None:
        self.event.set()
        if self.on_done is not None:
            try:
                self.on_done(self)
            except Exception:
                # A bug in answering one request must not stop the raft loop that calls this.
                log.exception("answering a request failed")


@dataclass(slots=True)
class Propose:
    data: bytes
    waiter: Waiter
    early: bool = False
    """Answer at commit, before apply (the result cannot fail: a put)."""


@dataclass(slots=True)
class Read:
    waiter: Waiter


@dataclass(slots=True)
class PeerMessages:
    messages: list[Message]


@dataclass(slots=True)
class Transfer:
    to: str
    waiter: Waiter


@dataclass(slots=True)
class MemberChange:
    change: ConfChange
    waiter: Waiter


@dataclass(slots=True)
class InstallSnapshot:
    """A SNAPSHOT message for a state staged in the store; `done` is set after the turn that
    stepped it (and so persisted the install, if the core accepted it) ended."""

    message: Message
    done: trio.Event


Input = Propose | Read | PeerMessages | Transfer | InstallSnapshot | MemberChange


@dataclass(frozen=True, slots=True)
class RaftView:
    """The raft loop's state as the other rooms may read it: published by the loop after each
    Ready (and after each store step that moves `applied`), never changed in place."""

    role: Role
    leader: str
    """The leader's id, "" when none is known."""
    leader_addr: str | None
    term: int
    commit: int
    applied: int
    last_index: int
    recovering: bool
    """New storage, not voting yet (rkv.raft.recovery)."""
    conf: ConfState
    """The configuration in force (as of the applied index)."""

    @property
    def leads(self) -> bool:
        return self.role == Role.LEADER
