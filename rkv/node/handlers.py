"""Client request handlers: the KV and file requests (docs/contracts.md, client protocol).

Owns: what each request's frame means (the field decoding, in one section below), turning a
write into a proposal and a read into a local read (after a read barrier unless `stale`),
the reply frames, the leader check and where a follower forwards writes, and the put fast
path (`front_door`). Must not: touch the RawNode (it reads the raft loop's published `view`
and hands proposals and reads to the loop), or frame anything for the wire.

Built from what it talks to (a config, a store, the raft loop, the metrics), so that a test
can build it from fakes (tests/node/test_handlers.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Protocol

import trio

from rkv.codec import (
    MAX_ID_LEN,
    Cas,
    Command,
    Delete,
    FileAbort,
    FileChunk,
    FileCommit,
    FileDelete,
    Put,
    Request,
    encode_request,
)
from rkv.config import NodeConfig
from rkv.errors import BadRequest, Changed, NotFound, NotLeader, Unavailable
from rkv.metrics import NodeMetrics
from rkv.net.rpc import Answer, ConnInfo
from rkv.node.common import REQUEST_ERRORS, as_error, bytes_field, int_field, one_line, refusal
from rkv.node.inbox import Frame, Input, Propose, RaftView, Waiter
from rkv.raft.types import Role
from rkv.store.errors import NotFoundError

MAX_SCAN_LIMIT = 10_000
DEFAULT_SCAN_LIMIT = 1000

Handler = Callable[[Frame], Awaitable[Frame]]


class Raft(Protocol):
    """What the handlers use of the raft loop (rkv.node.raft_loop.RaftLoop)."""

    @property
    def view(self) -> RaftView: ...

    def offer(self, item: Input) -> bool: ...

    async def submit(self, item: Input, w: Waiter, what: str) -> None: ...

    async def read_barrier(self) -> None: ...


def leader_check(view: RaftView, me: str) -> None:
    """Raise unless this node (`me`) leads: NotLeader naming the leader, or Unavailable."""
    if view.role == Role.LEADER:
        return
    if view.leader and view.leader != me:
        raise NotLeader(leader_addr=view.leader_addr)
    raise Unavailable("no leader known; retry")


# -- field decoding: what a request frame's fields mean ---------------------------------------


def session(f: Frame) -> tuple[bytes, int]:
    """The write's client session and sequence number."""
    client_id = bytes_field(f, "c", MAX_ID_LEN)
    seq = f.get("s")
    if type(seq) is not int or seq < 1:
        raise BadRequest("s (seq) must be an integer >= 1")
    return client_id, seq


def put_command(f: Frame) -> Put:
    return Put(bytes_field(f, "k"), bytes_field(f, "val"))


def delete_command(f: Frame) -> Delete:
    return Delete(bytes_field(f, "k"))


def cas_command(f: Frame) -> Cas:
    exp = f.get("exp")
    if exp is not None and not isinstance(exp, bytes):
        raise BadRequest("exp must be bytes or nil")
    return Cas(bytes_field(f, "k"), exp, bytes_field(f, "val"))


def file_chunk_command(f: Frame) -> FileChunk:
    return FileChunk(
        bytes_field(f, "k"), bytes_field(f, "u"), int_field(f, "n"), bytes_field(f, "data")
    )


def file_commit_command(f: Frame) -> FileCommit:
    return FileCommit(
        bytes_field(f, "k"),
        bytes_field(f, "u"),
        int_field(f, "size"),
        int_field(f, "chunks"),
        bytes_field(f, "sha"),
    )


def file_abort_command(f: Frame) -> FileAbort:
    return FileAbort(bytes_field(f, "u"), 0)


def file_delete_command(f: Frame) -> FileDelete:
    return FileDelete(bytes_field(f, "k"))


def key(f: Frame) -> bytes:
    return bytes_field(f, "k")


def scan_args(f: Frame) -> tuple[bytes, int]:
    """(prefix, limit) of a scan."""
    prefix = bytes_field(f, "p") if f.get("p") is not None else b""
    limit = f.get("limit", DEFAULT_SCAN_LIMIT)
    if type(limit) is not int or not 1 <= limit <= MAX_SCAN_LIMIT:
        raise BadRequest(f"limit must be an integer in 1..{MAX_SCAN_LIMIT}")
    return prefix, limit


def file_read_args(f: Frame) -> tuple[bytes, int, bytes]:
    """(key, chunk number, the file's sha256) of a chunk read."""
    return bytes_field(f, "k"), int_field(f, "n"), bytes_field(f, "sha")


def stale(f: Frame) -> bool:
    """Whether a read may be served from local state without a read barrier."""
    v = f.get("stale", False)
    if not isinstance(v, bool):
        raise BadRequest("stale must be a bool")
    return v


# -- the handlers -----------------------------------------------------------------------------


