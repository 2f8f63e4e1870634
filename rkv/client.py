"""The rkv client library: an async (trio) `Client` and a blocking `SyncClient` wrapper.

Owns: the client side of the client protocol (docs/contracts.md): address parsing, one
multiplexed `RpcClient` connection per node, leader discovery (following `not_leader`
hints and remembering the leader), retries with exponential backoff and jitter until an
overall deadline, write sessions (client id + sequence number, kept across retries so the
state machine applies a write once), chunked file upload/download with bounded memory and
SHA-256 verification, backups (downloads and backups share one pipelined chunk fetch; the
file format is rkv.backup_file's), and the cluster status view. Leases: rkv.client_leases;
scans (from a key, with records, all pages) and get_record: rkv.client_reads.

Must not: import the node runtime, the store, lmdb or the CLI, not even indirectly
(layering: client sits above net, config, codec and errors; tests/test_architecture.py
checks a fresh `import rkv.client`), print anything, or hold a whole file in memory.
"""

from __future__ import annotations

import hashlib
import os
import random
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import trio

from rkv.backup_file import CHUNK as BACKUP_CHUNK
from rkv.backup_file import BackupWriter
from rkv.client_leases import Lease as Lease  # re-exported: what lease_grant returns
from rkv.client_leases import LeaseCalls, SyncLeaseCalls, plain_errors
from rkv.client_leases import LeaseInfo as LeaseInfo  # re-exported: lease_time_to_live, list
from rkv.client_reads import ReadCalls, SyncReadCalls
from rkv.client_reads import as_bytes as _to_bytes
from rkv.client_reads import as_key as _key
from rkv.config import format_address, parse_address
from rkv.errors import (
    BadRequest,
    Compacted,
    IntegrityError,
    NotFound,
    NotLeader,
    RkvError,
    Timeout,
    Unavailable,
    from_error_frame,
)
from rkv.net import tls
from rkv.net.rpc import ConnectionLost, RemoteError, RpcClient, RpcTimeout
from rkv.protocol import (
    WRITE_KINDS,
    BackupBeginRequest,
    BackupEndRequest,
    BackupReadRequest,
    BadReply,
    CasRequest,
    CheckRequest,
    ClientRequest,
    DataReply,
    DeleteRequest,
    ExistedReply,
    FileAbortRequest,
    FileChunkRequest,
    FileCommitRequest,
    FileDeleteRequest,
    FileMetaReply,
    FileMetaRequest,
    FileReadRequest,
    MemberRequest,
    MembersRequest,
    RepairRequest,
    StatusReply,
    StatusRequest,
    SwappedReply,
    TransferRequest,
    TxnReply,
    TxnRequest,
    ValueReply,
    WatchReply,
    WatchRequest,
    WriteRequest,
)
from rkv.protocol import KeyRecord as KeyRecord  # re-exported: get_record, scan_records
from rkv.protocol import (
    WatchEvent as WatchEvent,  # re-exported: what Client.watch yields
)
from rkv.protocol.hot import get_frame, put_frame
from rkv.txn import (
    Compare,
    Op,
    OpAppend,
    OpDelete,
    OpDeletePrefix,
    OpGet,
    OpIncr,
    OpIncrFloat,
    OpPut,
    TxnError,
)
from rkv.txn import KeyValue as KeyValue  # re-exported: the result of a txn's get
from rkv.txn import TxnResult as TxnResult  # re-exported: what Client.txn returns

T = TypeVar("T")

DEFAULT_ADDRS: tuple[str, ...] = ("127.0.0.1:50051", "127.0.0.1:50052", "127.0.0.1:50053")
DEFAULT_CHUNK_SIZE = 1 << 20
MAX_CHUNK_SIZE = 8 << 20
"""Chunks travel in one frame; the default frame limit is 16 MiB, so stay well below it."""
ABORT_TIMEOUT = 5.0
"""Seconds a failed upload spends asking the cluster to drop its staged chunks."""
PIPELINE = 8
"""File chunks in flight at once (upload and download): bounds memory to ~PIPELINE chunks."""

Progress = Callable[[int, int | None], None]
"""progress(bytes_done, bytes_total or None when unknown)."""

# Error codes after which another attempt (same seq for writes) is safe and useful.
_RETRY_CODES = frozenset({"unavailable", "timeout", "not_leader"})
FAILED_RECENTLY = 10.0
"""Seconds during which an address that failed an attempt is not preferred again on a
forwarded write's leader hint."""
# Errors after which a watch goes on through another node (from the same revision).
_WATCH_RETRY_CODES = frozenset(
    {"unavailable", "timeout", "not_leader", "no_leader", "too_many_watchers", "idle_timeout"}
    | {"too_many_connections", "handshake_timeout", "frame_timeout"}
)
# Connection-level refusals from the RPC layer: the connection is gone, try another node.
_CONN_CODES = frozenset(
    {"too_many_connections", "handshake_timeout", "idle_timeout", "frame_timeout"}
)


def normalize_address(addr: str) -> str:
    """'host:port' / 'http://host:port' -> canonical 'host:port'; ValueError if invalid."""
    return format_address(*parse_address(addr))


def parse_addresses(addrs: str | Iterable[str]) -> list[str]:
    """A comma separated string or an iterable of addresses -> unique canonical addresses."""
    items = addrs.split(",") if isinstance(addrs, str) else list(addrs)
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"address must be a string, got {type(item).__name__}")
        if not item.strip():
            continue
        a = normalize_address(item)
        if a not in out:
            out.append(a)
    if not out:
        raise ValueError("no node address given")
    return out


def _built(make: Callable[[], T]) -> T:
    try:
        return make()
    except TxnError as e:
        raise BadRequest(str(e)) from None


class Cmp:
    """Builders of a txn's compares (`Client.txn`). `op` is one of "==", "!=", "<", ">";
    revisions are log indexes (a write's revision, a get's or scan's `rev`). An absent key
    has version, create and mod revision 0, and fails every value compare."""

    @staticmethod
    def value(key: bytes | str, op: str, value: bytes | str) -> Compare:
        return _built(lambda: Compare(_key(key), "value", op, _to_bytes(value, "value")))

    @staticmethod
    def version(key: bytes | str, op: str, version: int) -> Compare:
        return _built(lambda: Compare(_key(key), "version", op, version))

    @staticmethod
    def create_revision(key: bytes | str, op: str, rev: int) -> Compare:
        return _built(lambda: Compare(_key(key), "create", op, rev))

    @staticmethod
    def mod_revision(key: bytes | str, op: str, rev: int) -> Compare:
        return _built(lambda: Compare(_key(key), "mod", op, rev))

    @staticmethod
    def exists(key: bytes | str) -> Compare:
        """The key exists (its version is above 0)."""
        return Cmp.version(key, ">", 0)

    @staticmethod
    def absent(key: bytes | str) -> Compare:
        """The key does not exist (its version is 0)."""
        return Cmp.version(key, "==", 0)


