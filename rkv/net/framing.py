"""Sans-IO framing of rkv's wire protocol: bytes in, frames out (h11 style).

A frame is a 4-byte big-endian body length followed by ONE msgpack map
``{"v": 1, "t": <type str>, "id": <int, optional>, ...}``.

This module owns the byte format, the size cap and the split between *remote* errors
(`FrameError`: the peer sent garbage; answer with an error frame and close) and *local*
misuse (`ValueError` / `TypeError` raised to the caller). It does no I/O, knows nothing
about trio, and must not import rkv's domain objects: it uses only codec's msgpack helpers
(`packb`, `unpack`), with every length limit set so that a hostile peer cannot make us
allocate more than one frame.
"""

from __future__ import annotations

import struct
from typing import Any, Final

from rkv.codec import CodecError, packb, unpack

PROTOCOL_VERSION: Final = 1
DEFAULT_MAX_FRAME: Final = 16 * 1024 * 1024
HEADER_SIZE: Final = 4
# The header can express up to 4 GiB; no configuration may exceed what it can carry.
MAX_FRAME_LIMIT: Final = 0xFFFFFFFF

_HEADER = struct.Struct(">I")
# Compacting the receive buffer costs one copy of what is left; doing it only once the
# consumed prefix is large (and at least half the buffer) keeps feeding linear overall.
_COMPACT_MIN = 64 * 1024

Frame = dict[str, Any]

# Codes of remote framing errors (sent back in the error frame's "code").
E_TOO_LARGE: Final = "frame_too_large"
E_BAD_MSGPACK: Final = "bad_msgpack"
E_NOT_A_MAP: Final = "not_a_map"
E_BAD_TYPE: Final = "bad_type"
E_BAD_VERSION: Final = "bad_version"
E_BAD_ID: Final = "bad_id"
E_TRUNCATED: Final = "truncated"
E_FRAME_TIMEOUT: Final = "frame_timeout"


