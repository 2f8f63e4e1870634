"""What a running node says about itself: its status (the `status` request, `rkv status`),
readiness and liveness, its connections, and the HTTP routes of the health and metrics port
(docs/operations.md).

Owns: nothing but the liveness probes' memory of the last turn it saw. Must not: touch the
RawNode (it reads the raft loop's `view`), or change anything.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from rkv.config import NodeConfig
from rkv.http import Response, text
from rkv.integrity import IntegrityWatch
from rkv.metrics import CONTENT_TYPE, NodeMetrics
from rkv.net.rpc import ServerStats
from rkv.node.inbox import Frame
from rkv.node.raft_loop import RaftLoop
from rkv.protocol import StatusRequest

LIVENESS_STALL = 10.0
"""/livez fails once the raft loop has not turned for this many seconds."""


class Health:
    def __init__(
        self, cfg: NodeConfig, raft: RaftLoop, integrity: IntegrityWatch, metrics: NodeMetrics
    ) -> None:
        self.cfg = cfg
        self.raft = raft
        self.integrity = integrity
        self.metrics = metrics

    def status(self) -> dict[str, Any]:
        v = self.raft.view
        return {
            # "node", not "id": the RPC layer puts the request id in "id".
            "node": self.cfg.id,
            "addr": self.cfg.advertise,
            "cluster": self.cfg.cluster_id,
            "role": v.role.name.lower(),
            "term": v.term,
            "leader": v.leader or None,
            "leader_addr": v.leader_addr,
            "commit": v.commit,
            "applied": v.applied,
            "last_index": v.last_index,
            "peers": [m for m in v.conf.members() if m != self.cfg.id],
            "voters": list(v.conf.voters),
            "learners": list(v.conf.learners),
            # new storage, not voting yet (rkv.raft.recovery)
            "recovering": v.recovering,
            "degraded": self.integrity.degraded,
        }

    async def status_request(self, r: StatusRequest) -> Frame:
        return {"t": "ok", **self.status()}

    def readiness(self) -> tuple[bool, str]:
        """(ready, reason): ready when a leader is known, everything this node knows to be
        committed has been applied, and no stored record was found damaged (degraded)."""
        if not self.raft.running:
            return False, "raft loop not running"
        if self.integrity.degraded is not None:
            return False, f"degraded: {self.integrity.degraded}"
        v = self.raft.view
        if not v.leader:
            return False, "no leader known"
        if v.applied < v.commit:
            return False, f"applying: applied {v.applied} < commit {v.commit}"
        return True, f"ok: leader {v.leader}, applied {v.applied}"

    def liveness(self) -> Liveness:
        """A liveness probe of the raft loop (its own memory of the last turn it saw): /livez
        and the systemd watchdog (rkv.node.entry) each hold one."""
        return Liveness(self.raft)

    def http_routes(self) -> dict[str, Callable[[], Response]]:
        probe = self.liveness()

        def livez() -> Response:
            ok, reason = probe.check()
            return text(200 if ok else 503, reason)

        def readyz() -> Response:
            ok, reason = self.readiness()
            return text(200 if ok else 503, reason)

        def metrics() -> Response:
            return Response(200, self.metrics.render(), CONTENT_TYPE)

        return {"/livez": livez, "/readyz": readyz, "/metrics": metrics}


class Liveness:
    """Is the raft loop alive? It turns at least once per tick; a loop that has not turned for
    LIVENESS_STALL seconds is stuck (e.g. a hung disk) and the process should go."""

    def __init__(self, raft: RaftLoop) -> None:
        self.raft = raft
        self._turns = raft.turns
        self._since = trio.current_time()

    def check(self) -> tuple[bool, str]:
        """(alive, reason): the reason is what /livez answers."""
        if not self.raft.running:
            return False, "raft loop not running"
        now = trio.current_time()
        if self.raft.turns != self._turns:
            self._turns, self._since = self.raft.turns, now
        elif now - self._since > LIVENESS_STALL:
            return False, f"raft loop stalled for {now - self._since:.1f} s"
        return True, "ok"


def connection_statistics(s: ServerStats) -> dict[str, Any]:
    """The RPC port's connections (rkv.net.admission): held by state, accepted, shed and
    refused by the limit that was reached, closed by the deadline that passed."""
    a = s.admission
    return {
        "states": dict(a.states),
        "accepted": s.accepted,
        "shed": dict(a.shed),
        "refused": dict(a.refused),
        "closed": {
            "handshake_timeout": a.handshake_timeouts,
            "frame_timeout": s.frame_timeouts,
            "idle_timeout": s.idle_closed,
        },
    }
