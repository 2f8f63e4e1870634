"""Snapshot shipping (docs/snapshots.md): the leader streams its applied state to a follower
in bounded chunks instead of sending a SNAPSHOT message; the follower stages the chunks and
steps a SNAPSHOT message for the staged state once the stream is done.

Owns: the streams going out (one per follower) and their nursery, the one transfer being
staged here (and its lock), the shipping counters. Must not: touch the RawNode (an install is
stepped by the raft loop, through its inbox), or send Raft traffic (rkv.node.peers does).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from ssl import SSLContext
from typing import Any

import trio

from rkv.codec import CodecError, snapshot_meta_from_list, snapshot_meta_to_list
from rkv.config import NodeConfig
from rkv.errors import BadRequest, RkvError, Unavailable, error_frame
from rkv.integrity import IntegrityWatch
from rkv.net.rpc import ConnInfo, RpcClient, RpcError
from rkv.node.common import bytes_field, int_field, one_line
from rkv.node.inbox import Frame, InstallSnapshot, log
from rkv.node.peers import PeerLinks
from rkv.node.raft_loop import RaftLoop
from rkv.raft.types import Message, MessageType, Snapshot
from rkv.store.errors import IntegrityError as StoreIntegrityError
from rkv.store.errors import StoreError


class SnapshotShipper:
    def __init__(
        self,
        cfg: NodeConfig,
        store: Any,
        raft: RaftLoop,
        peers: PeerLinks,
        integrity: IntegrityWatch,
        *,
        ssl_context: SSLContext | None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.raft = raft
        self.peers = peers
        self.integrity = integrity
        self._ssl = ssl_context
        self._nursery: trio.Nursery | None = None
        self._out: dict[str, int] = {}
        """Followers a snapshot is being streamed to -> the term it was started in."""
        self._in_lock = trio.Lock()
        self._in: tuple[str, bytes] | None = None
        """(sender, transfer id) of the snapshot being staged here."""
        self.stats = {
            "sent": 0,
            "send_failures": 0,
            "received": 0,
            "receive_failures": 0,
            "installed": 0,
            "compactions": 0,
            "chunks_sent": 0,
            "chunks_received": 0,
        }
        """The counters; "compactions" is counted by rkv.node.housekeeping."""

    def statistics(self) -> dict[str, Any]:
        return {
            **self.stats,
            "installed": self.raft.snapshots_installed(),
            "sending_to": sorted(self._out),
        }

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    # -- sending ------------------------------------------------------------------------------

    def divert(self, messages: Sequence[Message]) -> Sequence[Message]:
        """Take SNAPSHOT messages out of the Raft traffic: the state is streamed instead."""
        if not any(m.type == MessageType.SNAPSHOT for m in messages):
            return messages
        rest: list[Message] = []
        for m in messages:
            if m.type != MessageType.SNAPSHOT:
                rest.append(m)
            elif self.peers.dropping_to(m.to):
                pass
            elif m.to not in self._out and self._nursery is not None:
                # The core re-sends SNAPSHOT while the follower stays behind; one stream at a
                # time per follower, the repeats are dropped.
                self._out[m.to] = m.term
                self._nursery.start_soon(self._stream, m.to, m.term)
        return rest

    async def _stream(self, to: str, term: int) -> None:
        """Stream our applied state to follower `to` in bounded chunks (request/response, so
        at most one chunk is in flight), then let it install. Any failure ends the attempt;
        the core asks again (its snapshot progress times out) and a new stream starts over."""
        cfg = self.cfg
        host, port = self.peers.address(to)
        xfer = os.urandom(8)
        timeout = max(10.0, cfg.request_timeout)
        try:
            hello = {"cluster": cfg.cluster_id, "node": cfg.id}
            async with RpcClient(
                host,
                port,
                max_frame=cfg.max_frame,
                hello=hello,
                max_inflight=1,
                ssl_context=self._ssl,
                token=cfg.cluster_token,
            ) as client:
                source = await trio.to_thread.run_sync(
                    self.store.open_snapshot, cfg.snapshot_chunk_bytes
                )
                try:
                    meta = snapshot_meta_to_list(source.meta)
                    base = {"t": "snap", "x": xfer, "term": term, "meta": meta}
                    chunks = source.chunks()
                    seq = 0
                    while True:
                        # one LMDB read transaction for the whole stream (MDB_NOTLS lets it
                        # move between worker threads; it is never used by two at once)
                        chunk = await trio.to_thread.run_sync(next, chunks, None)
                        if chunk is None:
                            break
                        await client.call({**base, "seq": seq, "data": chunk}, timeout)
                        seq += 1
                        self.stats["chunks_sent"] += 1
                    done = {"done": True, "chunks": seq, "records": source.records}
                    # the follower answers once it installed (a big state takes a while)
                    await client.call({**base, "seq": seq, **done}, max(timeout, 120.0))
                finally:
                    source.close()
            self.stats["sent"] += 1
            log.info(
                "%s: snapshot at %d sent to %s (%d chunks, %d records)",
                cfg.id,
                source.meta.index,
                to,
                seq,
                source.records,
            )
        except (RpcError, StoreError, OSError) as e:
            self.stats["send_failures"] += 1
            if isinstance(e, StoreIntegrityError):  # the stream stopped before the record
                self.integrity.failed(e, f"a snapshot stream to {to}")
            log.warning("%s: snapshot to %s failed: %s", cfg.id, to, one_line(str(e)))
        finally:
            self._out.pop(to, None)

    # -- receiving ----------------------------------------------------------------------------

    async def on_snap(self, frame: Frame, info: ConnInfo) -> Frame:
        """One chunk of a snapshot stream from the leader (see _stream)."""
        hello = info.hello
        sender = hello.get("node") if hello is not None else None
        if sender is None or not self.peers.may_connect(sender):
            return error_frame(None, BadRequest("snapshot chunks need a hello from a peer"))
        if sender in self.peers.drop_from:
            self.peers.fault_dropped_in += 1
            return error_frame(None, Unavailable("fault injection: dropping this peer"))
        try:
            xfer = bytes_field(frame, "x", 64)
            seq = int_field(frame, "seq")
            term = int_field(frame, "term")
            meta = snapshot_meta_from_list(frame.get("meta"))
            done = frame.get("done", False) is True
            async with self._in_lock:
                if seq == 0:
                    await trio.to_thread.run_sync(self.store.begin_snapshot_install, meta)
                    self._in = (sender, xfer)
                elif self._in != (sender, xfer):
                    raise Unavailable("another snapshot transfer replaced this one; restart")
                if done:
                    self._in = None
                    staged = await trio.to_thread.run_sync(
                        self.store.finish_snapshot_staging,
                        int_field(frame, "chunks"),
                        int_field(frame, "records"),
                    )
                    await self._install_staged(sender, term, staged)
                    self.stats["received"] += 1
                else:
                    data = bytes_field(frame, "data", self.cfg.max_frame)
                    await trio.to_thread.run_sync(self.store.stage_snapshot_chunk, seq, data)
                    self.stats["chunks_received"] += 1
        except RkvError as e:
            self.stats["receive_failures"] += 1
            return error_frame(None, e)
        except (CodecError, StoreError) as e:
            # the live state is untouched; the leader starts over
            self.stats["receive_failures"] += 1
            self._in = None
            return error_frame(None, Unavailable(one_line(f"snapshot refused: {e}")))
        return {"t": "ok"}

    async def _install_staged(self, leader: str, term: int, meta: Any) -> None:
        """Step a SNAPSHOT message for the staged state and wait until the raft loop handled
        it: if the core accepts it, the Ready it makes installs the staged state. The staging
        lock stays held meanwhile, so no new transfer can disturb the staged state."""
        msg = Message(
            MessageType.SNAPSHOT,
            to=self.cfg.id,
            frm=leader,
            term=term,
            index=meta.index,
            log_term=meta.term,
            snapshot=Snapshot(meta=meta),
        )
        done = trio.Event()
        await self.raft.put(InstallSnapshot(msg, done))
        await done.wait()
