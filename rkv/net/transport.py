"""Outbound peer links for Raft traffic: one persistent connection and sender task per peer.

Owns: the per-peer bounded queues (`send` never blocks; a full queue drops, which Raft
tolerates), connecting with exponential backoff and jitter, the optional hello frame,
and writing everything queued at a given moment in one write. Frames are one-way: the
receiving node's `rpc.serve` handler gets them and answers nothing (an error frame from
the peer, such as a refused hello, is logged and ends that connection).

It does not interpret frames, never retries a frame that could not be written, and has
no inbound side (that is rpc.serve).
"""

from __future__ import annotations

import logging
import random
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from rkv.net.framing import DEFAULT_MAX_FRAME, Frame, FrameError, encode_frame
from rkv.net.rpc import RemoteError, RpcError, connect_framed
from rkv.net.stream import FramedStream

log = logging.getLogger("rkv.net.transport")

PeerId = str
Address = tuple[str, int]


@dataclass(slots=True)
class _Peer:
    peer_id: PeerId
    address: Address
    queue: deque[bytes] = field(default_factory=deque)
    wakeup: trio.Event = field(default_factory=trio.Event)
    scope: trio.CancelScope | None = None
    queued_total: int = 0
    sent: int = 0
    writes: int = 0
    dropped: int = 0
    connected: bool = False
    reconnects: int = 0
    connects: int = 0
    failures: int = 0
    backoff: float = 0.0
    writing: int = 0  # frames in the write under way (lost if it is interrupted)
    eager: FramedStream | None = None  # set while the sender is idle: send() may write at once
    eager_writes: int = 0
    tail_at_head: bool = False  # queue[0] is the rest of a frame partly written eagerly
    last_error: str | None = None
    last_refusal: str | None = None  # logged once, not on every reconnect

    def stats(self) -> dict[str, Any]:
        return {
            "address": f"{self.address[0]}:{self.address[1]}",
            "queued": len(self.queue),
            "sent": self.sent,
            "writes": self.writes,
            "eager_writes": self.eager_writes,
            "dropped": self.dropped,
            "connected": self.connected,
            "reconnects": self.reconnects,
            "backoff": self.backoff,
            "last_error": self.last_error,
        }

    def on_disconnect(self) -> None:
        self.connected = False
        self.eager = None
        self.dropped += self.writing
        self.writing = 0
        if self.tail_at_head:
            # The tail of a frame begun on the dead connection would be garbage at the start
            # of the next one: drop it (Raft tolerates loss); whole frames behind it stay.
            self.queue.popleft()
            self.dropped += 1
            self.tail_at_head = False

    def drop_queued(self) -> None:
        self.dropped += len(self.queue)
        self.queue.clear()
        self.tail_at_head = False