class TxnOp:
    """Builders of a txn's ops (`Client.txn`); the result each gives is in its docstring."""

    @staticmethod
    def put(key: bytes | str, value: bytes | str, lease: int = 0) -> Op:
        """Result None. With `lease`, the key is attached to it (the txn fails with "lease
        not found", changing nothing, if it does not exist)."""
        return _built(lambda: OpPut(_key(key), _to_bytes(value, "value"), lease))

    @staticmethod
    def delete(key: bytes | str) -> Op:
        """Result: 1 if the key existed, else 0."""
        return _built(lambda: OpDelete(_key(key)))

    @staticmethod
    def delete_prefix(prefix: bytes | str) -> Op:
        """Delete every key starting with `prefix` (not empty). Result: how many."""
        return _built(lambda: OpDeletePrefix(_to_bytes(prefix, "prefix")))

    @staticmethod
    def get(key: bytes | str) -> Op:
        """Result: a KeyValue (value, create_revision, mod_revision, version), None if
        absent; it sees the writes of the ops before it."""
        return _built(lambda: OpGet(_key(key)))

    @staticmethod
    def incr(key: bytes | str, by: int = 1) -> Op:
        """Add `by` to the key's decimal int64 value (absent: 0). Result: the new int; the
        whole txn fails (rkv.BadRequest, nothing applied) if the value is not an integer or
        the sum overflows."""
        return _built(lambda: OpIncr(_key(key), by))

    @staticmethod
    def incr_float(key: bytes | str, by: str | float) -> Op:
        """Add the decimal number `by` to the key's numeric value (absent: 0), as Redis'
        INCRBYFLOAT. Result: the new value (bytes, e.g. b"10.6")."""
        return _built(lambda: OpIncrFloat(_key(key), str(by).encode()))

    @staticmethod
    def append(key: bytes | str, value: bytes | str) -> Op:
        """Append to the key's value (absent: empty). Result: the new length."""
        return _built(lambda: OpAppend(_key(key), _to_bytes(value, "value")))


@dataclass(slots=True)
class _Session:
    """A write session: one client id, writes strictly one at a time with increasing seq.

    The state machine remembers the last (seq, result) per client id, which makes retries
    exactly-once only if a session never has two writes in flight; concurrent writes of one
    Client therefore take separate sessions from a pool.
    """

    client_id: bytes
    seq: int = 0

    def next(self) -> int:
        self.seq += 1
        return self.seq


@dataclass(slots=True)
class _Link:
    """The connection to one node, held open by a task in the Client's nursery."""

    addr: str
    rpc: RpcClient | None = None
    close: trio.Event = field(default_factory=trio.Event)
    lock: trio.Lock = field(default_factory=trio.Lock)


@dataclass(slots=True)
class _Slot:
    """One chunk of a pipelined fetch (a download or a backup) in flight."""

    n: int
    data: bytes | None = None
    done: trio.Event = field(default_factory=trio.Event)


async def _fetch_pipelined(
    positions: Iterable[int],
    read: Callable[[int], Awaitable[bytes]],
    consume: Callable[[bytes], Awaitable[None]],
) -> None:
    """The one pipelined chunk fetch (downloads and backups): `read(position)` for each
    position, up to PIPELINE reads in flight, and `consume(data)` of each chunk in order.

    Memory is bounded by the channel: at most about PIPELINE chunks are fetched and not yet
    consumed. The first error of a read or a consume cancels the rest and is raised as
    itself (not as an ExceptionGroup)."""
    send_ch, recv_ch = trio.open_memory_channel[_Slot](PIPELINE - 1)

    async def fetch(slot: _Slot) -> None:
        slot.data = await read(slot.n)
        slot.done.set()

    async def produce(nursery: trio.Nursery) -> None:
        async with send_ch:
            for n in positions:
                slot = _Slot(n)
                # The channel bound is what limits chunks held in memory.
                try:
                    await send_ch.send(slot)
                except trio.BrokenResourceError:
                    return  # the consumer stopped: its error is the one to raise
                nursery.start_soon(fetch, slot)

    with plain_errors():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce, nursery)
            async with recv_ch:
                async for slot in recv_ch:
                    await slot.done.wait()
                    data, slot.data = slot.data, None
                    assert data is not None
                    await consume(data)


def _chunk_data(reply: dict[str, Any], what: str) -> bytes:
    try:
        return DataReply.from_frame(reply).data
    except BadReply:
        raise IntegrityError(f"{what} has no data") from None


