"""A tiny in-test network of RawNodes over MemoryStorage, following the Ready contract exactly.

Not a fault simulator (that is rkv/sim): messages are delivered in FIFO order, and a test can
cut links, hold messages, or inspect what each Ready carried.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from rkv.raft.config import Config
from rkv.raft.rawnode import RawNode
from rkv.raft.storage import MemoryStorage
from rkv.raft.types import (
    Entry,
    HardState,
    Message,
    MessageType,
    ReadState,
    Ready,
    Role,
    Snapshot,
)


@dataclass
class NodeBox:
    node: RawNode
    storage: MemoryStorage
    applied: list[Entry] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)
    reads: list[ReadState] = field(default_factory=list)
    readies: list[Ready] = field(default_factory=list)


def ids(n: int) -> tuple[str, ...]:
    return tuple(f"n{k}" for k in range(1, n + 1))


class Cluster:
    def __init__(self, n: int | Iterable[str] = 3, *, seed: int = 0, **cfg: object) -> None:
        self.ids = ids(n) if isinstance(n, int) else tuple(n)
        self.cfg = cfg
        self.seed = seed
        self.boxes: dict[str, NodeBox] = {}
        for k, i in enumerate(self.ids):
            st = MemoryStorage(voters=self.ids)
            self.boxes[i] = NodeBox(self._make(i, st, k), st)
        self.queue: deque[Message] = deque()
        self.cut: set[tuple[str, str]] = set()
        self.filter: Callable[[Message], bool] | None = None
        """If set, messages for which it returns False are dropped."""
        self.delivered: list[Message] = []

    def _make(self, i: str, st: MemoryStorage, k: int, applied: int = 0) -> RawNode:
        c = Config(id=i, voters=self.ids, applied=applied, **self.cfg)  # type: ignore[arg-type]
        return RawNode(c, st, random.Random(self.seed * 1000 + k))

    def __getitem__(self, i: str) -> RawNode:
        return self.boxes[i].node

    # -- driving ----------------------------------------------------------------------------

    def process(self, i: str) -> Ready | None:
        """Handle one Ready of node i as a runtime would."""
        b = self.boxes[i]
        if not b.node.has_ready():
            return None
        rd = b.node.ready()
        b.readies.append(rd)
        self._send(rd.messages)
        if rd.snapshot is not None:
            b.storage.apply_snapshot(rd.snapshot)
            b.snapshots.append(rd.snapshot)
        b.storage.append(rd.entries)
        if rd.hard_state is not None:
            b.storage.set_hard_state(rd.hard_state)
        self._send(rd.persisted_messages)
        b.applied.extend(rd.committed_entries)
        b.reads.extend(rd.read_states)
        b.node.advance(rd)
        return rd

    def _send(self, msgs: Iterable[Message]) -> None:
        for m in msgs:
            if (m.frm, m.to) in self.cut:
                continue
            if self.filter is not None and not self.filter(m):
                continue
            self.queue.append(m)

    def deliver_one(self) -> Message | None:
        if not self.queue:
            return None
        m = self.queue.popleft()
        if (m.frm, m.to) in self.cut or m.to not in self.boxes:
            return m
        self.delivered.append(m)
        self.boxes[m.to].node.step(m)
        return m

    def stabilize(self, max_steps: int = 100_000) -> None:
        for _ in range(max_steps):
            progressed = False
            for i in self.ids:
                if self.process(i) is not None:
                    progressed = True
            if self.queue:
                while self.queue:
                    self.deliver_one()
                progressed = True
            if not progressed:
                return
        raise AssertionError("cluster did not stabilize")

    def tick(self, i: str, n: int = 1) -> None:
        for _ in range(n):
            self.boxes[i].node.tick()

    def tick_all(self, n: int = 1, stabilize: bool = True) -> None:
        for _ in range(n):
            for i in self.ids:
                self.boxes[i].node.tick()
            if stabilize:
                self.stabilize()

    def elect(self, i: str) -> None:
        self[i].campaign()
        self.stabilize()
        assert self[i].status().role == Role.LEADER, self[i].status().describe()

    def propose(self, i: str, data: bytes) -> int:
        idx = self[i].propose(data)
        self.stabilize()
        return idx

    def isolate(self, i: str) -> None:
        for j in self.ids:
            if j != i:
                self.cut.add((i, j))
                self.cut.add((j, i))

    def partition(self, *groups: Iterable[str]) -> None:
        gs = [set(g) for g in groups]
        for a in self.ids:
            for b in self.ids:
                if a != b and not any(a in g and b in g for g in gs):
                    self.cut.add((a, b))

    def heal(self) -> None:
        self.cut.clear()

    def restart(self, i: str) -> None:
        """Crash-restart node i from its storage (unsent messages are lost)."""
        b = self.boxes[i]
        applied = b.applied[-1].index if b.applied else 0
        if b.snapshots:
            applied = max(applied, b.snapshots[-1].meta.index)
        self.queue = deque(m for m in self.queue if m.to != i and m.frm != i)
        b.node = self._make(i, b.storage, self.ids.index(i), applied=applied)

    # -- inspection -------------------------------------------------------------------------

    def leader(self) -> str | None:
        leaders = [i for i in self.ids if self[i].status().role == Role.LEADER]
        return leaders[-1] if leaders else None

    def applied_data(self, i: str) -> list[bytes]:
        return [e.data for e in self.boxes[i].applied if e.data]

    def sent(self, t: MessageType) -> list[Message]:
        return [m for m in self.delivered if m.type == t]


def node(
    id: str = "n1",
    voters: tuple[str, ...] = ("n1", "n2", "n3"),
    *,
    entries: list[Entry] | None = None,
    hs: HardState | None = None,
    seed: int = 0,
    **cfg: object,
) -> tuple[RawNode, MemoryStorage]:
    st = MemoryStorage(voters=voters, hard_state=hs)
    if entries:
        st.append(entries)
    c = Config(id=id, voters=voters, **cfg)  # type: ignore[arg-type]
    return RawNode(c, st, random.Random(seed)), st


def drain(n: RawNode, st: MemoryStorage) -> list[Message]:
    """Handle every Ready; return all messages in send order (immediate, then persisted)."""
    out: list[Message] = []
    while n.has_ready():
        rd = n.ready()
        out += rd.messages
        if rd.snapshot is not None:
            st.apply_snapshot(rd.snapshot)
        st.append(rd.entries)
        if rd.hard_state is not None:
            st.set_hard_state(rd.hard_state)
        out += rd.persisted_messages
        n.advance(rd)
    return out


def make_leader(
    entries: list[Entry] | None = None,
    term: int = 0,
    voters: tuple[str, ...] = ("n1", "n2", "n3"),
    **cfg: object,
) -> tuple[RawNode, MemoryStorage]:
    """n1 elected leader at term+1 with the given log (votes granted by hand); drained."""
    cfg.setdefault("pre_vote", False)
    n, st = node(voters=voters, entries=entries, hs=HardState(term=term), **cfg)
    n.campaign()
    drain(n, st)
    for v in voters[1:]:
        n.step(Message(MessageType.VOTE_RESP, to="n1", frm=v, term=term + 1))
        if n.status().role == Role.LEADER:
            break
    assert n.status().role == Role.LEADER
    drain(n, st)
    return n, st


def terms_log(terms: list[int]) -> list[Entry]:
    return [Entry(term=t, index=k) for k, t in enumerate(terms, start=1)]
