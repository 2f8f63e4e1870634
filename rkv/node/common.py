"""Small helpers the node's rooms share: its fatal stop, what an exception in a request means
for the caller, the frame field primitives, and `store_io`, the one way the raft loop runs a
store call (inline or in a worker thread).

Owns: no state. Must not: touch the RawNode, the network, or decide anything of a request's
meaning (the handlers do).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import trio

from rkv.codec import CodecError
from rkv.errors import BadRequest, ExitCode, LeaseNotFound, RkvError, StoreFull
from rkv.node.inbox import Frame
from rkv.raft.types import Entry
from rkv.store.commands import LEASE_NOT_FOUND
from rkv.store.errors import StoreFullError

T = TypeVar("T")


class Fatal(Exception):
    """Stops the node with an exit code and a one-line message."""

    def __init__(self, code: ExitCode, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


class NodeStartError(Exception):
    """The node could not start or had to stop: `code` is the process exit code."""

    def __init__(self, code: ExitCode, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


async def store_io(
    call: Callable[..., T], *args: Any, size: float, inline_bytes: int, what: str
) -> T:
    """`call(*args)` on the raft loop itself when it moves at most `inline_bytes` (a small
    transaction costs less than a thread hand-off: two context switches and a GIL transfer),
    else in a worker thread. A full store stops the node (exit code STORE_FULL): Raft state
    that cannot be made durable cannot be acknowledged, rather than lie to peers."""
    try:
        if size <= inline_bytes:
            return call(*args)
        return await trio.to_thread.run_sync(call, *args)
    except StoreFullError as e:
        raise Fatal(ExitCode.STORE_FULL, f"store full while {what}: {e}") from e


def data_bytes(entries: Sequence[Entry]) -> int:
    return sum(len(e.data) for e in entries)


def refusal(result: Any) -> BadRequest | LeaseNotFound | None:
    """The error for a write the state machine refused (its apply result is not ok): a
    missing lease is LeaseNotFound, anything else BadRequest."""
    if result is None or getattr(result, "ok", True):
        return None
    error = str(getattr(result, "error", "") or "refused")
    if error == LEASE_NOT_FOUND:
        return LeaseNotFound(error)
    return BadRequest(one_line(error))


REQUEST_ERRORS = (RkvError, CodecError, StoreFullError)
"""What a request's own handling may raise for a bad or refused request (`as_error` says
what it means for the caller). A request's fields were checked when it was decoded
(rkv.protocol), so a KeyError, TypeError or ValueError is a bug, answered as an internal
error, not hidden as a bad request."""


def as_error(e: Exception) -> RkvError:
    """What a request handler's exception means for the caller."""
    if isinstance(e, RkvError):
        return e
    if isinstance(e, StoreFullError):
        return StoreFull(one_line(str(e)))
    return BadRequest(one_line(f"{type(e).__name__}: {e}"))


def one_line(s: str) -> str:
    return " ".join(s.split())[:500]


def bytes_field(f: Frame, name: str, max_len: int | None = None) -> bytes:
    v = f.get(name)
    if not isinstance(v, bytes):
        raise BadRequest(f"{name} must be bytes")
    if max_len is not None and len(v) > max_len:
        raise BadRequest(f"{name} is longer than {max_len} bytes")
    return v


def int_field(f: Frame, name: str) -> int:
    v = f.get(name)
    if type(v) is not int or v < 0:
        raise BadRequest(f"{name} must be a non-negative integer")
    return v
