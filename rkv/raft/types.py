"""Value types of the Raft core: entries, messages, hard/soft state, snapshots, Ready.

Owns: the shapes every other layer exchanges with the core. Everything here is a frozen,
slotted dataclass (or an enum) so it can be hashed, compared and logged deterministically.
Because the core builds and compares them per message: the hot dataclasses get a cheaper,
equivalent `__init__` (`_fast_init`), and the enum members read per message also exist as
plain constants (`MT.APPEND`, `LEADER`, `CONF_CHANGE`; Python 3.11 looks members up slowly).
Must not: do I/O, know about msgpack/LMDB/trio, or hold behaviour beyond small pure helpers
(`describe()` for traces, size estimates).
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from enum import IntEnum
from typing import Any, TypeVar

NodeId = str
"""A stable node identity (by default the node's advertised address, e.g. "127.0.0.1:50051")."""

NONE: NodeId = ""
"""The absent node id: no vote cast, no leader known."""

_T = TypeVar("_T")


def _fast_init(cls: type[_T]) -> type[_T]:
    """Give a frozen, slotted dataclass an `__init__` that stores through its slot descriptors.

    The generated one calls `object.__setattr__` per field (a frozen class must bypass its own
    `__setattr__`), which makes a Message cost ~3 µs to build, and the core builds one per
    message and a Ready per step. This one has the same signature, defaults and result, in
    about half the time. For classes whose fields all have plain defaults (or none) and no
    `__post_init__`."""
    params = []
    ns: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        if not f.init or f.default_factory is not MISSING or hasattr(cls, "__post_init__"):
            raise TypeError(f"{cls.__name__}.{f.name}: _fast_init needs plain fields")
        if f.default is MISSING:
            params.append(f.name)
        else:
            ns[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
        ns[f"_set_{f.name}"] = getattr(cls, f.name).__set__
    body = "".join(f"    _set_{f.name}(self, {f.name})\n" for f in fields(cls))  # type: ignore[arg-type]
    exec(f"def __init__(self, {', '.join(params)}):\n{body}", ns)
    init = ns["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__doc__ = cls.__init__.__doc__
    cls.__init__ = init  # type: ignore[method-assign]
    return cls


class EntryType(IntEnum):
    NORMAL = 0
    """A state-machine command (opaque bytes); an empty NORMAL entry is a leader's no-op."""
    CONF_CHANGE = 1
    """A membership change: `data` is an encoded rkv.raft.confchange.ConfChangeEntry."""


NORMAL = EntryType.NORMAL
CONF_CHANGE = EntryType.CONF_CHANGE
"""EntryType's members as module constants (fast on 3.11, see MT)."""


@_fast_init
@dataclass(frozen=True, slots=True)
class Entry:
    term: int
    index: int
    data: bytes = b""
    type: EntryType = EntryType.NORMAL

    def size(self) -> int:
        """Approximate bytes on the wire, used for per-message size caps."""
        return len(self.data) + 16

    def describe(self) -> str:
        kind = "" if self.type == EntryType.NORMAL else f" {self.type.name}"
        body = "noop" if not self.data and self.type == EntryType.NORMAL else f"{len(self.data)}B"
        return f"{self.index}@{self.term}{kind} {body}"


class MessageType(IntEnum):
    # elections
    PRE_VOTE = 1
    PRE_VOTE_RESP = 2
    VOTE = 3
    VOTE_RESP = 4
    # replication
    APPEND = 5
    APPEND_RESP = 6
    HEARTBEAT = 7
    HEARTBEAT_RESP = 8
    SNAPSHOT = 9
    # linearizable reads: a follower forwards a read to the leader, which answers with an index
    READ_INDEX = 10
    READ_INDEX_RESP = 11
    # leadership transfer: the leader tells a caught-up target to campaign at once
    TIMEOUT_NOW = 12
    # a voter whose storage is new asks for terms and a leader's commit (rkv.raft.recovery)
    RECOVER = 13
    RECOVER_RESP = 14


# Python 3.11 reads an Enum member through EnumType.__getattr__'s slow path (~150 ns for
# MessageType.APPEND, ~30 ns for a plain class attribute), and the core compares message types
# and roles on every message and tick. So the hot paths name the members through these: the
# same member objects, as plain class attributes (MT) and module constants (roles).


class MT:
    """MessageType's members, as plain class attributes (MT.APPEND is MessageType.APPEND)."""

    PRE_VOTE = MessageType.PRE_VOTE
    PRE_VOTE_RESP = MessageType.PRE_VOTE_RESP
    VOTE = MessageType.VOTE
    VOTE_RESP = MessageType.VOTE_RESP
    APPEND = MessageType.APPEND
    APPEND_RESP = MessageType.APPEND_RESP
    HEARTBEAT = MessageType.HEARTBEAT
    HEARTBEAT_RESP = MessageType.HEARTBEAT_RESP
    SNAPSHOT = MessageType.SNAPSHOT
    READ_INDEX = MessageType.READ_INDEX
    READ_INDEX_RESP = MessageType.READ_INDEX_RESP
    TIMEOUT_NOW = MessageType.TIMEOUT_NOW
    RECOVER = MessageType.RECOVER
    RECOVER_RESP = MessageType.RECOVER_RESP


@_fast_init
@dataclass(frozen=True, slots=True)
class ConfState:
    """A cluster configuration: who votes, and who only receives the log (learners).

    Both tuples are sorted and disjoint. An empty ConfState means "not known yet": a node
    that joins an existing cluster starts with it and learns its configuration from the log
    or a snapshot."""

    voters: tuple[NodeId, ...] = ()
    learners: tuple[NodeId, ...] = ()

    def members(self) -> tuple[NodeId, ...]:
        return tuple(sorted(self.voters + self.learners))

    def is_empty(self) -> bool:
        return not self.voters and not self.learners

    def describe(self) -> str:
        s = "voters=" + ",".join(self.voters)
        if self.learners:
            s += " learners=" + ",".join(self.learners)
        return s


@_fast_init
@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    index: int = 0
    term: int = 0
    voters: tuple[NodeId, ...] = ()
    learners: tuple[NodeId, ...] = ()

    @property
    def conf(self) -> ConfState:
        return ConfState(self.voters, self.learners)


@dataclass(frozen=True, slots=True)
class Snapshot:
    meta: SnapshotMeta = field(default_factory=SnapshotMeta)
    data: bytes = b""

    def is_empty(self) -> bool:
        return self.meta.index == 0


@_fast_init
@dataclass(frozen=True, slots=True)
class Message:
    """One Raft message. A single shape for all types, as in etcd's raftpb.Message.

    Field meaning by type:
    - VOTE/PRE_VOTE: `index`/`log_term` are the candidate's last log index/term.
      For PRE_VOTE, `term` is the term the candidate *would* campaign at (current + 1).
    - *_RESP to a vote: `reject` says whether it was granted.
    - APPEND: `index`/`log_term` are prevLogIndex/prevLogTerm, `entries` follow it, `commit`
      is the leader's commit index.
    - APPEND_RESP: on success `index` is the last index the follower now matches
      (prev + len(entries) as *sent*); on reject `index` is the rejected prevLogIndex,
      `reject_hint` the follower's hint index and `log_term` the term at that hint (0 if none).
    - HEARTBEAT: `commit` is min(leader commit, follower match); `context` carries a
      ReadIndex round id (empty when none).
    - HEARTBEAT_RESP: echoes `context`.
    - READ_INDEX: `context` is the request's opaque ctx. READ_INDEX_RESP: `index` is the
      read index, `context` the ctx; `reject` when the leader cannot serve it.
    - SNAPSHOT: `snapshot` is set.
    - RECOVER: `context` is the recovery's nonce (`term` is informative only).
      RECOVER_RESP: `context` is the nonce followed by rkv.raft.recovery.ANSWER_MARK; `term`
      is the responder's term, `log_term`/`index` the term and index of its last log entry.
      Neither changes a term.
    """

    type: MessageType
    to: NodeId
    frm: NodeId
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    context: bytes = b""
    snapshot: Snapshot | None = None

    def describe(self) -> str:
        parts = [f"{self.frm}->{self.to} {self.type.name} t{self.term}"]
        if self.type in (MessageType.APPEND, MessageType.VOTE, MessageType.PRE_VOTE):
            parts.append(f"last/prev={self.index}@{self.log_term}")
        elif self.index:
            parts.append(f"i{self.index}")
        if self.entries:
            parts.append(f"[{self.entries[0].index}..{self.entries[-1].index}]")
        if self.commit:
            parts.append(f"c{self.commit}")
        if self.reject:
            parts.append(f"REJECT hint={self.reject_hint}@{self.log_term}")
        if self.context:
            parts.append(f"ctx={self.context.hex()[:16]}")
        if self.snapshot is not None:
            parts.append(f"snap={self.snapshot.meta.index}@{self.snapshot.meta.term}")
        return " ".join(parts)


@_fast_init
@dataclass(frozen=True, slots=True)
class HardState:
    """What must be durable before dependent messages leave the node."""

    term: int = 0
    vote: NodeId = NONE
    commit: int = 0
    recovering: bool = False
    """The storage is new and may have forgotten votes and entries (rkv.raft.recovery): the
    node neither votes nor campaigns until it has caught up. Set when a bootstrap member's
    store is created; cleared by the core."""

    def describe(self) -> str:
        s = f"term={self.term} vote={self.vote or '-'} commit={self.commit}"
        return s + " recovering" if self.recovering else s


class Role(IntEnum):
    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3


FOLLOWER = Role.FOLLOWER
PRE_CANDIDATE = Role.PRE_CANDIDATE
CANDIDATE = Role.CANDIDATE
LEADER = Role.LEADER
"""Role's members as module constants (fast on 3.11, see MT)."""


@_fast_init
@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state for observers; never persisted."""

    leader: NodeId = NONE
    role: Role = Role.FOLLOWER

    def describe(self) -> str:
        return f"{self.role.name.lower()} leader={self.leader or '-'}"


@_fast_init
@dataclass(frozen=True, slots=True)
class ReadState:
    """A linearizable read became safe once the state machine has applied `index`."""

    index: int
    context: bytes

    def describe(self) -> str:
        return f"read ctx={self.context.hex()[:16]} at {self.index}"


@_fast_init
@dataclass(frozen=True, slots=True)
class Ready:
    """One batch of work the core hands to the runtime. See rkv.raft.rawnode for the contract."""

    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    entries: tuple[Entry, ...] = ()
    snapshot: Snapshot | None = None
    messages: tuple[Message, ...] = ()
    persisted_messages: tuple[Message, ...] = ()
    committed_entries: tuple[Entry, ...] = ()
    read_states: tuple[ReadState, ...] = ()

    @property
    def must_sync(self) -> bool:
        """True when something must be fsynced before `persisted_messages` may be sent."""
        return self.hard_state is not None or bool(self.entries) or self.snapshot is not None

    def describe(self) -> str:
        parts = []
        if self.soft_state is not None:
            parts.append(self.soft_state.describe())
        if self.hard_state is not None:
            parts.append(f"hs({self.hard_state.describe()})")
        if self.entries:
            parts.append(f"persist[{self.entries[0].index}..{self.entries[-1].index}]")
        if self.snapshot is not None:
            parts.append(f"snap@{self.snapshot.meta.index}")
        if self.messages:
            parts.append(f"send{len(self.messages)}")
        if self.persisted_messages:
            parts.append(f"send-after-sync{len(self.persisted_messages)}")
        if self.committed_entries:
            ce = self.committed_entries
            parts.append(f"apply[{ce[0].index}..{ce[-1].index}]")
        if self.read_states:
            parts.append(f"reads{len(self.read_states)}")
        return "Ready(" + " ".join(parts) + ")"


@dataclass(frozen=True, slots=True)
class ProgressStatus:
    """A leader's view of one member's replication (see rkv.raft.progress)."""

    id: NodeId
    match: int
    next: int
    state: str
    inflight: int
    paused: bool

    def describe(self) -> str:
        paused = " paused" if self.paused else ""
        return (
            f"{self.id}:{self.state.lower()} m{self.match} n{self.next} if{self.inflight}{paused}"
        )


@dataclass(frozen=True, slots=True)
class Status:
    """A snapshot of one node's Raft state for observers (CLI status, tests, traces)."""

    id: NodeId
    term: int
    vote: NodeId
    role: Role
    leader: NodeId
    commit: int
    applied: int
    last_index: int
    first_index: int
    lead_transferee: NodeId = NONE
    voters: tuple[NodeId, ...] = ()
    progress: tuple[ProgressStatus, ...] = ()
    """Per-member (voters and learners) replication state; only on a leader."""
    learners: tuple[NodeId, ...] = ()
    recovering: bool = False
    """The storage is new and the node does not vote yet (rkv.raft.recovery)."""

    def describe(self) -> str:
        s = (
            f"{self.id} {self.role.name.lower()} t{self.term} vote={self.vote or '-'} "
            f"leader={self.leader or '-'} log=[{self.first_index}..{self.last_index}] "
            f"commit={self.commit} applied={self.applied}"
        )
        if self.lead_transferee:
            s += f" transferring-to={self.lead_transferee}"
        if self.recovering:
            s += " recovering"
        if self.progress:
            s += " {" + ", ".join(p.describe() for p in self.progress) + "}"
        return s
