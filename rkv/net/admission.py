"""Admission control: which connections a server holds, and which one gives way at a limit.

Owns: the accounting of a server's connections by state and by source address, the limits
(in total and per source), the choice of the connection to shed when a newcomer arrives at a
limit, each connection's handshake deadline (on its cancel scope), and the counters (by
state; shed and refused by reason). It does no I/O and knows nothing of frames beyond the
error frame it hands out: rpc.py accepts, runs and closes the connections and tells this
module when one changes state; a shed connection's scope is cancelled here and rpc.py then
sends the goodbye (`Ticket.goodbye`) and closes it. Pure enough to be tested without sockets.

The states of a connection:

- ``handshaking``: accepted, not yet through its hello/auth: with a cluster token, the HMAC
  handshake (and TLS, if on); without one, its first complete frame. It must get through
  within `handshake_timeout` seconds of being accepted (the deadline of its `Ticket.scope`).
- ``client``: through its handshake, not a peer link.
- ``peer``: its hello named a node (and, with a token, it authenticated as that node).

The rules:

- At most `max_connections` connections in all, and at most `max_per_source` from one source
  address (an IPv4 address, an IPv6 /64). Peer links that proved the cluster token as the node
  their hello names count toward the total only: in a test on loopback every node and every
  client come from 127.0.0.1.
- A newcomer that would go over a limit takes the place of the oldest connection that may be
  shed: first the oldest one still handshaking, else the oldest client that has completed no
  request. Peer links and clients that completed a request are never shed, so a flood of
  connections that never get anywhere cannot take capacity from them. Only when nothing can be
  shed is the newcomer refused.
- A shed or refused connection is told why: ``{"t": "error", "code": "too_many_connections",
  "reason": "max_connections" | "per_source", "msg": ...}``.
"""

from __future__ import annotations

import ipaddress
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import trio

from rkv.net.framing import Frame, error_frame

E_TOO_MANY_CONNECTIONS = "too_many_connections"
E_HANDSHAKE_TIMEOUT = "handshake_timeout"

HANDSHAKING = "handshaking"
CLIENT = "client"
PEER = "peer"
STATES = (HANDSHAKING, CLIENT, PEER)

R_TOTAL = "max_connections"
R_SOURCE = "per_source"
REASONS = (R_TOTAL, R_SOURCE)


def source_of(host: str) -> str:
    """The source a connection from `host` counts against: the IPv4 address, or the /64 of
    an IPv6 one (one machine usually holds a whole /64); anything else as is."""
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


@dataclass(eq=False, slots=True)
class Ticket:
    """One held connection's place in the accounting (compared by identity)."""

    source: str
    since: float
    scope: trio.CancelScope
    """The connection's cancel scope: its deadline is the handshake deadline while it is
    handshaking; shedding cancels it."""
    state: str = HANDSHAKING
    served: bool = False
    """A request (or one-way frame) came after the handshake and hello."""
    counted: bool = True
    """Counts toward its source's limit (all but authenticated peer links)."""
    goodbye: Frame | None = None
    """Set when shed: the error frame to send before closing."""
    held: bool = True


class Refused(Exception):
    """A newcomer over a limit, with nothing to shed; `frame` is the error frame to send."""

    def __init__(self, reason: str, msg: str) -> None:
        super().__init__(msg)
        self.reason = reason
        self.frame: Frame = {**error_frame(E_TOO_MANY_CONNECTIONS, msg), "reason": reason}


@dataclass(slots=True)
class AdmissionStats:
    """Counters of `Admission` (read by rpc.ServerStats users and the node's metrics)."""

    states: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATES, 0))
    shed: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    handshake_timeouts: int = 0
    sources: int = 0
    """Source addresses with a connection counted against them."""


@dataclass(slots=True)
class _Source:
    count: int = 0
    handshaking: dict[Ticket, None] = field(default_factory=dict)
    quiet: dict[Ticket, None] = field(default_factory=dict)


