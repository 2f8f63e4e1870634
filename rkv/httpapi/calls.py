"""An HTTP request's way into the node: an rkv.protocol request, its frame handed to the node's
dispatcher (the path every native client request takes: a follower forwards writes to the
leader itself), and the answer read as a native client reads it.

Owns: the retry loop within an HTTP request's deadline (answers that say "try again":
`unavailable`, `not_leader`, `timeout`; a write keeps its session id and sequence number, so
the state machine applies it once however many attempts reach the leader), and turning an
error frame into the rkv error it stands for. Must not: know HTTP (rkv.httpapi.api maps the
errors) or the node's insides (it only has the dispatch callable it is given).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

from rkv.errors import InternalError, RkvError, from_error_frame
from rkv.protocol import ClientRequest

Frame = dict[str, Any]
Dispatch = Callable[[Frame], Awaitable[Frame | None]]
"""The node's dispatcher for one client frame (rkv.node.dispatch.Dispatcher.handle with the
HTTP port's connection info): an ok or error frame."""

RETRY_CODES = frozenset({"unavailable", "not_leader", "timeout"})
RETRY_PAUSE = 0.05
RETRY_PAUSE_MAX = 0.5


class Caller:
    def __init__(self, dispatch: Dispatch, *, timeout: float) -> None:
        self._dispatch = dispatch
        self.timeout = timeout
        """Seconds one HTTP request may keep retrying (then its last error is answered)."""
        self.calls = 0
        self.retries = 0

    async def call(self, request: ClientRequest, deadline: float | None = None) -> Frame:
        """The ok frame answering `request`; raises the RkvError its error frame stands for
        once retrying cannot help or `deadline` (trio time) has passed."""
        frame = request.to_frame()
        end = deadline if deadline is not None else trio.current_time() + self.timeout
        pause = RETRY_PAUSE
        self.calls += 1
        while True:
            answer = await self._dispatch(dict(frame))
            if answer is None:
                raise InternalError(f"no answer to a {request.T} request")
            if answer.get("t") == "ok":
                return answer
            err: RkvError = from_error_frame(answer)
            if err.code not in RETRY_CODES or trio.current_time() + pause >= end:
                raise err
            self.retries += 1
            await trio.sleep(pause)
            pause = min(pause * 2, RETRY_PAUSE_MAX)
