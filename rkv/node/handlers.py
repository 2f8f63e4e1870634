"""Client request handlers: the KV, txn and file requests (docs/contracts.md, client protocol).

Owns: what each request means (its fields come decoded and checked by rkv.protocol: the
dispatcher decodes, the put fast path `front_door` decodes its own), turning a write into a
proposal and a read into a local read (after a read barrier unless `stale`), the replies, the
leader check and where a follower forwards writes. Must not: touch the RawNode (it reads the raft loop's published `view`
and hands proposals and reads to the loop), or frame anything for the wire.

Watches (`watch`) are polls of the watch hub (rkv.node.watch), with a ReadIndex for their
progress; they take the connection (CONN_KINDS) to bound the watches per connection.

Built from what it talks to (a config, a store, the raft loop, the metrics), so that a test
can build it from fakes (tests/node/test_handlers.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Protocol

import trio

from rkv import stagetimes
from rkv.codec import Request, encode_request, unpack
from rkv.config import NodeConfig
from rkv.errors import Changed, InternalError, NotFound, NotLeader, Unavailable
from rkv.metrics import NodeMetrics
from rkv.net.rpc import Answer, ConnInfo
from rkv.node.common import REQUEST_ERRORS, as_error, one_line, refusal
from rkv.node.inbox import Frame, Input, Propose, RaftView, Waiter
from rkv.node.watch import WatchHub
from rkv.protocol import (
    AbortedReply,
    CasRequest,
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
    GetRequest,
    KeyRecord,
    OkReply,
    PutRequest,
    ScanReply,
    ScanRequest,
    SwappedReply,
    TxnReply,
    TxnRequest,
    ValueReply,
    WatchRequest,
    WriteRequest,
    decode_request,
)
from rkv.raft.types import Role
from rkv.store.commands import Record
from rkv.store.errors import NotFoundError
from rkv.txn import TxnError, TxnResult

Handler = Callable[..., Awaitable[Frame]]
"""A request's handler: takes its typed request (rkv.protocol, decoded by the dispatcher), and
for the kinds in CONN_KINDS the connection's ConnInfo too."""

CONN_KINDS = frozenset({"watch"})
"""The kinds whose handler takes (request, ConnInfo)."""


class Raft(Protocol):
    """What the handlers use of the raft loop (rkv.node.raft_loop.RaftLoop)."""

    @property
    def view(self) -> RaftView: ...

    def offer(self, item: Input) -> bool: ...

    async def submit(self, item: Input, w: Waiter, what: str) -> None: ...

    async def read_barrier(self) -> None: ...


def _rev(w: Waiter) -> int | None:
    """A write's revision: the index of the log entry that carried it (for a retry the state
    machine recognized, its retry's entry: the write took effect at or before it)."""
    return None if w.entry is None else w.entry.index


def _key_record(rec: Record) -> KeyRecord:
    return KeyRecord(rec.value, rec.create_index, rec.mod_index, rec.version, rec.lease)


def leader_check(view: RaftView, me: str) -> None:
    """Raise unless this node (`me`) leads: NotLeader naming the leader, or Unavailable."""
    if view.role == Role.LEADER:
        return
    if view.leader and view.leader != me:
        raise NotLeader(leader_addr=view.leader_addr)
    raise Unavailable("no leader known; retry")


# -- the handlers -----------------------------------------------------------------------------