class FrameError(Exception):
    """The peer sent something that is not a valid frame (a remote error).

    The connection cannot be trusted afterwards: reply with an error frame carrying
    `code` and `message`, then close it.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def _check_max_frame(max_frame: int) -> None:
    if not isinstance(max_frame, int) or isinstance(max_frame, bool):
        raise TypeError(f"max_frame must be an int, not {type(max_frame).__name__}")
    if not 1 <= max_frame <= MAX_FRAME_LIMIT:
        raise ValueError(f"max_frame must be in 1..{MAX_FRAME_LIMIT}, got {max_frame}")


def encode_frame(body: Frame, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """Encode one frame (header + msgpack map); adds ``"v"``.

    Raises TypeError for a non-dict body, a missing/non-str ``"t"`` or a value msgpack
    cannot encode, and ValueError when the encoded body exceeds `max_frame`. These are
    local programming errors, never remote ones.
    """
    _check_max_frame(max_frame)
    if not isinstance(body, dict):
        raise TypeError(f"a frame body must be a dict, not {type(body).__name__}")
    t = body.get("t")
    if not isinstance(t, str):
        raise TypeError(f'a frame needs a str "t", got {t!r}')
    rid = body.get("id")
    if rid is not None and (not isinstance(rid, int) or isinstance(rid, bool)):
        raise TypeError(f'a frame "id" must be an int, got {rid!r}')
    full = body if body.get("v") == PROTOCOL_VERSION else {**body, "v": PROTOCOL_VERSION}
    try:
        payload = packb(full)
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"cannot encode frame {t!r}: {exc}") from exc
    if len(payload) > max_frame:
        raise ValueError(f"frame {t!r} is {len(payload)} bytes, over the limit of {max_frame}")
    return _HEADER.pack(len(payload)) + payload


def encode_request(body: Frame, rid: int, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """`encode_frame({**body, "id": rid}, max_frame)` with one copy of `body` instead of two
    (the per-call path of an RPC client); raises what encode_frame raises."""
    if not isinstance(body, dict):
        return encode_frame(body, max_frame)  # raises its TypeError
    t = body.get("t")
    if (
        type(t) is not str
        or type(rid) is not int
        or type(max_frame) is not int
        or not 0 < max_frame <= MAX_FRAME_LIMIT
    ):
        return encode_frame({**body, "id": rid}, max_frame)
    try:
        payload = packb({**body, "id": rid, "v": PROTOCOL_VERSION})
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"cannot encode frame {t!r}: {exc}") from exc
    if len(payload) > max_frame:
        raise ValueError(f"frame {t!r} is {len(payload)} bytes, over the limit of {max_frame}")
    return _HEADER.pack(len(payload)) + payload


def encode_frames(bodies: list[Frame], max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """Encode several frames into one buffer (one write)."""
    return b"".join(encode_frame(b, max_frame) for b in bodies)


def error_frame(code: str, msg: str, rid: int | None = None) -> Frame:
    """The body of an error frame; with `rid` it answers that request."""
    body: Frame = {"t": "error", "code": code, "msg": msg}
    if rid is not None:
        body["id"] = rid
    return body


def decode_body(payload: bytes | bytearray | memoryview, max_frame: int) -> Frame:
    """Decode and validate one frame body (without its header); raises FrameError."""
    try:
        obj = unpack(
            payload,
            max_bin_len=max_frame,
            max_str_len=max_frame,
            max_array_len=max_frame,
            max_map_len=max_frame,
        )
    except CodecError as exc:
        raise FrameError(E_BAD_MSGPACK, f"undecodable body: {exc}") from None
    if not isinstance(obj, dict):
        raise FrameError(E_NOT_A_MAP, f"a frame body must be a map, got {type(obj).__name__}")
    v = obj.get("v")
    if type(v) is not int or v != PROTOCOL_VERSION:
        raise FrameError(E_BAD_VERSION, f"unsupported protocol version {v!r}")
    t = obj.get("t")
    if not isinstance(t, str):
        raise FrameError(E_BAD_TYPE, f'missing or non-str "t": {t!r}')
    if "id" in obj and type(obj["id"]) is not int:
        raise FrameError(E_BAD_ID, f'"id" must be an int, got {obj["id"]!r}')
    return obj


class FrameDecoder:
    """Incremental decoder: `feed(bytes)` returns the frames completed so far.

    Partial frames stay buffered. A header announcing more than `max_frame` bytes is
    rejected as soon as its 4 bytes arrive, before any of the body is buffered.

    Errors are sticky: once a FrameError was raised, every later `feed` raises it again.
    If good frames precede the garbage within one `feed`, those frames are returned and
    the error is raised by the next call (use ``feed(b"")`` to flush it).
    """

    __slots__ = ("_buf", "_error", "_max_frame", "_need", "_pos", "_queued_error")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        _check_max_frame(max_frame)
        self._max_frame = max_frame
        self._buf = bytearray()
        self._pos = 0
        self._need = -1  # body length of the frame being assembled; -1 = header not seen
        self._error: FrameError | None = None
        self._queued_error: FrameError | None = None

    @property
    def max_frame(self) -> int:
        return self._max_frame

    @max_frame.setter
    def max_frame(self, max_frame: int) -> None:
        """Change the cap for frames whose header has not arrived yet (e.g. a small one while
        a connection authenticates, the configured one afterwards)."""
        _check_max_frame(max_frame)
        self._max_frame = max_frame

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as frames (0 = between frames)."""
        header = HEADER_SIZE if self._need >= 0 else 0
        return len(self._buf) - self._pos + header

    @property
    def in_frame(self) -> bool:
        """True while a frame has started arriving but is not complete."""
        return self._need >= 0 or len(self._buf) > self._pos

    @property
    def error(self) -> FrameError | None:
        return self._error or self._queued_error

    def feed(self, data: bytes | bytearray | memoryview = b"") -> list[Frame]:
        if self._queued_error is not None:
            self._error, self._queued_error = self._queued_error, None
        if self._error is not None:
            raise self._error
        if data and self._need < 0 and self._pos == len(self._buf):
            return self._feed_fresh(data)
        if data:
            self._buf += data
        frames: list[Frame] = []
        buf = self._buf
        try:
            while True:
                avail = len(buf) - self._pos
                if self._need < 0:
                    if avail < HEADER_SIZE:
                        break
                    (n,) = _HEADER.unpack_from(buf, self._pos)
                    if n > self._max_frame:
                        raise FrameError(
                            E_TOO_LARGE,
                            f"frame of {n} bytes exceeds the limit of {self._max_frame}",
                        )
                    self._pos += HEADER_SIZE
                    self._need = n
                    avail -= HEADER_SIZE
                if avail < self._need:
                    break
                start, end = self._pos, self._pos + self._need
                self._pos, self._need = end, -1
                with memoryview(buf) as view:
                    body = bytes(view[start:end])
                frames.append(decode_body(body, self._max_frame))
        except FrameError as exc:
            self._buf = bytearray()
            self._pos = 0
            self._need = -1
            if frames:
                self._queued_error = exc
                return frames
            self._error = exc
            raise
        self._compact()
        return frames

    def _feed_fresh(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """`feed` with nothing buffered: the whole frames in `data` are decoded where they
        lie (no copy into the buffer and out again); only a trailing part is buffered."""
        frames: list[Frame] = []
        pos, size = 0, len(data)
        with memoryview(data) as view:
            try:
                while size - pos >= HEADER_SIZE:
                    (n,) = _HEADER.unpack_from(view, pos)
                    if n > self._max_frame:
                        raise FrameError(
                            E_TOO_LARGE,
                            f"frame of {n} bytes exceeds the limit of {self._max_frame}",
                        )
                    start = pos + HEADER_SIZE
                    if size - start < n:
                        break
                    pos = start + n
                    frames.append(decode_body(view[start:pos], self._max_frame))
            except FrameError as exc:
                if frames:
                    self._queued_error = exc
                    return frames
                self._error = exc
                raise
            if pos < size:
                self._buf += view[pos:]
        return frames

    def _compact(self) -> None:
        pos = self._pos
        if pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        elif pos >= _COMPACT_MIN and pos * 2 >= len(self._buf):
            del self._buf[:pos]
            self._pos = 0
