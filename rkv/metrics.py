"""Prometheus metrics of one node: cheap event hooks plus gauges read at scrape time.

Owns: a per-node `CollectorRegistry` (never the global one: tests run several nodes in one
process), the metric names (docs/operations.md lists them), the histograms and plain-integer
counters the runtime bumps, and the collector that turns `status()` / `statistics()` /
per-peer transport statistics / the RPC server's connection counters into gauges and
counters when /metrics is scraped.
Must not: touch the store, the raft core or trio itself; it only reads what the runtime hands
it, so a scrape costs what those calls cost and never blocks the raft loop.

Cost model: counters on the hot path are plain ints (`proposals`, per-peer byte dicts) that
the raft loop bumps once per batch or frame without locks; only the latency histograms use
prometheus_client objects (one `observe` per completed write / per fsync).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

CONTENT_TYPE = CONTENT_TYPE_LATEST

ROLES = ("follower", "candidate", "leader", "pre_candidate")
CONN_STATES = ("handshaking", "client", "peer")
CONN_LIMITS = ("max_connections", "per_source")
CONN_CLOSES = ("handshake_timeout", "frame_timeout", "idle_timeout")
WATCH_CANCELS = {"compacted": "watch_compacted", "no_leader": "watch_no_leader"}
"""The reasons a watch poll is refused with its end (label) and the hub's counter of each."""

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)

StatusFn = Callable[[], Mapping[str, Any]]
PeersFn = Callable[[], Mapping[str, Mapping[str, Any]]]
ConnectionsFn = Callable[[], Mapping[str, Any]]
"""{"states": {state: n}, "accepted": n, "shed": {reason: n}, "refused": {reason: n},
"closed": {reason: n}} (see rkv.node.Node.connection_statistics)."""