class ClientHandlers:
    def __init__(self, cfg: NodeConfig, store: Any, raft: Raft, metrics: NodeMetrics) -> None:
        self.cfg = cfg
        self.store = store
        self.raft = raft
        self.metrics = metrics

    def routes(self) -> dict[str, Handler]:
        return {
            "put": self.put,
            "delete": self.delete,
            "cas": self.cas,
            "file_chunk": self.file_chunk,
            "file_commit": self.file_commit,
            "file_delete": self.file_delete,
            "file_abort": self.file_abort,
            "get": self.get,
            "scan": self.scan,
            "file_meta": self.file_meta,
            "file_read": self.file_read,
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
            data = self._request_data(frame, put_command(frame))
            self.leader_check()
        except REQUEST_ERRORS as e:
            answer(as_error(e))
            return True
        t0 = trio.current_time()
        w = Waiter(deadline=t0 + self.cfg.request_timeout, what="write not committed")
        w.on_done = partial(self._put_done, answer, t0)
        return self.raft.offer(Propose(data, w, early=True))

    def _put_done(self, answer: Answer, t0: float, w: Waiter) -> None:
        if w.error is not None:
            answer(w.error)
            return
        self.metrics.on_commit(trio.current_time() - t0)
        refused = refusal(w.result)
        answer({"t": "ok"} if refused is None else refused)

    @staticmethod
    def _request_data(frame: Frame, command: Command) -> bytes:
        """The log entry data of a write: the command with the frame's session and seq."""
        client_id, seq = session(frame)
        return encode_request(Request(client_id, seq, command))

    async def _propose(self, frame: Frame, command: Command) -> Any:
        data = self._request_data(frame, command)
        self.leader_check()
        w = Waiter()
        t0 = trio.current_time()
        # A put's result is always ok (a duplicate or stale retry of the session's seq took
        # effect already), so it is answered once committed (Replica.answer_committed).
        await self.raft.submit(
            Propose(data, w, early=isinstance(command, Put)), w, "write not committed"
        )
        self.metrics.on_commit(trio.current_time() - t0)
        refused = refusal(w.result)
        if refused is not None:
            raise refused
        return getattr(w.result, "value", None)

    async def _linearizable(self) -> None:
        await self.raft.read_barrier()

    async def _maybe_linearizable(self, frame: Frame) -> None:
        if not stale(frame):
            await self._linearizable()

    # -- writes -------------------------------------------------------------------------------

    async def put(self, f: Frame) -> Frame:
        await self._propose(f, put_command(f))
        return {"t": "ok"}

    async def delete(self, f: Frame) -> Frame:
        existed = await self._propose(f, delete_command(f))
        return {"t": "ok", "existed": bool(existed)}

    async def cas(self, f: Frame) -> Frame:
        swapped = await self._propose(f, cas_command(f))
        return {"t": "ok", "swapped": bool(swapped)}

    async def file_chunk(self, f: Frame) -> Frame:
        await self._propose(f, file_chunk_command(f))
        return {"t": "ok"}

    async def file_commit(self, f: Frame) -> Frame:
        await self._propose(f, file_commit_command(f))
        return {"t": "ok"}

    async def file_abort(self, f: Frame) -> Frame:
        aborted = await self._propose(f, file_abort_command(f))
        return {"t": "ok", "aborted": bool(aborted)}

    async def file_delete(self, f: Frame) -> Frame:
        existed = await self._propose(f, file_delete_command(f))
        return {"t": "ok", "existed": bool(existed)}

    # -- reads --------------------------------------------------------------------------------

    async def get(self, f: Frame) -> Frame:
        k = key(f)
        await self._maybe_linearizable(f)
        return {"t": "ok", "val": self.store.get(k)}

    async def scan(self, f: Frame) -> Frame:
        prefix, limit = scan_args(f)
        await self._maybe_linearizable(f)
        items = self.store.scan(prefix, limit)
        return {"t": "ok", "items": [[k, v] for k, v in items]}

    async def file_meta(self, f: Frame) -> Frame:
        k = key(f)
        await self._maybe_linearizable(f)
        m = self.store.file_manifest(k)
        if m is None:
            raise NotFound(f"no file {k!r}")
        return {"t": "ok", "size": m.size, "chunks": m.chunks, "sha": m.sha256}

    async def file_read(self, f: Frame) -> Frame:
        k, n, sha = file_read_args(f)
        m = self.store.file_manifest(k)
        if m is None:
            raise NotFound(f"no file {k!r}")
        if m.sha256 != sha:
            raise Changed(f"file {k!r} was overwritten")
        if n >= m.chunks:
            raise NotFound(f"file {k!r} has {m.chunks} chunks, no chunk {n}")
        try:
            data = self.store.read_chunk(k, n)
        except NotFoundError as e:
            raise NotFound(one_line(str(e))) from None
        return {"t": "ok", "data": data}
