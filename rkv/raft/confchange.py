"""Membership changes: what one change may do, and how it is written into a log entry.

Owns: ConfChange (the operator's request: add a learner, promote a learner, remove a
member), the rule that a change alters at most one voter (single-server changes, thesis
§4.1), and the byte encoding of a CONF_CHANGE entry. The entry carries the whole resulting
configuration, not only the delta, so a node that joins with no configuration at all learns
the complete membership from the first change it applies. Must not: decide when a change
may be proposed (rkv.raft.core does) or do I/O.

Encoding (all integers big-endian): version byte 1, the op byte, the target id, then the
voters and the learners as a 2-byte count of ids; each id is a 2-byte length and UTF-8.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from rkv.raft.types import ConfState, NodeId

MAX_ID_BYTES = 255
MAX_MEMBERS = 1024
_VERSION = 1


class ConfChangeType(IntEnum):
    ADD_LEARNER = 1
    """Add a non-voting member that receives the log (a new node joins this way)."""
    PROMOTE = 2
    """Make a learner a voter."""
    REMOVE = 3
    """Remove a voter or a learner."""


class ConfChangeError(ValueError):
    """A change that cannot apply to the given configuration (or bytes that are no change)."""


@dataclass(frozen=True, slots=True)
class ConfChange:
    type: ConfChangeType
    node: NodeId

    def describe(self) -> str:
        return f"{self.type.name.lower()} {self.node}"


@dataclass(frozen=True, slots=True)
class ConfChangeEntry:
    """What a CONF_CHANGE entry holds: the change, and the configuration it results in."""

    change: ConfChange
    conf: ConfState


def check_id(node: NodeId) -> None:
    if not isinstance(node, str) or not node:
        raise ConfChangeError("a member id must be a non-empty string")
    if len(node.encode()) > MAX_ID_BYTES:
        raise ConfChangeError(f"member id longer than {MAX_ID_BYTES} bytes")


def apply_change(conf: ConfState, cc: ConfChange) -> ConfState:
    """The configuration after `cc`; raises ConfChangeError when `cc` does not fit `conf`."""
    check_id(cc.node)
    voters, learners = set(conf.voters), set(conf.learners)
    node = cc.node
    if cc.type == ConfChangeType.ADD_LEARNER:
        if node in voters or node in learners:
            raise ConfChangeError(f"{node} is already a member")
        learners.add(node)
    elif cc.type == ConfChangeType.PROMOTE:
        if node in voters:
            raise ConfChangeError(f"{node} is already a voter")
        if node not in learners:
            raise ConfChangeError(f"{node} is not a learner (add it first)")
        learners.discard(node)
        voters.add(node)
    elif cc.type == ConfChangeType.REMOVE:
        if node not in voters and node not in learners:
            raise ConfChangeError(f"{node} is not a member")
        if voters == {node}:
            raise ConfChangeError(f"cannot remove {node}: it is the only voter")
        voters.discard(node)
        learners.discard(node)
    else:  # pragma: no cover - IntEnum construction rejects other values
        raise ConfChangeError(f"unknown change type {cc.type}")
    if len(voters) + len(learners) > MAX_MEMBERS:
        raise ConfChangeError(f"more than {MAX_MEMBERS} members")
    return ConfState(tuple(sorted(voters)), tuple(sorted(learners)))


def _put_id(out: bytearray, node: str) -> None:
    b = node.encode()
    out += struct.pack(">H", len(b))
    out += b


def encode(e: ConfChangeEntry) -> bytes:
    out = bytearray((_VERSION, int(e.change.type)))
    _put_id(out, e.change.node)
    for ids in (e.conf.voters, e.conf.learners):
        out += struct.pack(">H", len(ids))
        for node in ids:
            _put_id(out, node)
    return bytes(out)


def decode(data: bytes) -> ConfChangeEntry:
    """Parse a CONF_CHANGE entry's data; raises ConfChangeError on anything malformed."""
    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        if pos + n > len(data):
            raise ConfChangeError("truncated conf change")
        b = data[pos : pos + n]
        pos += n
        return b

    def u16() -> int:
        return int(struct.unpack(">H", take(2))[0])

    def node_id() -> str:
        n = u16()
        if not 0 < n <= MAX_ID_BYTES:
            raise ConfChangeError("bad member id length")
        try:
            return take(n).decode()
        except UnicodeDecodeError:
            raise ConfChangeError("member id is not UTF-8") from None

    def ids() -> tuple[str, ...]:
        n = u16()
        if n > MAX_MEMBERS:
            raise ConfChangeError("too many members")
        return tuple(node_id() for _ in range(n))

    head = take(2)
    if head[0] != _VERSION:
        raise ConfChangeError(f"unknown conf change version {head[0]}")
    try:
        op = ConfChangeType(head[1])
    except ValueError:
        raise ConfChangeError(f"unknown conf change type {head[1]}") from None
    node = node_id()
    voters, learners = ids(), ids()
    if pos != len(data):
        raise ConfChangeError("trailing bytes after conf change")
    if list(voters) != sorted(set(voters)) or list(learners) != sorted(set(learners)):
        raise ConfChangeError("member lists must be sorted and unique")
    if set(voters) & set(learners) or not voters:
        raise ConfChangeError("a configuration needs voters, disjoint from learners")
    return ConfChangeEntry(ConfChange(op, node), ConfState(voters, learners))
