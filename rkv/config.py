"""Node configuration: a frozen, validated `NodeConfig` and address parsing.

Owns: every tunable of a node process (addresses, peers, data dir, cluster id, timing, size
limits) with its default and its validation, and `parse_address`. Errors are ValueError with a
one-line message that the CLI shows as is. Must not: open files or sockets, or start anything
(that is rkv.node's job).

Identity rules:
- A node's id is its advertised "host:port" (so ids are stable and readable in logs).
- Peers are given by address; a peer's id is its "host:port".
- The cluster id defaults to "rkv-" + the first 16 hex digits of sha256 over the sorted voter
  addresses joined by ",": every node started with the same voter set computes the same id,
  and a data dir made by another cluster is refused at startup.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 50051

_HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.\-]*[A-Za-z0-9])?$|^\[[0-9A-Fa-f:.]+\]$")


def parse_address(text: str, *, default_port: int | None = None) -> tuple[str, int]:
    """Parse "host:port", "http://host:port" or "[::1]:port" into (host, port).

    Raises ValueError with a one-line message for anything else. A bare host is accepted only
    when `default_port` is given.
    """
    if not isinstance(text, str):
        raise ValueError(f"address must be a string, got {type(text).__name__}")
    s = text.strip()
    for scheme in ("http://", "https://", "tcp://", "rkv://"):
        if s.lower().startswith(scheme):
            s = s[len(scheme) :]
            break
    s = s.rstrip("/")
    if not s:
        raise ValueError(f"invalid address {text!r}: empty")
    if "/" in s or "@" in s or any(c.isspace() for c in s):
        raise ValueError(f"invalid address {text!r}: expected host:port")
    if s.startswith("["):
        end = s.find("]")
        if end < 0:
            raise ValueError(f"invalid address {text!r}: unclosed '['")
        host, rest = s[1:end], s[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError(f"invalid address {text!r}: expected [host]:port")
        port_s = rest[1:] if rest else ""
    elif s.count(":") == 1:
        host, port_s = s.split(":")
    elif ":" not in s:
        host, port_s = s, ""
    else:
        raise ValueError(f"invalid address {text!r}: write IPv6 hosts as [addr]:port")
    if not host:
        raise ValueError(f"invalid address {text!r}: missing host")
    if not s.startswith("[") and not _HOST_RE.match(host):
        raise ValueError(f"invalid address {text!r}: bad host {host!r}")
    if not port_s:
        if default_port is None:
            raise ValueError(f"invalid address {text!r}: missing port (expected host:port)")
        return host, default_port
    if not port_s.isdigit():
        raise ValueError(f"invalid address {text!r}: port {port_s!r} is not a number")
    port = int(port_s)
    if not 1 <= port <= 65535:
        raise ValueError(f"invalid address {text!r}: port {port} out of range 1-65535")
    return host, port


def format_address(host: str, port: int) -> str:
    """The canonical "host:port" (IPv6 hosts in brackets): also a node's id."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def default_cluster_id(voter_addresses: Iterable[str]) -> str:
    joined = ",".join(sorted(set(voter_addresses)))
    return "rkv-" + hashlib.sha256(joined.encode()).hexdigest()[:16]


def default_data_dir(host: str, port: int) -> Path:
    safe = re.sub(r"[^A-Za-z0-9.\-]", "_", host)
    return Path("rkv-data") / f"{safe}_{port}"