class PeerTransport:
    """Persistent, lossy, batched one-way links from `self_id` to each peer.

    Call `send(to, frame)` from the node's trio thread; run `run()` in the node's nursery
    (``await nursery.start(transport.run)``). Membership can change at any time with
    `set_peers`, `add_peer`, `remove_peer`.
    """

    def __init__(
        self,
        self_id: PeerId,
        peers: dict[PeerId, Address],
        *,
        queue_size: int = 1024,
        max_frame: int = DEFAULT_MAX_FRAME,
        backoff_min: float = 0.05,
        backoff_max: float = 0.5,
        hello: Frame | None = None,
        connect_timeout: float = 2.0,
        write_timeout: float = 5.0,
        rng: random.Random | None = None,
        ssl_context: ssl.SSLContext | None = None,
        token: str | bytes | None = None,
        on_refused: Callable[[PeerId, str], None] | None = None,
    ) -> None:
        """`on_refused(peer, code)` hears every refusal a peer answers a link with (a refused
        hello, or the error frame a peer closes the link with)."""
        if queue_size < 1:
            raise ValueError("queue_size must be >= 1")
        if not 0 < backoff_min <= backoff_max:
            raise ValueError("need 0 < backoff_min <= backoff_max")
        self.self_id = self_id
        self.queue_size = queue_size
        self.max_frame = max_frame
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.connect_timeout = connect_timeout
        self.write_timeout = write_timeout
        self._hello = None if hello is None else {**hello, "t": "hello"}
        if self._hello is not None:
            self._hello.pop("id", None)
            encode_frame(self._hello, max_frame)  # local misuse raises here, not later
        self._rng = rng if rng is not None else random.Random()
        # Links prove `token` as self_id (rpc.connect_framed) before the hello is sent.
        self._ssl_context = ssl_context
        self._token = token or None
        self._on_refused = on_refused
        self._peers: dict[PeerId, _Peer] = {}
        self._nursery: trio.Nursery | None = None
        self.unknown_dropped = 0
        self.set_peers(peers)

    # -- membership -------------------------------------------------------------------

    def set_peers(self, peers: dict[PeerId, Address]) -> None:
        """Make the peer set exactly `peers` (self_id is ignored). Peers whose address
        changed get a fresh link; removed peers' queued frames are discarded."""
        wanted = {pid: addr for pid, addr in peers.items() if pid != self.self_id}
        for pid in sorted(set(self._peers) - set(wanted)):
            self.remove_peer(pid)
        for pid in sorted(wanted):
            self.add_peer(pid, wanted[pid])

    def add_peer(self, peer_id: PeerId, address: Address) -> None:
        if peer_id == self.self_id:
            return
        host, port = address
        address = (str(host), int(port))
        old = self._peers.get(peer_id)
        if old is not None:
            if old.address == address:
                return
            self.remove_peer(peer_id)
        peer = _Peer(peer_id, address)
        self._peers[peer_id] = peer
        if self._nursery is not None:
            self._nursery.start_soon(self._peer_task, peer)

    def remove_peer(self, peer_id: PeerId) -> None:
        peer = self._peers.pop(peer_id, None)
        if peer is None:
            return
        peer.queue.clear()
        if peer.scope is not None:
            peer.scope.cancel()

    @property
    def peers(self) -> dict[PeerId, Address]:
        return {pid: p.address for pid, p in self._peers.items()}

    # -- sending ----------------------------------------------------------------------

    def send(self, to: PeerId, frame: Frame, *, now: bool = False) -> bool:
        """Queue a one-way frame for `to`; never blocks.

        Frames queued in one turn of the caller go out in one write. With `now`, a frame for
        an idle link is written at once from the caller's task, as far as the socket takes
        it without waiting (what is left, and every frame while the link is busy, is
        queued as usual): for a caller that sends one batched frame per peer and then blocks.

        Returns False (and counts a drop) when `to` is unknown or its queue is full.
        Raises TypeError/ValueError for a frame that cannot be encoded (local misuse).
        """
        if "id" in frame:
            raise ValueError("peer frames are one-way and carry no id")
        data = encode_frame(frame, self.max_frame)
        peer = self._peers.get(to)
        if peer is None:
            self.unknown_dropped += 1
            return False
        if len(peer.queue) >= self.queue_size:
            peer.dropped += 1
            return False
        if now and peer.eager is not None and not peer.queue:
            # The link is idle: write from the caller's task instead of waking the sender
            # (one task switch less per frame, and the bytes leave before the caller
            # blocks on anything, e.g. a synchronous fsync in the raft loop).
            n = peer.eager.try_send_now(data)
            if n == len(data):
                peer.queued_total += 1
                peer.sent += 1
                peer.writes += 1
                peer.eager_writes += 1
                return True
            # The rest must go first: it is the tail of a frame already partly written.
            if n:
                data = data[n:]
                peer.tail_at_head = True
        peer.queue.append(data)
        peer.queued_total += 1
        peer.wakeup.set()
        return True

    def statistics(self) -> dict[PeerId, dict[str, Any]]:
        """Per peer: queued, sent, dropped, connected, reconnects, backoff, last_error."""
        return {pid: self._peers[pid].stats() for pid in sorted(self._peers)}

    # -- tasks ------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run every peer's sender until cancelled."""
        if self._nursery is not None:
            raise RuntimeError("PeerTransport.run is already running")
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for pid in sorted(self._peers):
                    nursery.start_soon(self._peer_task, self._peers[pid])
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            for peer in self._peers.values():
                peer.connected = False

    def _backoff(self, peer: _Peer) -> float:
        # Equal jitter: half the exponential delay is fixed so the delay keeps growing,
        # half is random so peers that failed together do not retry in lockstep.
        exp = min(self.backoff_max, self.backoff_min * 2.0 ** max(0, peer.failures - 1))
        peer.backoff = exp
        return exp / 2 + self._rng.uniform(0, exp / 2)

    async def _peer_task(self, peer: _Peer) -> None:
        with trio.CancelScope() as scope:
            peer.scope = scope
            while self._peers.get(peer.peer_id) is peer:
                try:
                    fs = await connect_framed(
                        peer.address[0],
                        peer.address[1],
                        self.connect_timeout,
                        max_frame=self.max_frame,
                        ssl_context=self._ssl_context,
                        token=self._token,
                        role=self.self_id,
                    )
                except RpcError as exc:
                    peer.last_error = f"connect: {exc}"
                    if isinstance(exc, RemoteError) and self._on_refused is not None:
                        self._on_refused(peer.peer_id, exc.code)
                    if isinstance(exc, RemoteError) and peer.last_error != peer.last_refusal:
                        peer.last_refusal = peer.last_error
                        log.warning("peer %s refused us: %s", peer.peer_id, exc)
                    # Whatever waited for this peer is stale by the next attempt.
                    peer.drop_queued()
                    peer.failures += 1
                    await trio.sleep(self._backoff(peer))
                    continue
                peer.connects += 1
                if peer.connects > 1:
                    peer.reconnects += 1
                started = trio.current_time()
                try:
                    await self._connected(peer, fs)
                finally:
                    peer.on_disconnect()
                    await trio.aclose_forcefully(fs.stream)
                # A link that stayed up longer than the longest backoff was healthy: start
                # the backoff again from the bottom; one that died at once keeps growing it.
                if trio.current_time() - started > self.backoff_max:
                    peer.failures = 0
                peer.failures += 1
                await trio.sleep(self._backoff(peer))
        peer.connected = False

    async def _connected(self, peer: _Peer, fs: FramedStream) -> None:
        peer.connected = True
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._drain_replies, peer, fs, nursery.cancel_scope)
            await self._write_loop(peer, fs)
            nursery.cancel_scope.cancel()

    async def _write_loop(self, peer: _Peer, fs: FramedStream) -> None:
        pending_hello = self._hello is not None
        try:
            while True:
                if not peer.queue and not pending_hello:
                    peer.wakeup = trio.Event()
                    peer.eager = fs
                    try:
                        await peer.wakeup.wait()
                    finally:
                        # also on cancellation: a closed link must never be written eagerly
                        peer.eager = None
                batch = list(peer.queue)
                peer.queue.clear()
                peer.tail_at_head = False
                chunks = batch
                if pending_hello:
                    assert self._hello is not None
                    chunks = [encode_frame(self._hello, self.max_frame), *batch]
                    pending_hello = False
                peer.writing = len(batch)
                peer.writes += 1
                try:
                    with trio.fail_after(self.write_timeout):
                        await fs.send_encoded(chunks)
                except (
                    trio.BrokenResourceError,
                    trio.ClosedResourceError,
                    trio.TooSlowError,
                ) as exc:
                    peer.last_error = f"write: {exc!r}"
                    return
                peer.writing = 0
                peer.sent += len(batch)
        finally:
            peer.eager = None

    async def _drain_replies(self, peer: _Peer, fs: FramedStream, scope: trio.CancelScope) -> None:
        # Peers answer nothing on this link except a final error frame; reading also
        # notices a closed connection before the next write would.
        try:
            while True:
                frame = await fs.receive()
                if frame is None:
                    peer.last_error = "closed by peer"
                    break
                if frame["t"] == "error":
                    # The peer's last word before it closes (e.g. a refused hello).
                    peer.last_error = f"{frame.get('code')}: {frame.get('msg')}"
                    code = frame.get("code")
                    if isinstance(code, str) and self._on_refused is not None:
                        self._on_refused(peer.peer_id, code)
                    if peer.last_error != peer.last_refusal:
                        peer.last_refusal = peer.last_error
                        log.warning(
                            "peer %s (%s:%s) refused us: %s",
                            peer.peer_id,
                            *peer.address,
                            peer.last_error,
                        )
                    break
        except (FrameError, trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            peer.last_error = f"read: {exc!r}"
        scope.cancel()


__all__ = ["Address", "PeerId", "PeerTransport"]
