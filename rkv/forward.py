"""Forwarding client requests from a follower to the leader (so any reachable node takes them).

Owns: one RPC connection per leader address, opened as this node (the cluster token proves
the node's role, so the leader's admission control counts it as a peer link and never sheds
it), a bound on forwards in flight, and the retry loop within a request's deadline: a leader
change or a lost connection mid-flight is retried at whoever leads then. The frame goes as
the client sent it, session id and sequence number included, so the state machine applies
it once however many attempts reach the leader (its sessions answer a retry with the first
result). It is marked `fwd`: the node that takes it never forwards it again (it answers
`not_leader` if it no longer leads, and the forwarder tries the next leader).
Must not: know what a request means (the leader's handlers do) or touch the raft loop (it
asks who leads through `leader_addr`). Connections live in the nursery `run` opens.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from typing import Any

import trio

from rkv.config import parse_address
from rkv.errors import Timeout, Unavailable
from rkv.net.rpc import ConnectionLost, RemoteError, RpcClient, RpcError, RpcTimeout
from rkv.protocol import FWD, LEADER_KINDS

log = logging.getLogger("rkv.forward")

Frame = dict[str, Any]

LEADER_TYPES = LEADER_KINDS
"""Requests a follower forwards: those only the leader answers (the writes, the membership
list and changes, leadership transfer; rkv.protocol says which). Reads are served where they
arrive: a linearizable one asks the leader for a read index over the Raft link."""


class LeaderHere(Exception):
    """This node became the leader while forwarding: the caller handles the write itself."""


RETRY_CODES = frozenset({"not_leader", "unavailable"})
"""Answers after which the write is tried again at whoever leads then: that node no longer
leads, or lost leadership before the write committed (the session makes a retry safe)."""

RETRY_PAUSE = 0.05
"""Seconds between two attempts (no leader known, a leader change, a lost connection)."""


class Forwarder:
    def __init__(
        self,
        node_id: str,
        cluster_id: str,
        leader_addr: Callable[[], str | None],
        leads: Callable[[], bool],
        *,
        token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        max_frame: int,
        max_inflight: int = 512,
    ) -> None:
        self._hello = {"cluster": cluster_id, "node": node_id}
        self._leader_addr = leader_addr
        self._leads = leads
        self._token = token
        self._ssl = ssl_context
        self._max_frame = max_frame
        self._max_inflight = max_inflight
        self._inflight = 0
        self._links: dict[str, tuple[RpcClient, trio.Event]] = {}
        self._opening: dict[str, trio.Event] = {}
        self._nursery: trio.Nursery | None = None
        self.forwarded = 0
        """Writes answered through the leader."""
        self.refused = 0
        """Writes not forwarded: too many in flight."""
        self.retries = 0

    def statistics(self) -> dict[str, int]:
        return {
            "forwarded": self.forwarded,
            "refused": self.refused,
            "retries": self.retries,
            "in_flight": self._inflight,
        }

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    async def forward(self, frame: Frame, deadline: float) -> Frame:
        """The leader's answer to `frame` (an ok or an error frame, without an id; an ok one
        names the leader that gave it in "leader_addr"), trying until `deadline` (trio time).
        Raises Unavailable when too many forwards are in flight, Timeout at the deadline,
        LeaderHere once this node leads (before an attempt)."""
        if self._inflight >= self._max_inflight:
            self.refused += 1
            raise Unavailable("too many writes forwarded to the leader; retry")
        self._inflight += 1
        try:
            # as the client sent it (fields this node does not know included), marked
            return await self._attempts({**frame, FWD: True}, deadline)
        finally:
            self._inflight -= 1

    async def _attempts(self, frame: Frame, deadline: float) -> Frame:
        last = "no leader known"
        first = True
        while True:
            if not first:
                self.retries += 1
                if trio.current_time() + RETRY_PAUSE >= deadline:
                    raise Timeout(f"write not forwarded to the leader in time ({last})")
                await trio.sleep(RETRY_PAUSE)
            first = False
            if self._leads():
                raise LeaderHere
            addr = self._leader_addr()
            if addr is None:
                last = "no leader known"
                continue
            try:
                with trio.fail_at(deadline):
                    rpc = await self._link(addr)
                    left = max(deadline - trio.current_time(), 1e-3)
                    reply = await rpc.call(frame, timeout=left)
            except trio.TooSlowError:
                raise Timeout(f"write not forwarded to the leader in time ({last})") from None
            except RemoteError as e:
                if e.code in RETRY_CODES:
                    last = f"{addr}: {e.code}"
                    continue
                answer = {k: v for k, v in e.frame.items() if k != "id"}
                self.forwarded += 1
                return answer
            except (ConnectionLost, RpcTimeout, OSError) as e:
                last = f"{addr}: {e or type(e).__name__}"
                self._drop(addr)
                continue
            self.forwarded += 1
            reply.pop("id", None)
            reply["leader_addr"] = addr  # who answered: a client may go there next time
            return reply

    async def _link(self, addr: str) -> RpcClient:
        while True:
            held = self._links.get(addr)
            if held is not None and held[0].connected:
                return held[0]
            if held is not None:
                self._drop(addr)
            opening = self._opening.get(addr)
            if opening is None:
                break
            await opening.wait()  # someone else is connecting: use theirs
        if self._nursery is None:
            raise ConnectionLost("the forwarder is not running")
        done = self._opening[addr] = trio.Event()
        try:
            await self._nursery.start(self._hold, addr)
        finally:
            del self._opening[addr]
            done.set()
        return self._links[addr][0]

    async def _hold(self, addr: str, *, task_status: trio.TaskStatus[None]) -> None:
        """One connection to `addr`, open until dropped or broken."""
        host, port = parse_address(addr)
        close = trio.Event()
        started = False
        try:
            async with RpcClient(
                host,
                port,
                max_frame=self._max_frame,
                hello=self._hello,
                ssl_context=self._ssl,
                token=self._token,
            ) as rpc:
                self._links[addr] = (rpc, close)
                task_status.started()
                started = True
                await close.wait()
        except (RpcError, OSError) as e:
            log.info("forwarding to %s: %s", addr, e)
            if not started:  # to _link's caller, through nursery.start
                raise ConnectionLost(f"cannot reach the leader {addr}: {e}") from None
            # once started, a broken connection only ends this task: calls on it failed
        finally:
            link = self._links.get(addr)
            if link is not None and link[1] is close:
                del self._links[addr]

    def _drop(self, addr: str) -> None:
        link = self._links.pop(addr, None)
        if link is not None:
            link[1].set()