def _positive(name: str, value: object, lo: float = 1, hi: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise ValueError(f"{name} must be {rng}, got {value}")


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Everything a node process needs. Build it with `NodeConfig.create(...)` for defaults."""

    id: str
    host: str
    """The address to bind (127.0.0.1 unless told otherwise)."""
    port: int
    advertise: str
    """"host:port" other nodes and clients use to reach this node."""
    peers: Mapping[str, tuple[str, int]]
    """The other voters of the bootstrap configuration: id -> (host, port). Never contains
    this node. Once the cluster's membership changes, the configuration in the Raft log
    decides (node ids are addresses, so new members are reached at their id)."""
    data_dir: Path
    cluster_id: str
    tick_ms: int = 20
    heartbeat_ticks: int = 2
    election_ticks: int = 10
    """Election timeout base; the core randomizes it in [election_ticks, 2 * election_ticks)."""
    max_frame: int = 32 << 20
    max_batch: int = 1024
    """Most inputs (messages, proposals, reads) the raft loop drains into one turn."""
    max_batch_bytes: int = 8 << 20
    """Most proposal bytes taken into one turn (the rest waits for the next turn)."""
    inbox_size: int = 4096
    """Bound of the raft loop's input channel: producers wait (back-pressure) when full."""
    inline_io_bytes: int = 256 << 10
    """Store transactions carrying at most this many bytes of entry data run on the raft loop
    itself (a thread hand-off costs more than a small LMDB commit); larger ones, and snapshot
    installs, run in a worker thread so the loop keeps serving meanwhile."""
    gather_seconds: float = 0.002
    """Before each raft-loop turn, wait at most this long for the node's other tasks to turn
    what has arrived into inputs (group commit; 0: take only what is queued already)."""
    apply_delay_seconds: float = 0.01
    """Committed entries nobody waits on are applied to the store in batches: a full batch
    with the next log write (group commit), the rest once no entry has joined it for this
    long, or once the oldest has waited `apply_max_delay_seconds` (0: apply every commit at
    once). A put is answered once committed; a linearizable read always waits for the store;
    a stale read may lag by up to `apply_max_delay_seconds` under load."""
    apply_max_delay_seconds: float = 0.25
    max_inflight_per_conn: int = 128
    max_msg_bytes: int = 1 << 20
    """Raft max_size_per_msg: bytes of entries in one append message."""
    max_inflight_msgs: int = 256
    chunk_size: int = 1 << 20
    """File chunk size the CLI uses for uploads (a hint; the node accepts any chunk)."""
    map_size: int = 1 << 30
    """LMDB map size (bytes): the most data the node may hold."""
    request_timeout: float = 5.0
    """How long a write or linearizable read may wait for commit / read index."""
    watch_history: int = 100_000
    """Changes the watch hub keeps for its watchers (rkv.node.watch): a watch from an older
    revision gets `compacted`. Memory: about this many keys and values (and previous values);
    the data dir keeps as many (rkv.store.history), so the history survives a restart."""
    watch_history_bytes: int = 64 << 20
    """... and at most about this many bytes of keys and values (the oldest revisions go
    first)."""
    watch_max: int = 1024
    """Watch polls a node serves at once (more: `too_many_watchers`)."""
    watch_max_per_conn: int = 64
    """Watch polls one connection may run at once (the HTTP port counts as one connection);
    less than `watch_max`, so one connection never holds every watch of the node."""
    peer_queue: int = 1024
    pre_vote: bool = True
    check_quorum: bool = True
    seed: int | None = None
    """Seed of the core's random generator (None: from the OS), for reproducible tests."""
    http_port: int | None = None
    """Port of the health/metrics HTTP server (/livez, /readyz, /metrics) on `host`; None:
    off. 0 picks a free port (tests)."""
    http_open_metrics: bool = False
    """Serve /metrics on the HTTP port without the cluster token (/livez and /readyz are
    always open; everything else needs `Authorization: Bearer TOKEN` when a token is set)."""
    resp_port: int | None = None
    """Port of the RESP (Redis protocol) server on `host` (rkv.resp); None: off. 0 picks a
    free port (tests). Its connections are admitted under the limits below, counted apart
    from the node's port."""
    snapshot_entries: int = 10_000
    """Compact the log once more than this many applied entries follow the last snapshot."""
    snapshot_bytes: int = 256 << 20
    """... or once the log takes more than this many bytes."""
    snapshot_keep_entries: int = 1_000
    """Applied entries kept behind a compaction, so slightly slow followers catch up from the
    log (at most this many, and about `snapshot_keep_bytes` bytes)."""
    snapshot_keep_bytes: int = 16 << 20
    snapshot_chunk_bytes: int = 1 << 20
    """Size of the pieces a snapshot is streamed to a follower in."""
    upload_ttl_seconds: float = 3600.0
    """An upload that staged no chunk for this long (seen by the leader) is aborted: its
    staged chunks are dropped on every node (0: never). A client that is still uploading
    after that gets a clear error at commit and uploads again."""
    lease_checkpoint_seconds: float = 5.0
    """The leader checkpoints a lease's remaining TTL through the log once the stored one is
    this much too high (rkv.lease): a new leader or a restarted cluster holds a lease at most
    this much longer than its TTL promises."""
    compare_interval_seconds: float = 60.0
    """The leader compares every member's state hash this often (rkv.compare; 0: never).
    `rkv check` compares on demand whatever this is."""
    scrub_records_per_second: float = 1000.0
    """The background scrub reads and checks at most this many stored records per second
    (rkv.scrubber; 0: no scrub)."""
    scrub_bytes_per_second: float = 8 << 20
    """... and at most this many bytes per second (file chunks count by their size)."""
    auto_repair: bool = False
    """A follower that finds its own stored data damaged (a read, or the scrub) repairs
    itself as `rkv repair` would: it stops (exit code 18) with its data dir moved aside and a
    new store in place, for its supervisor to start it again (rkv.repair)."""
    fault_injection: bool = False
    """Accept `{"t": "fault"}` requests that make this node drop Raft traffic to/from chosen
    peers (for the nemesis harness only). Off unless explicitly enabled: `serve_main` turns
    it on when the environment variable RKV_FAULT_INJECTION=1 is set."""
    cluster_token: str | None = field(default=None, repr=False)
    """Shared secret every connection, peer or client, must prove it knows before anything
    is served (HMAC challenge-response, never sent; see docs/security.md). None: no
    authentication. Kept out of repr so it never reaches a log."""
    tls_cert: Path | None = None
    """PEM certificate (chain) this node presents, to clients and to peers; with `tls_key`
    it turns TLS on for every connection of the node."""
    tls_key: Path | None = None
    tls_ca: Path | None = None
    """CA the node trusts: peers' certificates are checked against it, and every connecting
    side (peer or client) must present a certificate it signed (mutual TLS)."""
    join: bool = False
    """This node joins an existing cluster (`rkv serve --join`): it starts with no
    configuration and learns it from the leader, which added it as a learner."""
    # Limits under abuse (rkv.net.admission, rkv.net.rpc; README "Limits under abuse").
    max_connections: int = 1024
    """Connections the node holds at once (peer links and clients). At the limit a newcomer
    takes the place of the oldest connection still in its handshake, else of the oldest
    client that completed no request; peer links and clients that completed a request are
    never shed; with nothing to shed, the newcomer is refused."""
    max_connections_per_source: int = 256
    """Connections from one source address (IPv4 address, IPv6 /64), shed and refused the
    same way. Peer links that proved the cluster token do not count toward it."""
    handshake_timeout: float = 5.0
    """A new connection must get through its handshake within this many seconds of being
    accepted (TLS if on; then with a cluster token the HMAC handshake, without one its first
    complete frame), or it is closed (`handshake_timeout`)."""
    frame_timeout: float = 10.0
    """Once a frame has started, its bytes must arrive at `min_frame_rate` bytes/s on average
    after this many seconds of grace, and never pause longer than this."""
    min_frame_rate: int = 16384
    """Bytes per second (0: none; then a whole frame must arrive within `frame_timeout`)."""
    idle_timeout: float = 300.0
    """A connection with nothing in flight that sends no frame for this long is closed."""

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError("node id must be a non-empty string")
        _positive("port", self.port, 0, 65535)
        parse_address(self.advertise)
        if self.id in self.peers:
            raise ValueError(f"peers must not contain this node ({self.id})")
        for pid, (phost, pport) in self.peers.items():
            if not pid or not phost:
                raise ValueError(f"peer {pid!r}: empty id or host")
            _positive(f"peer {pid} port", pport, 1, 65535)
        if not isinstance(self.cluster_id, str) or not self.cluster_id:
            raise ValueError("cluster id must be a non-empty string")
        if len(self.cluster_id) > 128:
            raise ValueError("cluster id must be at most 128 characters")
        _positive("tick_ms", self.tick_ms, 1, 10_000)
        _positive("heartbeat_ticks", self.heartbeat_ticks, 1)
        _positive("election_ticks", self.election_ticks, 2)
        if self.election_ticks <= self.heartbeat_ticks:
            raise ValueError(
                f"election_ticks ({self.election_ticks}) must exceed heartbeat_ticks "
                f"({self.heartbeat_ticks})"
            )
        _positive("max_frame", self.max_frame, 1024)
        _positive("max_batch", self.max_batch, 1)
        _positive("max_batch_bytes", self.max_batch_bytes, 1)
        _positive("inbox_size", self.inbox_size, 1)
        _positive("inline_io_bytes", self.inline_io_bytes, 0)
        _positive("gather_seconds", self.gather_seconds, 0, 1)
        _positive("apply_delay_seconds", self.apply_delay_seconds, 0, 1)
        _positive("apply_max_delay_seconds", self.apply_max_delay_seconds, 0, 10)
        _positive("max_inflight_per_conn", self.max_inflight_per_conn, 1)
        _positive("max_msg_bytes", self.max_msg_bytes, 1)
        _positive("max_inflight_msgs", self.max_inflight_msgs, 1)
        _positive("chunk_size", self.chunk_size, 1, self.max_frame // 2)
        _positive("map_size", self.map_size, 1 << 20)
        _positive("request_timeout", self.request_timeout, 0.001)
        _positive("watch_history", self.watch_history, 1)
        _positive("watch_history_bytes", self.watch_history_bytes, 1)
        _positive("watch_max", self.watch_max, 2)
        # below the node's limit: no one connection (the HTTP port is one) takes every watch
        _positive("watch_max_per_conn", self.watch_max_per_conn, 1, self.watch_max - 1)
        _positive("peer_queue", self.peer_queue, 1)
        if self.http_port is not None:
            _positive("http_port", self.http_port, 0, 65535)
        if self.resp_port is not None:
            _positive("resp_port", self.resp_port, 0, 65535)
        _positive("snapshot_entries", self.snapshot_entries, 1)
        _positive("upload_ttl_seconds", self.upload_ttl_seconds, 0)
        _positive("lease_checkpoint_seconds", self.lease_checkpoint_seconds, 0.01, 86_400)
        _positive("snapshot_bytes", self.snapshot_bytes, 1)
        _positive("snapshot_keep_entries", self.snapshot_keep_entries, 0)
        _positive("snapshot_keep_bytes", self.snapshot_keep_bytes, 0)
        _positive("snapshot_chunk_bytes", self.snapshot_chunk_bytes, 1, self.max_frame // 2)
        _positive("max_connections", self.max_connections, 1, 1_000_000)
        _positive("max_connections_per_source", self.max_connections_per_source, 1, 1_000_000)
        _positive("handshake_timeout", self.handshake_timeout, 0.01, 3600)
        _positive("frame_timeout", self.frame_timeout, 0.01, 3600)
        _positive("min_frame_rate", self.min_frame_rate, 0)
        _positive("idle_timeout", self.idle_timeout, 0.01)
        _positive("compare_interval_seconds", self.compare_interval_seconds, 0)
        _positive("scrub_records_per_second", self.scrub_records_per_second, 0)
        _positive("scrub_bytes_per_second", self.scrub_bytes_per_second, 1)
        if not isinstance(self.auto_repair, bool):
            raise ValueError(f"auto_repair must be a bool, got {self.auto_repair!r}")
        if not isinstance(self.http_open_metrics, bool):
            raise ValueError(f"http_open_metrics must be a bool, got {self.http_open_metrics!r}")
        if not isinstance(self.fault_injection, bool):
            raise ValueError(f"fault_injection must be a bool, got {self.fault_injection!r}")
        # Offline guessing of a captured handshake is the attack left: demand some length.
        token = self.cluster_token
        if token is not None and (not isinstance(token, str) or not 16 <= len(token) <= 1024):
            raise ValueError("cluster token must be a string of 16..1024 characters")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("TLS needs both a certificate (--tls-cert) and a key (--tls-key)")
        if self.tls_ca is not None and self.tls_cert is None:
            raise ValueError("--tls-ca needs --tls-cert and --tls-key (the node's own identity)")
        for name in ("tls_cert", "tls_key", "tls_ca"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value))
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        object.__setattr__(self, "peers", MappingProxyType(dict(sorted(self.peers.items()))))

    @property
    def voters(self) -> tuple[str, ...]:
        """The bootstrap voters (this node and its peers), sorted; none for a joining node."""
        if self.join:
            return ()
        return tuple(sorted([self.id, *self.peers]))

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def tick_seconds(self) -> float:
        return self.tick_ms / 1000.0

    def peer_address(self, node_id: str) -> str | None:
        """The "host:port" clients should use for `node_id` (None if unknown)."""
        if node_id == self.id:
            return self.advertise
        hp = self.peers.get(node_id)
        if hp is None:
            try:
                hp = parse_address(node_id)  # members that joined later: the id is the address
            except ValueError:
                return None
        return format_address(*hp)

    @classmethod
    def create(
        cls,
        listen: str | tuple[str, int] = f"{DEFAULT_HOST}:{DEFAULT_PORT}",
        peers: Iterable[str] = (),
        *,
        advertise: str | None = None,
        data_dir: str | Path | None = None,
        cluster_id: str | None = None,
        **tunables: object,
    ) -> NodeConfig:
        """A config from addresses, with the documented defaults.

        `listen` is where to bind; `advertise` (default: the listen address) is this node's id
        and what peers use. `peers` are the other voters' addresses; this node's own address
        may be among them (it is dropped), so every node of a cluster can be given one list.
        """
        host, port = listen if isinstance(listen, tuple) else parse_address(listen)
        adv_host, adv_port = parse_address(advertise) if advertise else (host, port)
        if adv_host in ("0.0.0.0", "::"):
            raise ValueError("cannot advertise a wildcard address: pass --advertise host:port")
        adv = format_address(adv_host, adv_port)
        peer_map: dict[str, tuple[str, int]] = {}
        for p in peers:
            ph, pp = parse_address(p)
            pid = format_address(ph, pp)
            if pid != adv:
                peer_map[pid] = (ph, pp)
        cid = cluster_id if cluster_id else default_cluster_id([adv, *peer_map])
        ddir = Path(data_dir) if data_dir is not None else default_data_dir(adv_host, adv_port)
        return cls(
            id=adv,
            host=host,
            port=port,
            advertise=adv,
            peers=peer_map,
            data_dir=ddir,
            cluster_id=cid,
            **tunables,  # type: ignore[arg-type]
        )


__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "NodeConfig",
    "default_cluster_id",
    "default_data_dir",
    "format_address",
    "parse_address",
]