class Admission:
    """The admission state of one server. All methods are synchronous and cheap: `admit` is
    O(1) amortized, the state changes are O(1)."""

    def __init__(
        self,
        max_connections: int,
        max_per_source: int,
        handshake_timeout: float,
        stats: AdmissionStats | None = None,
    ) -> None:
        if max_connections < 1 or max_per_source < 1:
            raise ValueError("max_connections and max_per_source must be >= 1")
        if not handshake_timeout > 0:
            raise ValueError(f"handshake_timeout must be > 0, got {handshake_timeout}")
        self.max_connections = max_connections
        self.max_per_source = max_per_source
        self.handshake_timeout = handshake_timeout
        self.stats = stats if stats is not None else AdmissionStats()
        self.total = 0
        self._sources: dict[str, _Source] = {}
        # Insertion-ordered sets: the first is the oldest.
        self._handshaking: dict[Ticket, None] = {}
        self._quiet: dict[Ticket, None] = {}
        """Clients through their handshake that have completed no request yet."""

    # -- admission ---------------------------------------------------------------------------

    def admit(self, host: str, now: float) -> Ticket:
        """Take a new connection from `host` (its address), shedding another if a limit is
        reached; raises Refused when it is and nothing may be shed."""
        key = source_of(host)
        src = self._sources.get(key)
        if src is not None and src.count >= self.max_per_source:
            victim = _oldest(src.handshaking) or _oldest(src.quiet)
            if victim is None:
                self.stats.refused[R_SOURCE] += 1
                raise Refused(
                    R_SOURCE,
                    f"{key} has {src.count} connections to this server, the maximum per "
                    "source address",
                )
            self._shed(
                victim,
                R_SOURCE,
                f"closed to make room: {key} is at its limit of {self.max_per_source} "
                "connections and this one had completed no request",
            )
        if self.total >= self.max_connections:
            victim = _oldest(self._handshaking) or _oldest(self._quiet)
            if victim is None:
                self.stats.refused[R_TOTAL] += 1
                raise Refused(
                    R_TOTAL,
                    f"server has {self.total} connections, the maximum, and none it may shed",
                )
            self._shed(
                victim,
                R_TOTAL,
                f"closed to make room: the server is at its limit of {self.max_connections} "
                "connections and this one had completed no request",
            )
        ticket = Ticket(
            source=key,
            since=now,
            scope=trio.CancelScope(deadline=now + self.handshake_timeout),
        )
        src = self._sources.get(key)
        if src is None:
            src = self._sources[key] = _Source()
            self.stats.sources = len(self._sources)
        src.count += 1
        src.handshaking[ticket] = None
        self._handshaking[ticket] = None
        self.total += 1
        self.stats.states[HANDSHAKING] += 1
        return ticket

    # -- state changes (called by rpc.py) ----------------------------------------------------

    def established(self, t: Ticket) -> None:
        """`t` got through its handshake: a client (until `peer`), without a deadline."""
        if not t.held or t.state != HANDSHAKING:
            return
        t.scope.deadline = math.inf
        self._set_state(t, CLIENT)
        self._handshaking.pop(t, None)
        src = self._sources[t.source]
        src.handshaking.pop(t, None)
        if not t.served:
            self._quiet[t] = None
            src.quiet[t] = None

    def peer(self, t: Ticket, *, authenticated: bool) -> None:
        """`t`'s hello named a node (and it proved the token as that node if
        `authenticated`): never shed; an authenticated one leaves its source's count."""
        if not t.held or t.state == PEER:
            return
        self.established(t)
        self._set_state(t, PEER)
        self._quiet.pop(t, None)
        self._sources[t.source].quiet.pop(t, None)
        if authenticated:
            self._uncount(t)

    def served(self, t: Ticket) -> None:
        """`t` completed a request: no longer sheddable."""
        if t.served:
            return
        t.served = True
        if t.held:
            self._quiet.pop(t, None)
            src = self._sources.get(t.source)
            if src is not None:
                src.quiet.pop(t, None)

    def timed_out(self, t: Ticket) -> None:
        """`t` did not get through its handshake in time (counted; rpc.py closes it)."""
        self.stats.handshake_timeouts += 1

    def release(self, t: Ticket) -> None:
        """`t` is closing: it no longer counts. Idempotent."""
        if not t.held:
            return
        t.held = False
        self.total -= 1
        self.stats.states[t.state] -= 1
        self._handshaking.pop(t, None)
        self._quiet.pop(t, None)
        src = self._sources.get(t.source)
        if src is not None:
            src.handshaking.pop(t, None)
            src.quiet.pop(t, None)
        self._uncount(t)

    def statistics(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "states": dict(self.stats.states),
            "shed": dict(self.stats.shed),
            "refused": dict(self.stats.refused),
            "handshake_timeouts": self.stats.handshake_timeouts,
            "sources": len(self._sources),
        }

    def source_count(self, host: str) -> int:
        """Connections counted against `host`'s source."""
        src = self._sources.get(source_of(host))
        return 0 if src is None else src.count

    # -- internals ---------------------------------------------------------------------------

    def _set_state(self, t: Ticket, state: str) -> None:
        self.stats.states[t.state] -= 1
        self.stats.states[state] += 1
        t.state = state

    def _uncount(self, t: Ticket) -> None:
        if not t.counted:
            return
        t.counted = False
        src = self._sources.get(t.source)
        if src is None:
            return
        src.count -= 1
        if src.count <= 0 and not src.handshaking and not src.quiet:
            del self._sources[t.source]
            self.stats.sources = len(self._sources)

    def _shed(self, t: Ticket, reason: str, msg: str) -> None:
        t.goodbye = {**error_frame(E_TOO_MANY_CONNECTIONS, msg), "reason": reason}
        self.release(t)
        self.stats.shed[reason] += 1
        t.scope.cancel()


def _oldest(tickets: dict[Ticket, None]) -> Ticket | None:
    return next(iter(tickets), None)


__all__ = [
    "CLIENT",
    "E_HANDSHAKE_TIMEOUT",
    "E_TOO_MANY_CONNECTIONS",
    "HANDSHAKING",
    "PEER",
    "REASONS",
    "R_SOURCE",
    "R_TOTAL",
    "STATES",
    "Admission",
    "AdmissionStats",
    "Refused",
    "Ticket",
    "source_of",
]