class Client(LeaseCalls, ReadCalls):
    """An async rkv client. Create it with `connect(...)` and use it as a context manager.

    Any node may be given; the client finds the leader by itself. Every method retries on
    timeouts, lost connections and leader changes until `timeout` seconds have passed, then
    raises `rkv.Unavailable`. Methods may be called concurrently from many tasks.
    """

    def __init__(
        self,
        addrs: str | Iterable[str] = DEFAULT_ADDRS,
        *,
        timeout: float = 10.0,
        attempt_timeout: float = 5.0,
        connect_timeout: float = 2.0,
        backoff_base: float = 0.05,
        backoff_max: float = 1.0,
        max_frame: int = 32 << 20,
        rng: random.Random | None = None,
        token: str | None = None,
        tls_ca: str | Path | None = None,
        tls_cert: str | Path | None = None,
        tls_key: str | Path | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.addrs = parse_addresses(addrs)
        for name, value in (
            ("timeout", timeout),
            ("attempt_timeout", attempt_timeout),
            ("connect_timeout", connect_timeout),
        ):
            if not (isinstance(value, int | float) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        self.timeout = float(timeout)
        self.attempt_timeout = float(attempt_timeout)
        self.connect_timeout = float(connect_timeout)
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_frame = max_frame
        # The token never leaves this object: connections prove it (rkv.net.auth).
        self._token = token or None
        if ssl_context is None and (tls_ca is not None or tls_cert is not None):
            ssl_context = tls.client_context(tls_ca, tls_cert, tls_key)
        self._ssl_context = ssl_context
        self._rng = rng if rng is not None else random.Random()
        self.client_id = os.urandom(16)
        self._sessions: list[_Session] = [_Session(self.client_id)]
        self._known: list[str] = list(self.addrs)
        self._preferred: str | None = None
        self.leader: str | None = None
        """The address of the last node known to be the leader (None until one is seen)."""
        self._rr = 0
        self._failed_at: dict[str, float] = {}
        """When each address last failed an attempt (a forwarded write's leader hint is not
        followed to an address that failed within FAILED_RECENTLY seconds)."""
        self._links: dict[str, _Link] = {}
        self._nursery: trio.Nursery | None = None
        self.stats: dict[str, int] = {"attempts": 0, "retries": 0, "redirects": 0}

    # --- lifecycle ------------------------------------------------------------------------

    @asynccontextmanager
    async def _running(self) -> AsyncIterator[Client]:
        with plain_errors():
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    yield self
                finally:
                    self._nursery = None
                    for link in self._links.values():
                        link.close.set()
                    self._links.clear()
                    nursery.cancel_scope.cancel()

    async def __aenter__(self) -> Client:
        if self._nursery is not None:
            raise RuntimeError("this Client is already open")
        self._cm = self._running()
        return await self._cm.__aenter__()

    async def __aexit__(self, *exc: Any) -> bool | None:
        return await self._cm.__aexit__(*exc)

    # --- connections ----------------------------------------------------------------------

    async def _hold(self, link: _Link, task_status: trio.TaskStatus[None]) -> None:
        # RpcClient owns a nursery, so it must be entered and exited by the same task.
        host, port = parse_address(link.addr)
        rpc = RpcClient(
            host,
            port,
            connect_timeout=self.connect_timeout,
            timeout=self.attempt_timeout,
            max_frame=self.max_frame,
            ssl_context=self._ssl_context,
            token=self._token,
        )
        async with rpc:
            link.rpc = rpc
            task_status.started()
            await link.close.wait()

    def _connected(self, addr: str) -> RpcClient | None:
        """The open connection to `addr`, if there is one nobody is replacing: the common
        case, taken without the lock and deadline `_rpc` needs to connect."""
        link = self._links.get(addr)
        if link is None or link.rpc is None or not link.rpc.connected or link.lock.locked():
            return None
        return link.rpc

    async def _rpc(self, addr: str) -> RpcClient:
        link = self._links.get(addr)
        if link is None:
            link = self._links[addr] = _Link(addr)
        async with link.lock:
            if link.rpc is not None and link.rpc.connected:
                return link.rpc
            if link.rpc is not None:
                self._drop(addr)
                return await self._rpc(addr)
            if self._nursery is None:
                raise RuntimeError("use the Client inside `async with connect(...)`")
            try:
                await self._nursery.start(self._hold, link)
            except BaseException:
                if self._links.get(addr) is link:
                    del self._links[addr]
                raise
            assert link.rpc is not None
            return link.rpc

    def _drop(self, addr: str) -> None:
        link = self._links.pop(addr, None)
        if link is not None:
            link.close.set()

    # --- routing and retries --------------------------------------------------------------

    def _learn(self, addr: str | None) -> str | None:
        if not addr:
            return None
        try:
            a = normalize_address(addr)
        except ValueError:
            return None
        if a not in self._known:
            self._known.append(a)
        return a

    def _target(self) -> str:
        if self._preferred is not None:
            return self._preferred
        addr = self._known[self._rr % len(self._known)]
        return addr

    def _rotate(self, failed: str) -> None:
        self._failed_at[failed] = trio.current_time()
        if self._preferred == failed:
            self._preferred = None
        if self.leader == failed:
            self.leader = None
        if self._known[self._rr % len(self._known)] == failed:
            self._rr += 1

    def _backoff(self, attempt: int) -> float:
        cap = min(self.backoff_max, self.backoff_base * (1 << min(attempt, 16)))
        return cap / 2 + self._rng.uniform(0, cap / 2)

    async def _leader_hint(self, addr: str, exc: RemoteError) -> str | None:
        hint = exc.fields.get("leader_addr")
        if isinstance(hint, str):
            return self._learn(hint)
        # The hint did not survive the RPC layer: ask the node who it thinks leads.
        try:
            rpc = await self._rpc(addr)
            st = await rpc.call(StatusRequest().to_frame(), timeout=min(1.0, self.attempt_timeout))
            hint = StatusReply.from_frame(st).leader_addr
        except (RpcTimeout, ConnectionLost, RemoteError, OSError, BadReply):
            return None
        return self._learn(hint)

    async def _call(
        self,
        request: ClientRequest | dict[str, Any],
        *,
        timeout: float | None = None,
        what: str | None = None,
    ) -> dict[str, Any]:
        """Send `request` (or its frame, see rkv.protocol.hot) to the cluster, retrying until
        the deadline; the ok frame or raise.

        A write carries its session and seq already, so each attempt is the same request and
        the state machine deduplicates it.
        """
        frame = request if isinstance(request, dict) else request.to_frame()
        kind: str = frame["t"]
        limit = self.timeout if timeout is None else timeout
        now = trio.current_time()
        deadline = now + limit
        attempt = 0
        last = "no attempt made"
        while True:
            if attempt:
                now = trio.current_time()
            if now >= deadline:
                op = what or kind
                raise Unavailable(
                    f"cluster unavailable: {op} did not succeed within {limit:g}s on "
                    f"{','.join(self._known)} (last error: {last})"
                )
            addr = self._target()
            self.stats["attempts"] += 1
            if attempt:
                self.stats["retries"] += 1
            attempt += 1
            try_limit = min(deadline - now, self.attempt_timeout)
            try:
                rpc = self._connected(addr)
                if rpc is None:
                    with trio.fail_at(now + try_limit):
                        rpc = await self._rpc(addr)
                    try_limit = now + try_limit - trio.current_time()
                reply = await rpc.call(frame, timeout=max(try_limit, 1e-3))
            except RemoteError as exc:
                if exc.code not in _RETRY_CODES and exc.code not in _CONN_CODES:
                    raise from_error_frame(exc.frame) from None
                last = f"{addr}: {exc.code}: {exc.msg}" if exc.msg else f"{addr}: {exc.code}"
                if exc.code in _CONN_CODES:
                    self._drop(addr)
                if exc.code == "not_leader":
                    hint = await self._leader_hint(addr, exc)
                    if hint is not None and hint != addr:
                        self.stats["redirects"] += 1
                        self._preferred = self.leader = hint
                        # A fresh hint is followed at once; repeated hops back off.
                        if attempt > 2:
                            await self._sleep(attempt, deadline)
                        continue
                self._rotate(addr)
            except (ConnectionLost, RpcTimeout, trio.TooSlowError, OSError) as exc:
                last = f"{addr}: {exc or type(exc).__name__}"
                if not isinstance(exc, RpcTimeout):
                    self._drop(addr)  # a timed out connection is still usable
                self._rotate(addr)
            else:
                self._preferred = addr
                if kind in WRITE_KINDS:
                    self.leader = addr
                    # A follower forwarded the write (rkv.forward) and named the leader: go
                    # there next time, unless it failed us lately (the way to it may be down).
                    hint = reply.get("leader_addr")
                    if isinstance(hint, str) and hint != addr:
                        failed = self._failed_at.get(hint)
                        if failed is None or trio.current_time() - failed > FAILED_RECENTLY:
                            learned = self._learn(hint)
                            if learned is not None:
                                self._preferred = self.leader = learned
                return reply
            await self._sleep(attempt, deadline)

    async def _sleep(self, attempt: int, deadline: float) -> None:
        delay = min(self._backoff(attempt), max(deadline - trio.current_time(), 0.0))
        await trio.sleep(delay)

    async def _write(
        self,
        request: Callable[[bytes, int], WriteRequest | dict[str, Any]],
        *,
        what: str | None = None,
    ) -> dict[str, Any]:
        """Send the write `request(client_id, seq)` in a session of its own (see _Session)."""
        session = self._sessions.pop() if self._sessions else _Session(os.urandom(16))
        seq = session.next()
        try:
            return await self._call(request(session.client_id, seq), what=what)
        finally:
            self._sessions.append(session)

    # --- key/value API --------------------------------------------------------------------

    async def put(self, key: bytes | str, value: bytes | str, *, lease: int = 0) -> None:
        """Set `key` to `value` (committed on a majority when this returns). With `lease`,
        the key is attached to that lease and deleted with it (LeaseNotFound if it does not
        exist: nothing is written); a put without a lease detaches the key from any."""
        k, v = _key(key), _to_bytes(value, "value")
        await self._write(lambda c, s: put_frame(k, v, c, s, lease))

    async def get(self, key: bytes | str, *, stale: bool = False) -> bytes | None:
        """The value of `key` or None. Linearizable unless `stale` (then: the contacted
        node's local copy, possibly behind)."""
        reply = await self._call(get_frame(_key(key), bool(stale)))
        return ValueReply.from_frame(reply).value

    async def get_revision(
        self, key: bytes | str, *, stale: bool = False
    ) -> tuple[bytes | None, int | None]:
        """`get`, and the revision it was read at (the store's applied index; None from a
        node that predates revisions)."""
        reply = ValueReply.from_frame(await self._call(get_frame(_key(key), bool(stale))))
        return reply.value, reply.rev

    async def delete(self, key: bytes | str) -> bool:
        """Delete `key`; True if it existed."""
        k = _key(key)
        reply = await self._write(lambda c, s: DeleteRequest(k, client_id=c, seq=s))
        return ExistedReply.from_frame(reply).existed

    async def cas(self, key: bytes | str, expected: bytes | str | None, new: bytes | str) -> bool:
        """Set `key` to `new` if its value is `expected` (None: if absent); True if swapped."""
        k = _key(key)
        exp = None if expected is None else _to_bytes(expected, "expected")
        val = _to_bytes(new, "new")
        reply = await self._write(lambda c, s: CasRequest(k, exp, val, client_id=c, seq=s))
        return SwappedReply.from_frame(reply).swapped

    async def watch(
        self,
        prefix: bytes | str = b"",
        start_revision: int | None = None,
        prev_value: bool = False,
        *,
        progress: bool = False,
        wait: float = 1.0,
        exact: bool = False,
    ) -> AsyncIterator[WatchEvent]:
        """The changes to the keys starting with `prefix` (b"": all keys) and to such files, in
        revision order, from `start_revision` (None: from now), as WatchEvent(rev, type, key,
        value, prev): type "put", "delete", "file_commit" or "file_delete"; with `prev_value`
        each carries the key's value before it (`prev`, None: the key did not exist). With
        `exact`, `prefix` is one key: only its changes.

        An async iterator that runs until the caller stops iterating (`break` or a cancel);
        use it as `async for ev in client.watch(...)`. It polls one node at a time (any node:
        a follower serves watches from its own applied log); if that node fails, has no
        leader or cannot serve the watch, it goes on through another node from the revision
        after the last one it answered for: no change is missed, none is repeated. With
        `progress`, a WatchEvent of type "progress" (key b"") tells when a node proved its
        revision current with a ReadIndex (each `wait` seconds without changes).

        Raises Compacted (with `first_revision`) when the revisions asked for are no longer
        held (the watch window is each node's recent changes, see docs/contracts.md), and
        Unavailable when no node served the watch for the client's `timeout`."""
        p = _to_bytes(prefix, "prefix")
        if start_revision is not None and (
            isinstance(start_revision, bool)
            or not isinstance(start_revision, int)
            or start_revision < 1
        ):
            raise ValueError(f"start_revision must be a positive integer, got {start_revision!r}")
        wait_ms = int(wait * 1000)
        if not 0 <= wait_ms <= 60_000:
            raise ValueError(f"wait must be in 0..60 seconds, got {wait!r}")
        after = None if start_revision is None else start_revision - 1
        failing_since: float | None = None
        attempt = 0
        last = "no attempt made"
        while True:
            addr = self._target()
            req = WatchRequest(
                prefix=p, after=after, prev=bool(prev_value), wait_ms=wait_ms, exact=bool(exact)
            )
            try:
                rpc = self._connected(addr)
                if rpc is None:
                    with trio.fail_after(self.attempt_timeout):
                        rpc = await self._rpc(addr)
                # a poll waits up to `wait`, then up to a request timeout for its ReadIndex
                frame = await rpc.call(
                    req.to_frame(), timeout=wait + max(self.attempt_timeout, 6.0)
                )
                reply = WatchReply.from_frame(frame)
            except RemoteError as exc:
                if exc.code == Compacted.code:
                    raise from_error_frame(exc.frame) from None
                if exc.code not in _WATCH_RETRY_CODES:
                    raise from_error_frame(exc.frame) from None
                last = f"{addr}: {exc.code}: {exc.msg}"
                if exc.code in _CONN_CODES:
                    self._drop(addr)
            except (ConnectionLost, RpcTimeout, trio.TooSlowError, OSError) as exc:
                last = f"{addr}: {exc or type(exc).__name__}"
                self._drop(addr)
            else:
                failing_since = None
                attempt = 0
                self._preferred = addr
                for ev in reply.events:
                    yield ev
                after = reply.rev
                if progress and reply.progress:
                    yield WatchEvent(reply.rev, "progress", b"")
                continue
            # this node failed the watch: the next one, from the same revision
            now = trio.current_time()
            if failing_since is None:
                failing_since = now
            elif now - failing_since > self.timeout:
                raise Unavailable(
                    f"watch: no node served it for {self.timeout:g}s (last error: {last})"
                )
            self.stats["retries"] += 1
            self._rotate(addr)
            attempt += 1
            await trio.sleep(self._backoff(attempt))

    async def txn(
        self,
        compares: Iterable[Compare] = (),
        success: Iterable[Op] = (),
        failure: Iterable[Op] = (),
    ) -> TxnResult:
        """If every compare holds, run the `success` ops, else the `failure` ops, atomically
        at one revision, exactly once (a write session like any write). Build them with
        `Cmp` and `TxnOp`. Returns `TxnResult(succeeded, revision, results)`: one result per
        op of the branch that ran. Raises rkv.BadRequest for a txn that does not fit (at most
        128 compares and 128 ops per branch, 16 MiB in all, a key written once per branch)
        or whose op failed (then nothing was applied)."""
        cs, ok, ko = tuple(compares), tuple(success), tuple(failure)
        reply = await self._write(
            lambda c, s: TxnRequest(cs, ok, ko, client_id=c, seq=s), what="txn"
        )
        return TxnReply.from_frame(reply).result()

    async def incr(self, key: bytes | str, by: int = 1) -> int:
        """Add `by` to the key's integer value (absent: 0) in the state machine; the new
        value. rkv.BadRequest if the value is not a decimal int64 or the sum overflows."""
        r = await self.txn(success=[TxnOp.incr(key, by)])
        value = r.results[0]
        assert type(value) is int, value
        return value

    async def status(self, *, timeout: float | None = None) -> list[dict[str, Any]]:
        """One dict per known node: id, addr, role (leader/follower/candidate/unreachable),
        term, leader, commit, applied, last_index, degraded (why the node is degraded: it
        found damaged stored data; None if it is not), recovering (its storage is new: it does
        not vote until caught up, docs/operations.md "Replaced disks"). Never raises for
        unreachable nodes."""
        limit = min(self.timeout, 2.0) if timeout is None else timeout
        results: dict[str, dict[str, Any]] = {}

        async def probe(addr: str) -> None:
            try:
                with trio.fail_after(limit):
                    rpc = await self._rpc(addr)
                    st = StatusReply.from_frame(
                        await rpc.call(StatusRequest().to_frame(), timeout=limit)
                    )
            except (
                ConnectionLost,
                RpcTimeout,
                RemoteError,
                BadReply,
                trio.TooSlowError,
                OSError,
            ) as exc:
                if not isinstance(exc, RpcTimeout | RemoteError | BadReply):
                    self._drop(addr)
                results[addr] = _unreachable(addr, exc)
                return
            results[addr] = _status_row(addr, st)
            for p in st.peers or ():
                self._learn(p)

        probed: set[str] = set()
        while True:
            todo = [a for a in self._known if a not in probed]
            if not todo:
                break
            probed.update(todo)
            async with trio.open_nursery() as nursery:
                for addr in todo:
                    nursery.start_soon(probe, addr)
        rows: list[dict[str, Any]] = []
        seen: set[str] = set()
        for addr in self._known:
            row = results[addr]
            node_id = str(row["id"])
            if node_id in seen:
                continue
            if row["role"] == "unreachable" and any(
                r["id"] == node_id and r["role"] != "unreachable" for r in results.values()
            ):
                continue
            seen.add(node_id)
            rows.append(row)
            if row["role"] == "leader":
                self.leader = self._preferred = addr
        return sorted(rows, key=lambda r: str(r["addr"]))

    # --- operations -----------------------------------------------------------------------

    async def transfer_leader(self, to: str | None = None, *, timeout: float | None = None) -> str:
        """Ask the leader to hand leadership to node `to` (an id, i.e. its "host:port"; None:
        the most caught-up follower). Returns the new leader's id once the old leader has
        heard from it. Raises Unavailable if that does not happen within `timeout`."""
        target = None if to is None else normalize_address(to)
        reply = await self._call(
            TransferRequest(target), timeout=timeout, what="leadership transfer"
        )
        addr = self._learn(reply.get("leader_addr"))
        if addr is not None:
            self.leader = self._preferred = addr
        return str(reply.get("leader"))

    async def check(self, *, timeout: float | None = None) -> dict[str, Any]:
        """Compare every member's state hash at a common applied index, through whichever
        node answers (README, Integrity): {"node": the node that compared, "index": the index
        compared at (None: none), "members": [{node, verdict ("agrees", "differs", "not
        compared", "unreachable"), index, hash (hex), applied, reason}]}."""
        reply = await self._call(CheckRequest(), timeout=timeout, what="replica check")
        members = reply.get("members")
        return {
            "node": reply.get("node"),
            "index": reply.get("index"),
            "members": [dict(m) for m in members] if isinstance(members, list) else [],
        }

    async def repair(self, node: str, *, timeout: float | None = None) -> dict[str, Any]:
        """Ask `node` (its address) to stop and rebuild its stored state from the cluster
        (README, Integrity): {"node", "moved_to": where its damaged data dir goes}. It must
        then be started again with its usual flags."""
        addr = self._learn(node)
        if addr is None:
            raise BadRequest(f"not an address: {node!r}")
        limit = self.timeout if timeout is None else timeout
        try:
            with trio.fail_after(limit):
                rpc = await self._rpc(addr)
                reply = await rpc.call(RepairRequest().to_frame(), timeout=limit)
        except RemoteError as e:
            raise from_error_frame(e.frame) from None
        except (ConnectionLost, RpcTimeout, trio.TooSlowError, OSError) as e:
            raise Unavailable(f"{addr}: {e or type(e).__name__}") from None
        return {"node": reply.get("node"), "moved_to": reply.get("moved_to")}

    # --- membership (docs/operations.md) ---------------------------------------------------

    async def members(self, *, timeout: float | None = None) -> dict[str, Any]:
        """The configuration as the leader sees it: voters, learners, leader, and (per member)
        the leader's replication progress ({node, match, state})."""
        reply = await self._call(MembersRequest(), timeout=timeout, what="member list")
        return _members(reply)

    async def add_member(
        self, node: str, *, learner: bool = False, timeout: float | None = None
    ) -> dict[str, Any]:
        """Add node `node` (its "host:port", which is its id) as a learner, then, unless
        `learner`, promote it to voter as soon as it has caught up with the log (the leader
        refuses earlier, and the request is retried until `timeout`). Start the new node with
        `rkv serve --join` (before or after: the leader keeps trying to reach it)."""
        node = normalize_address(node)
        limit = self.timeout if timeout is None else timeout
        deadline = trio.current_time() + limit
        conf = await self.members(timeout=limit)
        if node not in conf["voters"] and node not in conf["learners"]:
            try:
                conf = await self._member("add", node, deadline)
            except BadRequest as e:
                if "already a member" not in e.msg:  # else: a retry of ours that took effect
                    raise
        if learner or node in conf["voters"]:
            return await self.members(timeout=max(deadline - trio.current_time(), 1.0))
        return await self.promote_member(node, timeout=max(deadline - trio.current_time(), 1.0))

    async def promote_member(self, node: str, *, timeout: float | None = None) -> dict[str, Any]:
        """Make learner `node` a voter once it has caught up (retried until `timeout`)."""
        node = normalize_address(node)
        limit = self.timeout if timeout is None else timeout
        try:
            return await self._member("promote", node, trio.current_time() + limit)
        except BadRequest as e:
            if "already a voter" in e.msg:
                return await self.members(timeout=limit)
            raise

    async def remove_member(self, node: str, *, timeout: float | None = None) -> dict[str, Any]:
        """Remove voter or learner `node`. Removing the leader works: it commits its removal,
        hands leadership to the most caught-up voter and stops. A removed node stops itself
        once it learns of its removal (exit code 14)."""
        node = normalize_address(node)
        limit = self.timeout if timeout is None else timeout
        deadline = trio.current_time() + limit
        conf = await self.members(timeout=limit)
        if node not in conf["voters"] and node not in conf["learners"]:
            raise NotFound(f"{node} is not a member of this cluster")
        try:
            return await self._member("remove", node, deadline)
        except BadRequest as e:
            if "is not a member" not in e.msg:  # else: a retry of ours that took effect
                raise
            return await self.members(timeout=max(deadline - trio.current_time(), 1.0))

    async def _member(self, op: str, node: str, deadline: float) -> dict[str, Any]:
        left = max(deadline - trio.current_time(), 0.001)
        reply = await self._call(MemberRequest(op, node), timeout=left, what=f"member {op}")
        addr = self._learn(reply.get("leader_addr"))
        if addr is not None:
            self.leader = self._preferred = addr
        return _members(reply)

    async def _call_on(self, addr: str, request: ClientRequest, timeout: float) -> dict[str, Any]:
        """One request to one node (no retries, no redirects); errors as rkv errors."""
        try:
            with trio.fail_after(timeout):
                rpc = await self._rpc(addr)
            return await rpc.call(request.to_frame(), timeout=timeout)
        except RemoteError as exc:
            raise from_error_frame(exc.frame) from None
        except (ConnectionLost, RpcTimeout, trio.TooSlowError, OSError) as exc:
            self._drop(addr)
            raise Unavailable(f"{addr}: {exc or type(exc).__name__}") from None

    async def backup(
        self,
        dest: str | os.PathLike[str],
        *,
        node: str | None = None,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """Write a consistent hot backup of the cluster's state to the file `dest`.

        One node (`node`, else the first of the known nodes that answers) makes a compacted
        copy of its store after a read barrier, so the copy holds every write acknowledged
        before this call; the client streams it in bounded chunks, checks its SHA-256 and
        renames the file into place. Returns the manifest (index, term, keys, files,
        data_size, data_sha256, ...). See docs/operations.md.
        """
        path = Path(dest)
        candidates = [normalize_address(node)] if node else [self._target(), *self._known]
        last: BaseException | None = None
        for addr in dict.fromkeys(candidates):
            try:
                # Making the copy takes a while on a big store: the whole budget, not one try.
                begin = await self._call_on(addr, BackupBeginRequest(), self.timeout)
            except (Unavailable, Timeout, NotLeader) as exc:
                last = exc
                continue
            token = begin.get("b")
            manifest = begin.get("manifest")
            if not isinstance(token, bytes) or not isinstance(manifest, dict):
                raise IntegrityError(f"{addr}: malformed backup_begin answer")
            try:
                return await self._fetch_backup(addr, token, manifest, path, progress)
            finally:
                with trio.CancelScope(shield=True), suppress(RkvError):
                    await self._call_on(addr, BackupEndRequest(token), 2.0)
        raise Unavailable(f"no node could start a backup (last error: {last})")

    async def _fetch_backup(
        self,
        addr: str,
        token: bytes,
        manifest: dict[str, Any],
        path: Path,
        progress: Progress | None,
    ) -> dict[str, Any]:
        writer = await trio.to_thread.run_sync(BackupWriter, path, manifest)
        size = int(manifest["data_size"])

        async def read(off: int) -> bytes:
            request = BackupReadRequest(token, off, BACKUP_CHUNK)
            reply = await self._call_on(addr, request, self.attempt_timeout)
            return _chunk_data(reply, f"{addr}: backup chunk at {off}")

        async def write(data: bytes) -> None:
            await trio.to_thread.run_sync(writer.write, data)
            if progress is not None:
                progress(writer.written, size)

        try:
            await _fetch_pipelined(range(0, size, BACKUP_CHUNK), read, write)
            return await trio.to_thread.run_sync(writer.finish)
        except BaseException:
            writer.abort()
            raise

    # --- files ----------------------------------------------------------------------------

    async def upload(
        self,
        key: bytes | str,
        source: str | os.PathLike[str] | IO[bytes],
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """Store a file (a path or a binary stream) under `key`, atomically.

        Chunks of at most `chunk_size` bytes are written (a few concurrently), then a commit
        with size, chunk count and SHA-256 makes the file visible whole, replacing any older
        file of that key. Returns {"size", "chunks", "sha256" (hex)}.
        """
        k = _key(key)
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
            raise TypeError("chunk_size must be an int")
        if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk_size must be in 1..{MAX_CHUNK_SIZE}, got {chunk_size}")
        if isinstance(source, str | os.PathLike):
            path = Path(source)
            with path.open("rb") as f:
                total = os.fstat(f.fileno()).st_size
                return await self._upload(k, f, chunk_size, total, progress)
        total_hint: int | None = None
        with suppress(AttributeError, OSError, ValueError):
            total_hint = os.fstat(source.fileno()).st_size
        return await self._upload(k, source, chunk_size, total_hint, progress)

    async def _upload(
        self,
        key: bytes,
        f: IO[bytes],
        chunk_size: int,
        total: int | None,
        progress: Progress | None,
    ) -> dict[str, Any]:
        upload_id = os.urandom(16)
        sha = hashlib.sha256()
        window = trio.Semaphore(PIPELINE)
        size = 0
        done = 0
        chunks = 0

        async def send(n: int, data: bytes) -> None:
            nonlocal done
            try:
                await self._write(
                    lambda c, s: FileChunkRequest(key, upload_id, n, data, client_id=c, seq=s),
                    what=f"upload of chunk {n}",
                )
            finally:
                window.release()
            done += len(data)
            if progress is not None:
                progress(done, total)

        try:
            source_error: Exception | None = None
            with plain_errors():
                async with trio.open_nursery() as nursery:
                    while True:
                        await window.acquire()
                        try:
                            data = await trio.to_thread.run_sync(f.read, chunk_size)
                        except Exception as e:
                            # the source failed: let the chunks in flight land first, so
                            # that the abort below comes after them in the log
                            source_error = e
                            data = b""
                        if not data:
                            window.release()
                            break
                        data = bytes(data)
                        sha.update(data)
                        size += len(data)
                        nursery.start_soon(send, chunks, data)
                        chunks += 1
            if source_error is not None:
                raise source_error
            digest = sha.digest()
            await self._write(
                lambda c, s: FileCommitRequest(
                    key, upload_id, size, chunks, digest, client_id=c, seq=s
                ),
                what="upload commit",
            )
        except BaseException:
            # Best effort (Ctrl+C and cancellation included): drop what was staged now
            # rather than when the leader finds the upload idle (upload_ttl_seconds). A commit
            # that took effect after all is not undone: the abort of a committed upload is
            # refused. A chunk cancelled in flight may still land after the abort; the
            # leader's idle check drops it then.
            # Whatever goes wrong in the abort, the upload's own error is the one to report.
            with (
                trio.CancelScope(shield=True),
                trio.move_on_after(ABORT_TIMEOUT),
                suppress(Exception),
            ):
                await self._write(
                    lambda c, s: FileAbortRequest(upload_id, client_id=c, seq=s),
                    what="upload abort",
                )
            raise
        if progress is not None:
            progress(size, size)
        return {"size": size, "chunks": chunks, "sha256": digest.hex()}

    async def file_info(self, key: bytes | str, *, stale: bool = False) -> dict[str, Any] | None:
        """{"size", "chunks", "sha256" (hex)} of the file `key`, or None if there is none."""
        try:
            reply = await self._call(FileMetaRequest(_key(key), stale=bool(stale)))
        except NotFound:
            return None
        meta = FileMetaReply.from_frame(reply)
        return {"size": meta.size, "chunks": meta.chunks, "sha256": meta.sha.hex()}

    async def delete_file(self, key: bytes | str) -> bool:
        """Delete the file `key`; True if it existed."""
        k = _key(key)
        reply = await self._write(lambda c, s: FileDeleteRequest(k, client_id=c, seq=s))
        return ExistedReply.from_frame(reply).existed

    async def download(
        self,
        key: bytes | str,
        dest: str | os.PathLike[str] | IO[bytes],
        *,
        stale: bool = False,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """Write the file `key` to `dest` (a path or a binary stream), verifying SHA-256.

        Raises NotFound if there is no such file, IntegrityError on a size or checksum
        mismatch (a partial output file is removed), Changed if the file was overwritten
        during the download. Returns {"size", "chunks", "sha256" (hex)}.
        """
        k = _key(key)
        reply = await self._call(FileMetaRequest(k, stale=bool(stale)))
        try:
            meta = FileMetaReply.from_frame(reply)
        except BadReply as exc:
            raise IntegrityError(f"bad file metadata from the cluster: {exc.msg}") from None
        size, chunks, sha = meta.size, meta.chunks, meta.sha
        if isinstance(dest, str | os.PathLike):
            path = Path(dest)
            part = path.with_name(path.name + ".rkv-partial")
            try:
                with part.open("wb") as f:
                    await self._download(k, f, size, chunks, sha, progress)
                    await trio.to_thread.run_sync(f.flush)
                    await trio.to_thread.run_sync(os.fsync, f.fileno())
                os.replace(part, path)
            except BaseException:
                with suppress(OSError):
                    part.unlink()
                raise
        else:
            await self._download(k, dest, size, chunks, sha, progress)
        return {"size": size, "chunks": chunks, "sha256": sha.hex()}

    async def _download(
        self,
        key: bytes,
        f: IO[bytes],
        size: int,
        chunks: int,
        sha: bytes,
        progress: Progress | None,
    ) -> None:
        h = hashlib.sha256()
        written = 0

        async def read(n: int) -> bytes:
            reply = await self._call(FileReadRequest(key, n, sha), what=f"download of chunk {n}")
            return _chunk_data(reply, f"chunk {n} of the file")

        async def write(data: bytes) -> None:
            nonlocal written
            h.update(data)
            written += len(data)
            if written > size:
                raise IntegrityError(f"file {key!r} has more bytes than its recorded size {size}")
            await trio.to_thread.run_sync(f.write, data)
            if progress is not None:
                progress(written, size)

        await _fetch_pipelined(range(chunks), read, write)
        if written != size:
            raise IntegrityError(f"file {key!r}: got {written} bytes, expected {size}")
        if h.digest() != sha:
            raise IntegrityError(
                f"file {key!r}: SHA-256 mismatch (got {h.hexdigest()}, expected {sha.hex()})"
            )


def _members(reply: dict[str, Any]) -> dict[str, Any]:
    def ids(v: object) -> list[str]:
        return [x for x in v if isinstance(x, str)] if isinstance(v, list) else []

    progress = reply.get("progress")
    return {
        "cluster": reply.get("cluster"),
        "voters": ids(reply.get("voters")),
        "learners": ids(reply.get("learners")),
        "leader": reply.get("leader"),
        "commit": reply.get("commit"),
        "progress": [p for p in progress if isinstance(p, dict)]
        if isinstance(progress, list)
        else [],
    }


_STATUS_FIELDS = ("term", "leader", "commit", "applied", "last_index", "degraded", "recovering")


def _status_row(addr: str, st: StatusReply) -> dict[str, Any]:
    # The frame's "id" is the RPC request id, so the node sends its id under "node".
    row: dict[str, Any] = {
        "id": str(st.node or st.addr or addr),
        "addr": str(st.addr or addr),
        "role": st.role.lower() if st.role is not None else "unknown",
    }
    for name in _STATUS_FIELDS:
        row[name] = getattr(st, name)
    row["leader_addr"] = st.leader_addr
    return row


def _unreachable(addr: str, exc: BaseException) -> dict[str, Any]:
    row: dict[str, Any] = {"id": addr, "addr": addr, "role": "unreachable"}
    for name in _STATUS_FIELDS:
        row[name] = None
    row["leader_addr"] = None
    row["error"] = str(exc) or type(exc).__name__
    return row


def connect(addrs: str | Iterable[str] = DEFAULT_ADDRS, **kwargs: Any) -> Client:
    """An async client for the cluster at `addrs` ("host:port" or "http://host:port", any
    node or several). Use: ``async with rkv.connect("127.0.0.1:50051") as c: ...``.

    Keywords: timeout (overall seconds per operation, default 10), attempt_timeout,
    connect_timeout, backoff_base, backoff_max, max_frame, rng; security (docs/security.md):
    token (the cluster token; a wrong or missing one raises rkv.errors.AuthError), tls_ca
    (CA file: TLS on, the node verified), tls_cert/tls_key (for mutual TLS), ssl_context.
    """
    return Client(addrs, **kwargs)


class SyncClient(SyncLeaseCalls, SyncReadCalls):
    """A blocking client with the same methods as `Client`, for code without trio.

    It runs a trio loop in a background thread that keeps the connections and the leader
    between calls. Use it as a context manager (or call `close()`). Locks and elections
    for it: rkv.SyncLock and rkv.SyncElection (rkv.recipes.sync).
    """

    _client: Client

    def __init__(self, addrs: str | Iterable[str] = DEFAULT_ADDRS, **kwargs: Any) -> None:
        self._client = Client(addrs, **kwargs)
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._nursery: trio.Nursery | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="rkv-client", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def _main(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as exc:  # reported to the creating thread
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._stop = trio.Event()
        async with self._client, trio.open_nursery() as nursery:
            self._nursery = nursery
            self._token = trio.lowlevel.current_trio_token()
            self._ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()  # the tasks `_start` left running, before the client

    def _run(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        if self._token is None or not self._thread.is_alive():
            raise RuntimeError("this SyncClient is closed")

        async def call() -> T:
            return await fn(*args, **kwargs)

        return trio.from_thread.run(call, trio_token=self._token)

    def _start(self, fn: Callable[..., Awaitable[object]], *args: Any) -> Any:
        """Start `fn(*args, task_status=...)` as a task of the loop's nursery (it outlives
        this call; `close()` cancels it) and return what it passes to `task_status.started`
        (its error if it fails before that). After that it must raise nothing but Cancelled:
        an error would end the loop. For blocking wrappers of context managers
        (rkv.recipes.sync: one task enters and leaves the `async with`)."""
        nursery = self._nursery
        if nursery is None:
            raise RuntimeError("this SyncClient is closed")
        return self._run(nursery.start, fn, *args)

    @property
    def client_id(self) -> bytes:
        return self._client.client_id

    @property
    def leader(self) -> str | None:
        return self._client.leader

    def put(self, key: bytes | str, value: bytes | str, *, lease: int = 0) -> None:
        self._run(self._client.put, key, value, lease=lease)

    def get(self, key: bytes | str, *, stale: bool = False) -> bytes | None:
        return self._run(self._client.get, key, stale=stale)

    def delete(self, key: bytes | str) -> bool:
        return self._run(self._client.delete, key)

    def cas(self, key: bytes | str, expected: bytes | str | None, new: bytes | str) -> bool:
        return self._run(self._client.cas, key, expected, new)

    def get_revision(
        self, key: bytes | str, *, stale: bool = False
    ) -> tuple[bytes | None, int | None]:
        return self._run(self._client.get_revision, key, stale=stale)

    def txn(
        self,
        compares: Iterable[Compare] = (),
        success: Iterable[Op] = (),
        failure: Iterable[Op] = (),
    ) -> TxnResult:
        """See Client.txn."""
        return self._run(self._client.txn, compares, success, failure)

    def incr(self, key: bytes | str, by: int = 1) -> int:
        return self._run(self._client.incr, key, by)

    def status(self, *, timeout: float | None = None) -> list[dict[str, Any]]:
        return self._run(self._client.status, timeout=timeout)

    def upload(
        self,
        key: bytes | str,
        source: str | os.PathLike[str] | IO[bytes],
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        return self._run(self._client.upload, key, source, chunk_size=chunk_size, progress=progress)

    def download(
        self,
        key: bytes | str,
        dest: str | os.PathLike[str] | IO[bytes],
        *,
        stale: bool = False,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        return self._run(self._client.download, key, dest, stale=stale, progress=progress)

    def file_info(self, key: bytes | str, *, stale: bool = False) -> dict[str, Any] | None:
        return self._run(self._client.file_info, key, stale=stale)

    def delete_file(self, key: bytes | str) -> bool:
        return self._run(self._client.delete_file, key)

    def members(self, *, timeout: float | None = None) -> dict[str, Any]:
        return self._run(self._client.members, timeout=timeout)

    def check(self, *, timeout: float | None = None) -> dict[str, Any]:
        return self._run(self._client.check, timeout=timeout)

    def repair(self, node: str, *, timeout: float | None = None) -> dict[str, Any]:
        return self._run(self._client.repair, node, timeout=timeout)

    def add_member(
        self, node: str, *, learner: bool = False, timeout: float | None = None
    ) -> dict[str, Any]:
        return self._run(self._client.add_member, node, learner=learner, timeout=timeout)

    def promote_member(self, node: str, *, timeout: float | None = None) -> dict[str, Any]:
        return self._run(self._client.promote_member, node, timeout=timeout)

    def remove_member(self, node: str, *, timeout: float | None = None) -> dict[str, Any]:
        return self._run(self._client.remove_member, node, timeout=timeout)

    def transfer_leader(self, to: str | None = None, *, timeout: float | None = None) -> str:
        return self._run(self._client.transfer_leader, to, timeout=timeout)

    def backup(
        self,
        dest: str | os.PathLike[str],
        *,
        node: str | None = None,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        return self._run(self._client.backup, dest, node=node, progress=progress)

    def close(self) -> None:
        token, stop = self._token, self._stop
        if token is not None and stop is not None and self._thread.is_alive():
            self._token = None
            with suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(stop.set, trio_token=token)
        self._thread.join()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- watch ------------------------------------------------------------------------------

    def watch(
        self,
        prefix: bytes | str = b"",
        start_revision: int | None = None,
        prev_value: bool = False,
        *,
        progress: bool = False,
        wait: float = 1.0,
        exact: bool = False,
    ) -> Iterator[WatchEvent]:
        """See Client.watch (same arguments, same events, same errors): a blocking iterator,
        ``for ev in client.watch("jobs/"): ...``; each `next` waits for the next event. It
        buffers nothing beyond Client.watch (the rest of one poll's reply): the client's
        loop polls again only when `next` asks for an event the last reply did not hold.
        Leaving the loop (`break`, an exception, the generator's `close()`) ends the watch
        there: no poll follows."""
        agen = self._client.watch(
            prefix, start_revision, prev_value, progress=progress, wait=wait, exact=exact
        )
        return self._watch_steps(agen)

    def _watch_steps(self, agen: AsyncIterator[T]) -> Iterator[T]:
        """An async iterator of the loop as a blocking iterator (Client.watch's, and
        rkv.recipes.sync's Election.observe)."""
        # Each step runs in its own task on the client's loop (trio.from_thread.run); one
        # task at a time drives the generator (the lock), and the step in flight has a
        # cancel scope, so closing from this thread (an interrupt while a step waits) can
        # cancel it first and then close the generator on the loop.
        lock = trio.Lock()
        step: list[trio.CancelScope] = []

        async def next_event() -> T:
            async with lock:
                with trio.CancelScope() as scope:
                    step[:] = [scope]
                    return await agen.__anext__()
                raise RuntimeError("the watch was closed")  # cancelled by `finish`

        async def finish() -> None:
            for scope in step:
                scope.cancel()
            async with lock:
                aclose = getattr(agen, "aclose", None)
                if aclose is not None:
                    await aclose()

        try:
            while True:
                try:
                    ev = self._run(next_event)
                except StopAsyncIteration:
                    return
                yield ev
        finally:
            token = self._token
            if token is not None and self._thread.is_alive():
                with suppress(trio.RunFinishedError):
                    trio.from_thread.run(finish, trio_token=token)


def connect_sync(addrs: str | Iterable[str] = DEFAULT_ADDRS, **kwargs: Any) -> SyncClient:
    """A blocking client (see `connect` for the arguments). Use it with `with`."""
    return SyncClient(addrs, **kwargs)


__all__ = [
    "DEFAULT_ADDRS",
    "DEFAULT_CHUNK_SIZE",
    "Client",
    "Progress",
    "SyncClient",
    "connect",
    "connect_sync",
    "normalize_address",
    "parse_addresses",
]
