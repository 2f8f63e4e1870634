"""The pluggable state machine the simulated nodes apply committed entries to, and a small KV.

Owns: the `StateMachine` interface the cluster drives (apply one committed entry, report the
applied index, answer a read) and `KVStateMachine`, a deterministic put/get store with client
sessions so a retried write is applied once. Must not: know about the network, the core's
internals or the event loop. Its state, including `applied_index`, counts as durable and is
updated atomically with each apply, like the real store's apply transaction, so a crash keeps it
and a restart passes `Config(applied=sm.applied_index)`.

Command format (bytes in an entry): b"put\\0<client>\\0<seq>\\0<key>\\0<value>". An empty entry
is a leader's no-op. The real command semantics (rkv.store) can be plugged in behind the same
interface later.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol

from rkv.raft.types import Entry, EntryType


@dataclass(frozen=True, slots=True)
class Put:
    client: int
    seq: int
    key: str
    value: str

    def encode(self) -> bytes:
        return f"put\0{self.client}\0{self.seq}\0{self.key}\0{self.value}".encode()

    @staticmethod
    def decode(data: bytes) -> Put:
        kind, client, seq, key, value = data.decode().split("\0")
        if kind != "put":
            raise ValueError(f"unknown command {kind!r}")
        return Put(int(client), int(seq), key, value)

    def describe(self) -> str:
        return f"put {self.key}={self.value} (c{self.client}#{self.seq})"


@dataclass(frozen=True, slots=True)
class ApplyResult:
    index: int
    effective: bool
    """False for no-ops and for duplicates of an already applied (client, seq)."""
    client: int = -1
    seq: int = -1


class StateMachine(Protocol):
    @property
    def applied_index(self) -> int: ...

    def apply(self, entry: Entry) -> ApplyResult:
        """Apply one committed entry (index == applied_index + 1), durably and atomically."""
        ...

    def get(self, key: str) -> str | None: ...


class KVStateMachine:
    """A dict of str -> str with per-client sessions (last applied seq per client)."""

    __slots__ = ("_applied", "data", "sessions")

    def __init__(self) -> None:
        self._applied = 0
        self.data: dict[str, str] = {}
        self.sessions: dict[int, int] = {}

    @property
    def applied_index(self) -> int:
        return self._applied

    def apply(self, entry: Entry) -> ApplyResult:
        if entry.index != self._applied + 1:
            raise ValueError(f"apply out of order: {entry.index} after {self._applied}")
        self._applied = entry.index
        if entry.type != EntryType.NORMAL or not entry.data:
            return ApplyResult(entry.index, False)
        cmd = Put.decode(entry.data)
        # Clients number writes 1, 2, ... and have one write outstanding at a time, so any seq
        # at or below the last applied one is a retry of a write that already took effect.
        if self.sessions.get(cmd.client, 0) >= cmd.seq:
            return ApplyResult(entry.index, False, cmd.client, cmd.seq)
        self.sessions[cmd.client] = cmd.seq
        self.data[cmd.key] = cmd.value
        return ApplyResult(entry.index, True, cmd.client, cmd.seq)

    def get(self, key: str) -> str | None:
        return self.data.get(key)

    # -- snapshots (log compaction; see Cluster._maybe_compact) -------------------------------

    def snapshot(self) -> bytes:
        """The whole state at applied_index, deterministically encoded."""
        sessions = {str(c): s for c, s in self.sessions.items()}
        return json.dumps([self._applied, self.data, sessions], sort_keys=True).encode()

    def restore(self, blob: bytes) -> None:
        """Replace the state by a snapshot (a follower installing the leader's)."""
        applied, data, sessions = json.loads(blob)
        self._applied = applied
        self.data = dict(data)
        self.sessions = {int(c): s for c, s in sessions.items()}
