"""Client commands and the sequential model the client history is checked against.

Owns: `ClientCommand` (what a simulated client asks for) and its encoding as rkv.codec
requests; the `StateMachine` interface of the history model (rkv.sim.history replays the
committed log through a fresh one: encode, apply one entry, applied index, read);
`StoreStateMachine`, the model over the real command semantics (rkv.store.MemoryStore:
sessions, put/cas/delete, exactly-once); and `KVStateMachine`, a small put-only toy with its
own sessions for tests of the model and checker. The simulated nodes themselves do not use
this module's state machines: they run Replica over a MemoryStore (rkv.sim.node). Must not:
know about the network, the core's internals or the event loop.

Toy command format (bytes in an entry): b"put\\0<client>\\0<seq>\\0<key>\\0<value>". An empty
entry is a leader's no-op.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from rkv import codec
from rkv.raft.types import Entry, EntryType
from rkv.store import MemoryStore
from rkv.txn import Compare, OpPut, TxnResult


@dataclass(frozen=True, slots=True)
class ClientCommand:
    """What a simulated client asks for, before a state machine encodes it into entry bytes.
    kind: "put" (value), "cas" (expected -> value; expected None: only if absent), "delete",
    "txn" (if key holds expected, or is absent for None: key and key2 take value); and the
    LEASE_KINDS."""

    kind: str
    client: int
    seq: int
    key: str
    value: str | None = None
    expected: str | None = None
    key2: str | None = None
    lease: int = 0
    """grant (0: the entry's index is its id), renew, revoke, lput: the lease."""
    ttl: int = 0
    """grant: the TTL in ms."""


LEASE_KINDS = ("grant", "renew", "revoke", "lput")
"""Lease client commands (rkv.sim.leases): grant, keep-alive, revoke, put attached to a
lease. Not part of the key-value history checks (their keys are a key space of their own)."""


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
    """False for no-ops, malformed commands and duplicates of an already applied (client, seq)."""
    client: int = -1
    seq: int = -1
    kind: str = ""
    """The command at this index ("put", "cas", "delete"; "" for a no-op or malformed)."""
    key: str = ""
    value: str | None = None
    """put: the value; cas: the new value."""
    result: bool | None = None
    """What the client is told: cas -> swapped, delete -> existed, txn -> succeeded, put ->
    None. For a duplicate, the session's remembered result of the original."""
    key2: str | None = None
    """txn: the other key it writes `value` to (with `key`) when it succeeds."""


class StateMachine(Protocol):
    @property
    def applied_index(self) -> int: ...

    def encode(self, cmd: ClientCommand) -> bytes:
        """The entry bytes of a client command."""
        ...

    def apply(self, entry: Entry) -> ApplyResult:
        """Apply one committed entry (index == applied_index + 1), durably and atomically."""
        ...

    def get(self, key: str) -> str | None: ...


def command_kinds(sm: object) -> tuple[str, ...]:
    """The write kinds a state machine can encode (a plain StateMachine: puts only)."""
    kinds: tuple[str, ...] = getattr(sm, "kinds", ("put",))
    return kinds


class KVStateMachine:
    """A dict of str -> str with per-client sessions (last applied seq per client); puts only."""

    __slots__ = ("_applied", "data", "sessions")
    kinds = ("put",)

    def __init__(self) -> None:
        self._applied = 0
        self.data: dict[str, str] = {}
        self.sessions: dict[int, int] = {}

    @property
    def applied_index(self) -> int:
        return self._applied

    def encode(self, cmd: ClientCommand) -> bytes:
        if cmd.kind != "put":
            raise ValueError(f"KVStateMachine only encodes puts, not {cmd.kind}")
        return Put(cmd.client, cmd.seq, cmd.key, cmd.value or "").encode()

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
            return ApplyResult(entry.index, False, cmd.client, cmd.seq, "put", cmd.key, cmd.value)
        self.sessions[cmd.client] = cmd.seq
        self.data[cmd.key] = cmd.value
        return ApplyResult(entry.index, True, cmd.client, cmd.seq, "put", cmd.key, cmd.value)

    def get(self, key: str) -> str | None:
        return self.data.get(key)


def txn_succeeded(res: object) -> bool | None:
    """Whether a txn's apply result (rkv.store.ApplyResult) says its compares held; None for
    an error result (nothing applied) or no result."""
    value = getattr(res, "value", None)
    if not getattr(res, "ok", False) or not isinstance(value, bytes):
        return None
    return TxnResult.from_wire(codec.unpack(value)).succeeded


def client_id(client: int) -> bytes:
    """The session id simulated client `client` uses in rkv.codec requests."""
    return b"c%d" % client


class StoreStateMachine:
    """The real command semantics: entries are rkv.codec requests applied by a MemoryStore
    (rkv.store.commands.apply_entries, the code the LMDB store runs), sessions included.

    Only the store's state-machine side matters here; the core's log lives in the sim's Disk.
    The store's own raft-log side holds just the last applied entry (appended before, and
    compacted after, each apply) so that `open_snapshot` knows the term of the applied index.
    Whether a write took effect is read back from the store, not recomputed: the store
    records a client's session (with the applying index) exactly when it executed the command.
    """

    __slots__ = ("store",)
    kinds = ("put", "cas", "delete", "txn")

    def __init__(self, store: MemoryStore | None = None) -> None:
        self.store = store if store is not None else MemoryStore("sim", "sim", ())

    @property
    def applied_index(self) -> int:
        return self.store.applied_index()

    def encode(self, cmd: ClientCommand) -> bytes:
        key = cmd.key.encode()
        command: codec.Command
        if cmd.kind == "put":
            command = codec.Put(key, (cmd.value or "").encode())
        elif cmd.kind == "cas":
            exp = None if cmd.expected is None else cmd.expected.encode()
            command = codec.Cas(key, exp, (cmd.value or "").encode())
        elif cmd.kind == "delete":
            command = codec.Delete(key)
        elif cmd.kind == "txn":
            value = (cmd.value or "").encode()
            cmp = (
                Compare(key, "version", "==", 0)
                if cmd.expected is None
                else Compare(key, "value", "==", cmd.expected.encode())
            )
            puts = (OpPut(key, value), OpPut((cmd.key2 or "").encode(), value))
            command = codec.Txn((cmp,), puts)
        elif cmd.kind == "grant":
            command = codec.LeaseGrant(cmd.lease, cmd.ttl)
        elif cmd.kind == "renew":
            command = codec.LeaseRenew(cmd.lease)
        elif cmd.kind == "revoke":
            command = codec.LeaseRevoke(cmd.lease)
        elif cmd.kind == "lput":
            command = codec.PutLease(key, (cmd.value or "").encode(), cmd.lease)
        else:
            raise ValueError(f"unknown command kind {cmd.kind!r}")
        return codec.encode_request(codec.Request(client_id(cmd.client), cmd.seq, command))

    def apply(self, entry: Entry) -> ApplyResult:
        st = self.store
        if entry.index != st.applied_index() + 1:
            raise ValueError(f"apply out of order: {entry.index} after {st.applied_index()}")
        st.save(None, (entry,))
        (res,) = st.apply((entry,))
        st.compact(entry.index)
        if entry.type != EntryType.NORMAL or not entry.data:
            return ApplyResult(entry.index, False)
        try:
            req = codec.decode_request(entry.data)
        except codec.CodecError:
            return ApplyResult(entry.index, False)  # the store's result is an error, too
        cid = req.client_id
        client = int(cid[1:]) if cid[:1] == b"c" and cid[1:].isdigit() else -1
        session = st.session(cid)
        effective = res.ok and (
            req.seq == 0 or (session is not None and session.index == entry.index)
        )
        cmd = req.command
        key = getattr(cmd, "key", b"")
        key = key.decode() if isinstance(key, bytes) else str(key)
        if isinstance(cmd, codec.Put):
            kind, value = "put", cmd.value.decode()
        elif isinstance(cmd, codec.Cas):
            kind, value = "cas", cmd.new.decode()
        elif isinstance(cmd, codec.Delete):
            kind, value = "delete", None
        else:
            kind, value = type(cmd).__name__, None
        result = res.value if isinstance(res.value, bool) else None
        key2 = None
        if isinstance(cmd, codec.Txn):
            # the sim's txns: one compare on `key`, puts of one value to `key` and `key2`
            first, second = cmd.success
            assert isinstance(first, OpPut) and isinstance(second, OpPut)
            kind, key, key2 = "txn", first.key.decode(), second.key.decode()
            value, result = first.value.decode(), txn_succeeded(res)
        return ApplyResult(entry.index, effective, client, req.seq, kind, key, value, result, key2)

    def get(self, key: str) -> str | None:
        v = self.store.get(key.encode())
        return None if v is None else v.decode()