class ClientHandlers:
    def __init__(
        self,
        cfg: NodeConfig,
        store: Any,
        raft: Raft,
        metrics: NodeMetrics,
        watch: WatchHub | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.raft = raft
        self.metrics = metrics
        self.watch_hub = watch

    def routes(self) -> dict[str, Handler]:
        return {
            "put": self.put,
            "delete": self.delete,
            "cas": self.cas,
            "file_chunk": self.file_chunk,
            "file_commit": self.file_commit,
            "file_delete": self.file_delete,
            "file_abort": self.file_abort,
            "txn": self.txn,
            "get": self.get,
            "scan": self.scan,
            "file_meta": self.file_meta,
            "file_read": self.file_read,
            "watch": self.watch,
        }

    def forward_to(self) -> str | None:
        """The leader's address when this node should forward a client's write there (it is
        a follower that knows a leader); None to handle it here."""
        v = self.raft.view
        if v.role == Role.LEADER or not v.leader or v.leader == self.cfg.id:
            return None
        return v.leader_addr

    def leader_check(self) -> None:
        leader_check(self.raft.view, self.cfg.id)

    def front_door(self, frame: Frame, info: ConnInfo, answer: Answer) -> bool:
        """Puts, the hot path, without a task each (see rpc.serve's front_door): checked and
        queued to the raft loop here, answered by the raft loop (Waiter.on_done) once
        committed, or failed (timeout, lost leadership). Anything else, or a full inbox,
        takes the usual way."""
        if frame.get("t") != "put" or self.raft.view.role != Role.LEADER:
            return False  # a follower forwards it (Node._handle)
        try:
            req = decode_request(frame)
            assert isinstance(req, PutRequest)
            if req.lease:
                return False  # may be refused (no such lease): answered once applied
            data = self._request_data(req)
            self.leader_check()
        except REQUEST_ERRORS as e:
            answer(as_error(e))
            return True
        t0 = trio.current_time()
        w = Waiter(deadline=t0 + self.cfg.request_timeout, what="write not committed")
        w.on_done = partial(self._put_done, answer, t0)
        clock = stagetimes.clock
        if clock is not None:
            clock.begin("put")
            clock.mark("decoded")
        took = self.raft.offer(Propose(data, w, early=True))
        if clock is not None:
            clock.mark("queued")
        return took

    def _put_done(self, answer: Answer, t0: float, w: Waiter) -> None:
        if w.error is not None:
            answer(w.error)
            return
        self.metrics.on_commit(trio.current_time() - t0)
        refused = refusal(w.result)
        answer(OkReply(_rev(w)).to_frame() if refused is None else refused)

    @staticmethod
    def _request_data(req: WriteRequest) -> bytes:
        """The log entry data of a write: its command with the request's session and seq."""
        return encode_request(Request(req.client_id, req.seq, req.command()))

    async def _propose(self, req: WriteRequest) -> tuple[Any, int | None]:
        """(the write's apply result value, its revision: the index of its log entry)."""
        data = self._request_data(req)
        self.leader_check()
        w = Waiter()
        t0 = trio.current_time()
        # A put's result is always ok (a duplicate or stale retry of the session's seq took
        # effect already), so it is answered once committed (Replica.answer_committed); not
        # a put with a lease, which is refused if the lease is gone.
        early = isinstance(req, PutRequest) and not req.lease
        await self.raft.submit(Propose(data, w, early=early), w, "write not committed")
        self.metrics.on_commit(trio.current_time() - t0)
        refused = refusal(w.result)
        if refused is not None:
            raise refused
        return getattr(w.result, "value", None), _rev(w)

    async def propose(self, req: WriteRequest) -> tuple[Any, int | None]:
        """A write's apply result value and revision (for the other request rooms: leases)."""
        return await self._propose(req)

    async def _linearizable(self) -> None:
        await self.raft.read_barrier()

    async def _maybe_linearizable(self, stale: bool) -> None:
        if not stale:
            await self._linearizable()

    # -- writes -------------------------------------------------------------------------------

    async def put(self, r: PutRequest) -> Frame:
        _, rev = await self._propose(r)
        return OkReply(rev).to_frame()

    async def delete(self, r: DeleteRequest) -> Frame:
        existed, rev = await self._propose(r)
        return ExistedReply(bool(existed), rev).to_frame()

    async def cas(self, r: CasRequest) -> Frame:
        swapped, rev = await self._propose(r)
        return SwappedReply(bool(swapped), rev).to_frame()

    async def txn(self, r: TxnRequest) -> Frame:
        """The result as the state machine kept it in the client's session (a retry of a txn
        already applied answers the first result, with the first revision)."""
        packed, _ = await self._propose(r)
        try:
            res = TxnResult.from_wire(unpack(packed))
        except (TxnError, ValueError) as e:  # CodecError is a ValueError
            raise InternalError(f"txn result not understood: {e}") from None
        return TxnReply(res.succeeded, res.revision, res.results).to_frame()

    async def file_chunk(self, r: FileChunkRequest) -> Frame:
        _, rev = await self._propose(r)
        return OkReply(rev).to_frame()

    async def file_commit(self, r: FileCommitRequest) -> Frame:
        _, rev = await self._propose(r)
        return OkReply(rev).to_frame()

    async def file_abort(self, r: FileAbortRequest) -> Frame:
        aborted, rev = await self._propose(r)
        return AbortedReply(bool(aborted), rev).to_frame()

    async def file_delete(self, r: FileDeleteRequest) -> Frame:
        existed, rev = await self._propose(r)
        return ExistedReply(bool(existed), rev).to_frame()

    # -- reads --------------------------------------------------------------------------------

    async def get(self, r: GetRequest) -> Frame:
        await self._maybe_linearizable(r.stale)
        if not r.meta:
            value, rev = self.store.get_revision(r.key)
            return ValueReply(value, rev).to_frame()
        rec, rev = self.store.get_record_revision(r.key)
        if rec is None:
            return ValueReply(None, rev, None, meta=True).to_frame()
        return ValueReply(rec.value, rev, _key_record(rec), meta=True).to_frame()

    async def scan(self, r: ScanRequest) -> Frame:
        """The pairs (from the key after `r.after`) and the revision they were read at: a
        watch from rev + 1 misses nothing and repeats nothing."""
        await self._maybe_linearizable(r.stale)
        if not r.meta:
            items, rev = self.store.scan_revision(r.prefix, r.limit, r.after)
            return ScanReply(tuple(items), rev).to_frame()
        records, rev = self.store.scan_records(r.prefix, r.limit, r.after)
        return ScanReply(
            tuple((k, rec.value) for k, rec in records),
            rev,
            tuple(_key_record(rec) for _, rec in records),
        ).to_frame()

    async def file_meta(self, r: FileMetaRequest) -> Frame:
        await self._maybe_linearizable(r.stale)
        m = self.store.file_manifest(r.key)
        if m is None:
            raise NotFound(f"no file {r.key!r}")
        return FileMetaReply(m.size, m.chunks, m.sha256).to_frame()

    async def file_read(self, r: FileReadRequest) -> Frame:
        k, n = r.key, r.n
        m = self.store.file_manifest(k)
        if m is None:
            raise NotFound(f"no file {k!r}")
        if m.sha256 != r.sha:
            raise Changed(f"file {k!r} was overwritten")
        if n >= m.chunks:
            raise NotFound(f"file {k!r} has {m.chunks} chunks, no chunk {n}")
        try:
            data = self.store.read_chunk(k, n)
        except NotFoundError as e:
            raise NotFound(one_line(str(e))) from None
        return DataReply(data).to_frame()

    # -- watches ------------------------------------------------------------------------------

    async def watch(self, r: WatchRequest, info: ConnInfo) -> Frame:
        """One poll of a watch (rkv.node.watch.WatchHub.poll), on any node: the events come
        from this node's applied changes, its progress from a ReadIndex."""
        hub = self.watch_hub
        if hub is None:
            raise Unavailable("this node serves no watches")
        reply = await hub.poll(
            r, info.conn_id, barrier=self._linearizable, applied=self.store.applied_index
        )
        return reply.to_frame()
