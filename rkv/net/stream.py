"""A framed trio stream: frames (dicts) over any `trio.abc.Stream`.

Owns the glue between a byte stream and `framing.FrameDecoder`: buffering of decoded
frames, clean-EOF detection, the idle and per-frame receive deadlines (with the minimum rate
a started frame's bytes must keep), the cap on the size of incoming frames, and serialising
concurrent writers. It does not interpret frame types (that is rpc.py's job) and does not
reconnect (that is transport.py's job).
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Iterable

import trio

from rkv.net.framing import (
    DEFAULT_MAX_FRAME,
    E_FRAME_TIMEOUT,
    E_TRUNCATED,
    Frame,
    FrameDecoder,
    FrameError,
    encode_frame,
)

RECEIVE_CHUNK = 64 * 1024


class IdleTimeout(Exception):
    """No byte arrived within the idle deadline while no frame was in progress."""


class FramedStream:
    """Send and receive whole frames over a trio stream.

    `send` / `send_many` / `send_encoded` may be called from several tasks (a lock keeps
    frames whole). `receive` must be called from one task at a time.
    """

    def __init__(self, stream: trio.abc.Stream, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.stream = stream
        self.max_frame = max_frame
        self._decoder = FrameDecoder(max_frame)
        self._frames: deque[Frame] = deque()
        self._send_lock = trio.StrictFIFOLock()
        self._eof = False
        sock = getattr(stream, "socket", None)
        self._socket = sock if isinstance(sock, trio.socket.SocketType) else None
        """The plain socket under the stream (None under TLS): `receive_many` reads it."""

    async def send(self, frame: Frame) -> None:
        await self.send_encoded([encode_frame(frame, self.max_frame)])

    async def send_many(self, frames: Iterable[Frame]) -> None:
        """Encode every frame first (local errors raise before anything is written), then
        write them all with one `send_all`."""
        await self.send_encoded([encode_frame(f, self.max_frame) for f in frames])

    async def send_encoded(self, chunks: Iterable[bytes]) -> None:
        """Write already encoded frames (see `framing.encode_frame`) in one `send_all`."""
        data = b"".join(chunks)
        if not data:
            return
        async with self._send_lock:
            await self.stream.send_all(data)

    async def send_raw(self, data: bytes | memoryview) -> None:
        """Write `data` as it is (whole frames, or the rest of frames begun with
        `try_send_now`): no join, no copy."""
        if not data:
            return
        async with self._send_lock:
            await self.stream.send_all(data)

    def try_send_now(self, data: bytes) -> int:
        """Write as much of `data` as the socket takes right now, without waiting; returns the
        bytes written (0 when busy, would block, or not a socket). The caller must send the
        rest (`data[n:]`) before anything else, and must not interleave this with a pending
        `send_*`. Errors are left for the next `send_*` to raise.

        This saves a task switch per message for senders whose writes nearly always fit the
        socket buffer (small Raft messages, small responses)."""
        if self._send_lock.locked():
            return 0
        sock = getattr(self.stream, "socket", None)
        if sock is None:
            return 0
        try:
            return os.write(sock.fileno(), data)
        except OSError:
            # EAGAIN/EWOULDBLOCK as well as a broken connection: the task-based path
            # waits, or raises the error where it is handled.
            return 0

    @property
    def receive_limit(self) -> int:
        """The largest frame `receive` accepts (`max_frame` unless lowered)."""
        return self._decoder.max_frame

    @receive_limit.setter
    def receive_limit(self, limit: int) -> None:
        """Lower (or restore) the cap for frames not yet started: a connection that has not
        authenticated yet has no business sending more than a few hundred bytes."""
        self._decoder.max_frame = limit

    @property
    def in_frame(self) -> bool:
        """Some bytes of a frame have arrived, not all of it."""
        return self._decoder.in_frame

    async def receive(
        self,
        *,
        idle_timeout: float | None = None,
        frame_timeout: float | None = None,
        min_rate: float | None = None,
        guard: trio.CancelScope | None = None,
    ) -> Frame | None:
        """The next frame, or None on a clean EOF (EOF between frames).

        Raises FrameError for garbage, for EOF inside a frame (``truncated``) and when a
        started frame does not complete in time (``frame_timeout``: the slowloris guard):
        without `min_rate`, within `frame_timeout` seconds of its first byte; with it, its
        bytes must keep arriving at `min_rate` bytes per second on average after a grace of
        `frame_timeout` seconds, and never pause for more than `frame_timeout` seconds. So a
        large frame on a good link may take as long as it needs, while a sender trickling
        bytes (1 per second) is cut off after about `frame_timeout`. Raises IdleTimeout when
        no frame starts within `idle_timeout` seconds of this call. A timeout loses no data:
        the call can be repeated.

        With `guard` (a cancel scope the caller holds around its read loop) the deadlines
        are set on it instead of on a new scope per wait (a scope costs more than a small
        frame's receive): a timeout then cancels the caller's scope instead of raising, and
        `in_frame` tells the frame timeout from the idle one.
        """
        if self._frames:
            return self._frames.popleft()
        # Frames decoded before garbage were returned; now surface the garbage.
        self._frames.extend(self._decoder.feed())
        if self._frames:
            return self._frames.popleft()
        now = trio.current_time()
        idle_deadline = math.inf if idle_timeout is None else now + idle_timeout
        # The frame deadline counts only time spent waiting here: bytes that sat in our
        # buffer while the caller was busy (back-pressure) must not count against the peer.
        frame_started: float | None = now if self._decoder.in_frame else None
        last_data = now
        got = 0  # bytes of the frame in progress received in this call
        while True:
            if self._eof:
                if self._decoder.in_frame:
                    raise FrameError(E_TRUNCATED, "connection closed in the middle of a frame")
                return None
            if frame_started is None:
                deadline = idle_deadline
            elif frame_timeout is None:
                deadline = math.inf
            elif min_rate is None:
                deadline = frame_started + frame_timeout
            else:
                deadline = min(
                    frame_started + frame_timeout + got / min_rate, last_data + frame_timeout
                )
            data: bytes | bytearray | None = None
            if guard is not None:
                guard.deadline = deadline
                data = await self.stream.receive_some(RECEIVE_CHUNK)
            elif deadline == math.inf:
                # No deadline, no cancel scope: a scope costs more than the receive itself
                # (a client's reader waits like this for every answer).
                data = await self.stream.receive_some(RECEIVE_CHUNK)
            else:
                with trio.move_on_at(deadline):
                    data = await self.stream.receive_some(RECEIVE_CHUNK)
            if data is None:
                if frame_started is not None:
                    msg = frame_timeout_message(frame_timeout, min_rate)
                    raise FrameError(E_FRAME_TIMEOUT, msg)
                raise IdleTimeout(f"no frame within {idle_timeout} seconds")
            if not data:
                self._eof = True
                continue
            self._frames.extend(self._decoder.feed(data))
            if self._frames:
                return self._frames.popleft()
            got += len(data)
            if frame_started is None or min_rate is not None:
                last_data = trio.current_time()
                if frame_started is None:
                    frame_started = last_data

    async def receive_many(self) -> list[Frame]:
        """Every frame that has arrived, waiting (without a deadline) for at least one; []
        on a clean EOF. Raises what `receive` raises, and BrokenResourceError for a socket
        error. For a reader that takes frames in bulk (an RPC client's answers).

        On a plain socket it waits for readability and then reads the descriptor itself:
        one read per wake-up instead of trio's failed read, wait and read again (it tries
        the read first only after one that filled the buffer, when more is likely there)."""
        if self._frames:
            out = list(self._frames)
            self._frames.clear()
            return out
        frames = self._decoder.feed()
        if frames:
            return frames
        fd = -1 if self._socket is None else self._socket.fileno()
        try_first = False
        while True:
            if self._eof:
                if self._decoder.in_frame:
                    raise FrameError(E_TRUNCATED, "connection closed in the middle of a frame")
                return []
            if fd < 0:
                data = await self.stream.receive_some(RECEIVE_CHUNK)
            else:
                if not try_first:
                    await trio.lowlevel.wait_readable(fd)
                try:
                    data = os.read(fd, RECEIVE_CHUNK)
                except BlockingIOError:
                    try_first = False
                    continue
                except OSError as exc:
                    raise trio.BrokenResourceError(f"socket read failed: {exc!r}") from exc
                try_first = len(data) == RECEIVE_CHUNK
                if try_first:
                    await trio.lowlevel.checkpoint()
            if not data:
                self._eof = True
                continue
            frames = self._decoder.feed(data)
            if frames:
                return frames

    async def peek(
        self,
        *,
        idle_timeout: float | None = None,
        frame_timeout: float | None = None,
        min_rate: float | None = None,
    ) -> Frame | None:
        """Wait for the next frame as `receive` does, without consuming it: the next
        `receive` returns it. None on a clean EOF; raises what `receive` raises."""
        frame = await self.receive(
            idle_timeout=idle_timeout, frame_timeout=frame_timeout, min_rate=min_rate
        )
        if frame is not None:
            self._frames.appendleft(frame)
        return frame

    async def aclose(self) -> None:
        await self.stream.aclose()

    async def __aenter__(self) -> FramedStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def frame_timeout_message(frame_timeout: float | None, min_rate: float | None) -> str:
    """What a connection closed for a too slow frame is told (see `FramedStream.receive`)."""
    if min_rate is None:
        return f"frame not completed within {frame_timeout} seconds"
    return (
        f"frame too slow: under {min_rate:g} bytes/s after {frame_timeout} seconds, "
        f"or no byte for {frame_timeout} seconds"
    )


async def open_framed(
    host: str, port: int, timeout: float | None = 5.0, *, max_frame: int = DEFAULT_MAX_FRAME
) -> FramedStream:
    """Connect over TCP (TCP_NODELAY is set by trio) and wrap the stream.

    Raises OSError when the connection is refused, trio.TooSlowError after `timeout`.
    """
    with trio.fail_after(math.inf if timeout is None else timeout):
        stream = await trio.open_tcp_stream(host, port)
    return FramedStream(stream, max_frame)