class NodeMetrics:
    """The metrics of one node. The runtime calls the `on_*` hooks and bumps the counters;
    `render()` produces the Prometheus text exposition."""

    def __init__(
        self,
        status: StatusFn,
        statistics: StatusFn,
        peers: PeersFn,
        connections: ConnectionsFn | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.proposals = 0
        """Proposals handed to the raft core (bumped once per raft-loop batch)."""
        self.peer_bytes_out: defaultdict[str, int] = defaultdict(int)
        self.peer_bytes_in: defaultdict[str, int] = defaultdict(int)
        self.peer_msgs_out: defaultdict[str, int] = defaultdict(int)
        self.peer_msgs_in: defaultdict[str, int] = defaultdict(int)
        self.commit_latency = Histogram(
            "rkv_commit_latency_seconds",
            "Time from receiving a write to its entry being applied (acknowledged writes).",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.save_latency = Histogram(
            "rkv_save_latency_seconds",
            "Duration of one durable Raft save (entries + hard state, one fsync).",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.apply_batch = Histogram(
            "rkv_apply_batch_entries",
            "Committed entries applied in one state-machine transaction.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_ScrapeCollector(self, status, statistics, peers, connections))

    # -- hooks (raft loop / request handlers) ----------------------------------------------

    def on_commit(self, seconds: float) -> None:
        self.commit_latency.observe(seconds)

    def on_save(self, seconds: float) -> None:
        self.save_latency.observe(seconds)

    def on_apply(self, entries: int) -> None:
        self.apply_batch.observe(entries)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _ScrapeCollector(Collector):
    """Reads the node's state when scraped: nothing here runs between scrapes."""

    def __init__(
        self,
        m: NodeMetrics,
        status: StatusFn,
        statistics: StatusFn,
        peers: PeersFn,
        connections: ConnectionsFn | None,
    ) -> None:
        self._m = m
        self._status = status
        self._statistics = statistics
        self._peers = peers
        self._connections = connections

    def collect(self) -> Iterator[Metric]:
        st = self._status()
        stats = self._statistics()
        store = stats.get("store") or {}
        m = self._m

        role = GaugeMetricFamily("rkv_role", "1 for the node's current Raft role.", labels=["role"])
        for r in ROLES:
            role.add_metric([r], 1.0 if st.get("role") == r else 0.0)
        yield role
        yield _gauge("rkv_is_leader", "1 if this node is the leader.", st.get("role") == "leader")
        yield _gauge(
            "rkv_leader_known", "1 if this node knows a leader.", st.get("leader") is not None
        )
        yield _gauge("rkv_term", "Current Raft term.", st.get("term"))
        yield _gauge(
            "rkv_voters", "Voters in the configuration in force.", len(st.get("voters") or [])
        )
        yield _gauge(
            "rkv_learners", "Learners in the configuration in force.", len(st.get("learners") or [])
        )
        yield _gauge("rkv_commit_index", "Highest log index known committed.", st.get("commit"))
        yield _gauge("rkv_applied_index", "Highest log index applied.", st.get("applied"))
        yield _gauge("rkv_last_index", "Last index in the Raft log.", st.get("last_index"))
        yield _gauge("rkv_log_entries", "Entries stored in the Raft log.", store.get("log_entries"))
        yield _gauge(
            "rkv_snapshot_index", "Index of the latest snapshot.", store.get("snapshot_index")
        )
        yield _gauge("rkv_kv_keys", "Keys in the key-value store.", store.get("kv_keys"))
        yield _gauge("rkv_files", "Committed files.", store.get("files"))
        yield _gauge("rkv_store_used_bytes", "Bytes used in the LMDB map.", store.get("used_bytes"))
        yield _gauge("rkv_store_map_bytes", "LMDB map size.", store.get("map_size"))
        yield _gauge(
            "rkv_store_pinned_bytes",
            "Staged file chunk bytes kept in log records (file data, not compactable log).",
            store.get("pinned_bytes"),
        )
        yield _gauge(
            "rkv_pending_proposals", "Writes waiting to commit.", stats.get("pending_proposals")
        )
        yield _gauge("rkv_pending_reads", "Linearizable reads waiting.", stats.get("pending_reads"))
        yield _counter("rkv_proposals", "Writes proposed to the Raft core.", m.proposals)
        yield _counter(
            "rkv_integrity_errors",
            "Reads refused because a stored record failed its checksum (requests, snapshot "
            "and backup streams).",
            stats.get("integrity_errors"),
        )
        yield _gauge(
            "rkv_degraded",
            "1 once this node found a stored record damaged (see /readyz and status).",
            st.get("degraded") is not None,
        )
        fwd = stats.get("forward") or {}
        yield _counter(
            "rkv_forwarded_writes",
            "Client writes this follower forwarded to the leader and answered.",
            fwd.get("forwarded"),
        )
        yield _counter(
            "rkv_forward_refused",
            "Client writes not forwarded: too many forwards in flight (answered unavailable).",
            fwd.get("refused"),
        )
        leases = stats.get("leases") or {}
        yield _gauge("rkv_leases", "Leases this node holds (as applied).", leases.get("leases"))
        yield _counter(
            "rkv_lease_expiries_proposed",
            "Leases named by the expiries this node proposed as leader.",
            leases.get("expiries_proposed"),
        )
        yield _counter(
            "rkv_lease_expiries_applied",
            "Leases deleted by an expiry this node applied.",
            leases.get("expiries_applied"),
        )
        yield _counter(
            "rkv_lease_checkpoints_proposed",
            "Leases named by the checkpoints this node proposed as leader.",
            leases.get("checkpoints_proposed"),
        )
        yield _counter(
            "rkv_lease_checkpoint_entries_proposed",
            "Checkpoint commands (log entries) this node proposed as leader.",
            leases.get("checkpoint_entries_proposed"),
        )
        yield from _integrity_checks(stats)
        yield from _watch_metrics(stats.get("watch") or {})
        yield _counter("rkv_raft_loop_turns", "Turns of the raft loop.", stats.get("turns"))
        yield _counter("rkv_raft_saves", "Durable Raft saves (fsyncs).", stats.get("saves"))
        yield _counter(
            "rkv_raft_applies", "State-machine apply transactions.", stats.get("applies")
        )
        yield _counter(
            "rkv_peer_frames_dropped_inbound",
            "Inbound Raft frames dropped (raft loop inbox full, malformed, or not from a peer).",
            stats.get("dropped_peer_frames"),
        )

        peers = self._peers()
        out_b = CounterMetricFamily(
            "rkv_peer_sent_bytes",
            "Raft bytes queued to a peer (entry payload + 64 B per message; approximate).",
            labels=["peer"],
        )
        in_b = CounterMetricFamily(
            "rkv_peer_received_bytes",
            "Raft bytes received from a peer (entry payload + 64 B per message; approximate).",
            labels=["peer"],
        )
        out_m = CounterMetricFamily(
            "rkv_peer_sent_messages", "Raft messages queued to a peer.", labels=["peer"]
        )
        in_m = CounterMetricFamily(
            "rkv_peer_received_messages", "Raft messages received from a peer.", labels=["peer"]
        )
        dropped = CounterMetricFamily(
            "rkv_peer_dropped_frames",
            "Outbound Raft frames dropped for a peer (queue full or link down).",
            labels=["peer"],
        )
        connected = GaugeMetricFamily(
            "rkv_peer_connected", "1 if the link to the peer is up.", labels=["peer"]
        )
        queued = GaugeMetricFamily(
            "rkv_peer_queued_frames", "Frames waiting in the peer's send queue.", labels=["peer"]
        )
        for pid in sorted(peers):
            p = peers[pid]
            out_b.add_metric([pid], float(m.peer_bytes_out.get(pid, 0)))
            in_b.add_metric([pid], float(m.peer_bytes_in.get(pid, 0)))
            out_m.add_metric([pid], float(m.peer_msgs_out.get(pid, 0)))
            in_m.add_metric([pid], float(m.peer_msgs_in.get(pid, 0)))
            dropped.add_metric([pid], float(p.get("dropped", 0) or 0))
            connected.add_metric([pid], 1.0 if p.get("connected") else 0.0)
            queued.add_metric([pid], float(p.get("queued", 0) or 0))
        yield from (out_b, in_b, out_m, in_m, dropped, connected, queued)
        if self._connections is not None:
            yield from _connection_metrics(self._connections())


def _connection_metrics(c: Mapping[str, Any]) -> Iterator[Metric]:
    """Client/peer connections of the RPC port (README "Limits under abuse")."""
    states = GaugeMetricFamily(
        "rkv_connections",
        "Connections held, by state: handshaking (not yet through hello/auth), client, peer.",
        labels=["state"],
    )
    for state in CONN_STATES:
        states.add_metric([state], _num((c.get("states") or {}).get(state)))
    yield states
    yield _counter("rkv_connections_accepted", "Connections accepted.", c.get("accepted"))
    for name, key, doc in (
        (
            "rkv_connections_shed",
            "shed",
            "Connections closed to make room for a newcomer at a limit (reason: the limit).",
        ),
        (
            "rkv_connections_refused",
            "refused",
            "Newcomers refused at a limit with nothing to shed (reason: the limit).",
        ),
    ):
        fam = CounterMetricFamily(name, doc, labels=["reason"])
        for reason in CONN_LIMITS:
            fam.add_metric([reason], _num((c.get(key) or {}).get(reason)))
        yield fam
    closed = CounterMetricFamily(
        "rkv_connections_closed",
        "Connections closed by a deadline (reason: handshake, frame rate, idle).",
        labels=["reason"],
    )
    for reason in CONN_CLOSES:
        closed.add_metric([reason], _num((c.get("closed") or {}).get(reason)))
    yield closed


def _watch_metrics(w: Mapping[str, Any]) -> Iterator[Metric]:
    """The watch hub (rkv.node.watch): its polls and its window of changes."""
    yield _gauge("rkv_watch_active", "Watch polls running on this node now.", w.get("watch_active"))
    yield _counter("rkv_watch_polls", "Watch polls served.", w.get("watch_polls"))
    yield _counter(
        "rkv_watch_events_delivered",
        "Events sent to watchers (one event sent to n watches counts n times).",
        w.get("watch_events_delivered"),
    )
    cancelled = CounterMetricFamily(
        "rkv_watch_cancelled",
        "Watch polls answered with the watch's end on this node (reason: compacted, the "
        "revisions asked for are no longer held; no_leader, no leader for an election timeout).",
        labels=["reason"],
    )
    for reason, key in WATCH_CANCELS.items():
        cancelled.add_metric([reason], _num(w.get(key)))
    yield cancelled
    yield _gauge(
        "rkv_watch_window_changes", "Changes held for watchers.", w.get("watch_held_changes")
    )
    yield _gauge(
        "rkv_watch_window_bytes",
        "Bytes held for watchers, about (keys, values, previous values, overhead).",
        w.get("watch_held_bytes"),
    )
    yield _gauge(
        "rkv_watch_first_revision",
        "The first revision whose changes are held: a watch from before it is compacted.",
        w.get("watch_first_revision"),
    )
    yield _counter(
        "rkv_watch_history_reads",
        "Reads of the durable watch history (polls from before the window held in memory).",
        w.get("watch_history_reads"),
    )


def _integrity_checks(stats: Mapping[str, Any]) -> Iterator[Metric]:
    """The background scrub (rkv.scrubber) and replica comparison (rkv.compare)."""
    scrub = stats.get("scrub") or {}
    cmp = stats.get("compare") or {}
    yield _counter(
        "rkv_scrub_records",
        "Stored records the background scrub read and checked.",
        scrub.get("records"),
    )
    yield _counter("rkv_scrub_passes", "Scrub passes completed.", scrub.get("passes"))
    yield _counter(
        "rkv_scrub_errors",
        "What scrub passes found wrong: records failing their checksum (each time read), "
        "passes whose records did not hash to the running state hash, store errors.",
        scrub.get("errors"),
    )
    yield _gauge(
        "rkv_scrub_last_pass_seconds",
        "Duration of the last completed scrub pass (NaN: none yet).",
        scrub.get("last_pass_seconds", math.nan),
    )
    yield _gauge(
        "rkv_replica_mismatch",
        "Members whose state hash differed from the majority's at the last comparison this "
        "node ran as the leader (0: all agreed).",
        cmp.get("differing"),
    )
    yield _counter(
        "rkv_replica_comparisons",
        "Replica comparisons this node ran as the leader (periodic and rkv check).",
        cmp.get("comparisons"),
    )
    yield _counter(
        "rkv_replica_mismatches",
        "Replica comparisons this node ran as the leader that found a member differing.",
        cmp.get("mismatches"),
    )
    yield _gauge(
        "rkv_replica_compared_index",
        "The applied index of the last replica comparison run as the leader (NaN: none).",
        cmp.get("last_index", math.nan),
    )


def _num(v: Any) -> float:
    if isinstance(v, bool):
        return 1.0 if v else 0.0
    if isinstance(v, int | float):
        return float(v)
    return 0.0


def _gauge(name: str, doc: str, v: Any) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=_num(v))


def _counter(name: str, doc: str, v: Any) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=_num(v))


__all__ = ["CONTENT_TYPE", "NodeMetrics"]
