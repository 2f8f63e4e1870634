"""`rkv serve`: one node in the foreground, and its join flow (`--join`: become a learner of
an existing cluster before the node starts, then a voter once caught up).

Owns: the serve options (their one definition: the fast parser in rkv.cli.fastserve reads
this signature), their translation into a NodeConfig, the join flow's calls on the cluster
(its id, the learner addition, the promotion), and importing trio.testing without pytest
before the node runtime. Must not: run the node (rkv.node.serve_main does, and chooses the
exit code, rkv.errors.ExitCode) or import rkv.node at module level: only `rkv serve` loads it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import trio
import typer

from rkv.cli.app import Exit, app, fail, one_line, user_errors
from rkv.client import Client, parse_addresses
from rkv.config import DEFAULT_HOST, DEFAULT_PORT
from rkv.errors import ExitCode, RkvError, Unavailable


def _split_peers(peers: str | None) -> list[str]:
    return [p.strip() for p in (peers or "").split(",") if p.strip()]


JOIN_PROMOTE_SECONDS = 3600.0
"""How long `rkv serve --join` keeps trying to promote the new node (it must catch up
first; a large data set takes a while to stream)."""


def read_token_file(path: Path) -> str:
    """The cluster token stored in `path` (surrounding whitespace ignored); a usage error
    (one line, exit code USAGE) when it cannot be read or is empty."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        fail(Exit.USAGE, f"serve: error: cannot read --cluster-token-file {path}: {why}")
    if not token:
        fail(Exit.USAGE, f"serve: error: --cluster-token-file {path} is empty")
    return token


@app.command("serve")
def serve_cmd(
    port: int = typer.Option(DEFAULT_PORT, "--port", "-p", help="Port to listen on."),
    peers: str = typer.Option(
        "", "--peers", help="The other nodes, comma separated (host:port or http://host:port)."
    ),
    host: str = typer.Option(DEFAULT_HOST, "--host", help="Address to bind."),
    data_dir: Path | None = typer.Option(  # noqa: B008
        None, "--data-dir", "-d", help="Data directory (default: rkv-data/HOST_PORT)."
    ),
    node_id: str | None = typer.Option(
        None,
        "--id",
        "--advertise",
        help="This node's id: the host:port other nodes and clients reach it at "
        "(default: HOST:PORT).",
    ),
    cluster_id: str | None = typer.Option(
        None, "--cluster-id", help="Cluster id (default: derived from the member addresses)."
    ),
    http_port: int | None = typer.Option(
        None,
        "--http-port",
        min=0,
        max=65535,
        help="Serve /livez, /readyz, /metrics (Prometheus) and the HTTP/JSON API (/v1/...) "
        "on HOST:PORT (HTTPS with --tls-cert). Off by default.",
    ),
    http_open_metrics: bool = typer.Option(
        False,
        "--http-open-metrics",
        help="Serve /metrics without the cluster token (it is required by default).",
    ),
    resp_port: int | None = typer.Option(
        None,
        "--resp-port",
        min=0,
        max=65535,
        help="Speak the Redis protocol (RESP2/RESP3: redis-cli, any Redis client) on "
        "HOST:PORT; with a cluster token, AUTH with it. Off by default.",
    ),
    cluster_token: str | None = typer.Option(
        None,
        "--cluster-token",
        envvar="RKV_CLUSTER_TOKEN",
        help="Shared secret (16+ characters) every peer and client must prove it knows "
        "(HMAC challenge-response; never sent). Prefer the environment variable or "
        "--cluster-token-file.",
        show_default=False,
    ),
    cluster_token_file: Path | None = typer.Option(  # noqa: B008
        None,
        "--cluster-token-file",
        help="Read the cluster token from this file (surrounding whitespace ignored): not in "
        "the process list or environment; e.g. a systemd credential.",
        show_default=False,
    ),
    tls_cert: Path | None = typer.Option(  # noqa: B008
        None, "--tls-cert", help="PEM certificate: TLS for every connection (with --tls-key)."
    ),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="PEM private key."),  # noqa: B008
    tls_ca: Path | None = typer.Option(  # noqa: B008
        None,
        "--tls-ca",
        help="PEM CA: verify peers with it and require client certificates (mutual TLS).",
    ),
    snapshot_entries: int = typer.Option(
        10_000,
        "--snapshot-entries",
        min=1,
        help="Compact the log once this many applied entries lie beyond the last snapshot.",
    ),
    snapshot_bytes: int = typer.Option(
        256 << 20,
        "--snapshot-bytes",
        min=1,
        help="... or once the log beyond the last snapshot holds this many bytes.",
    ),
    upload_ttl: int = typer.Option(
        3600,
        "--upload-ttl",
        min=0,
        help="Abort an upload (drop its staged chunks on every node) once it has staged no "
        "chunk for this many seconds; 0: never.",
    ),
    max_connections: int = typer.Option(
        1024,
        "--max-connections",
        min=1,
        help="Connections held at once; at the limit a newcomer takes the place of the oldest "
        "one still in its handshake (or idle since), never of a peer link or a busy client.",
    ),
    max_connections_per_source: int = typer.Option(
        256,
        "--max-connections-per-source",
        min=1,
        help="Connections from one address (IPv6: one /64); token-authenticated peer links "
        "do not count.",
    ),
    handshake_timeout: int = typer.Option(
        5,
        "--handshake-timeout",
        min=1,
        help="Seconds a new connection has to authenticate (with a token) or send its first "
        "complete frame.",
    ),
    frame_timeout: int = typer.Option(
        10,
        "--frame-timeout",
        min=1,
        help="Grace of a started frame before --min-frame-rate applies; also the longest "
        "pause within a frame.",
    ),
    min_frame_rate: int = typer.Option(
        16384,
        "--min-frame-rate",
        min=0,
        help="Bytes/s a started frame must average (0: the whole frame within --frame-timeout).",
    ),
    idle_timeout: int = typer.Option(
        300,
        "--idle-timeout",
        min=1,
        help="Close a connection that sends nothing and waits on nothing for this long.",
    ),
    compare_interval: int = typer.Option(
        60,
        "--compare-interval",
        min=0,
        help="Seconds between the leader's comparisons of every member's state hash "
        "(README, Integrity); 0: never (`rkv check` still compares on demand).",
    ),
    scrub_rate: int = typer.Option(
        1000,
        "--scrub-rate",
        min=0,
        help="Stored records per second the background scrub reads and checks; 0: no scrub.",
    ),
    auto_repair: bool = typer.Option(
        False,
        "--auto-repair",
        help="A follower that finds its stored data damaged repairs itself (as rkv repair): "
        "it stops with exit code 18 for its supervisor to start it again.",
    ),
    join: str | None = typer.Option(
        None,
        "--join",
        help="Join the existing cluster at these address(es): this node is added as a "
        "learner (unless it is a member already), catches up, and is promoted to voter.",
    ),
    learner: bool = typer.Option(
        False, "--learner", help="With --join: stay a learner (non-voting); do not promote."
    ),
) -> None:
    """Run one node in the foreground until Ctrl+C / SIGTERM.

    On SIGTERM a leader first hands leadership to its most caught-up follower (at most
    ~1.5 s), so rolling restarts do not wait for an election timeout.

    Example: rkv serve --port 50051 --peers http://127.0.0.1:50052,http://127.0.0.1:50053
    """
    from rkv.config import NodeConfig

    if join is not None and _split_peers(peers):
        fail(Exit.USAGE, "serve: error: give either --peers (a new cluster) or --join, not both")
    if learner and join is None:
        fail(Exit.USAGE, "serve: error: --learner needs --join")
    if cluster_token_file is not None:
        if cluster_token:
            fail(
                Exit.USAGE,
                "serve: error: give the cluster token once: --cluster-token (or "
                "RKV_CLUSTER_TOKEN) or --cluster-token-file",
            )
        cluster_token = read_token_file(cluster_token_file)
    seeds: list[str] = []
    if join is not None:
        with user_errors():
            seeds = parse_addresses(join)
    try:
        cfg = NodeConfig.create(
            (host, port),
            _split_peers(peers),
            advertise=node_id,
            data_dir=data_dir,
            cluster_id=cluster_id,
            join=join is not None,
            http_port=http_port,
            http_open_metrics=http_open_metrics,
            resp_port=resp_port,
            cluster_token=cluster_token or None,
            tls_cert=tls_cert,
            tls_key=tls_key,
            tls_ca=tls_ca,
            snapshot_entries=snapshot_entries,
            snapshot_bytes=snapshot_bytes,
            upload_ttl_seconds=float(upload_ttl),
            max_connections=max_connections,
            max_connections_per_source=max_connections_per_source,
            handshake_timeout=float(handshake_timeout),
            frame_timeout=float(frame_timeout),
            min_frame_rate=min_frame_rate,
            idle_timeout=float(idle_timeout),
            compare_interval_seconds=float(compare_interval),
            scrub_records_per_second=float(scrub_rate),
            auto_repair=auto_repair,
        )
    except ValueError as exc:
        fail(Exit.USAGE, f"serve: error: {one_line(str(exc))}")
    import_trio_testing_without_pytest()
    from rkv.node import serve_main

    if not seeds:
        raise typer.Exit(serve_main(cfg))
    join_client = partial(
        Client,
        seeds,
        token=cluster_token or None,
        tls_ca=tls_ca,
        tls_cert=tls_cert,
        tls_key=tls_key,
    )
    # Before the node starts: the cluster's id (the data dir is stamped with it) and, if this
    # node is not a member yet, its addition as a learner.
    new_dir = not (cfg.data_dir / "data.mdb").exists()
    with user_errors():
        conf = trio.run(_join_cluster, join_client, cfg.id)
    if new_dir and cfg.id in conf["voters"]:
        # A voter that lost its data dir would vote with a log it no longer has (issue 20).
        fail(
            ExitCode.MEMBER_EXISTS,
            f"serve: error: {cfg.id} is a voter of the cluster but {cfg.data_dir} holds no data "
            f"(a replaced disk?): run `rkv member remove {cfg.id}`, then start it again with "
            "--join",
        )
    cfg = replace(cfg, cluster_id=str(conf["cluster"]))
    if learner or cfg.id in conf["voters"]:
        raise typer.Exit(serve_main(cfg))
    raise typer.Exit(serve_main(cfg, partial(_promote_when_caught_up, join_client, cfg.id)))


async def _join_cluster(make_client: Callable[..., Client], me: str) -> dict[str, Any]:
    async with make_client(timeout=30.0) as c:
        conf = await c.members()
        if not isinstance(conf.get("cluster"), str):
            raise Unavailable("the cluster did not say its id")
        if me not in conf["voters"] and me not in conf["learners"]:
            conf = {**conf, **await c.add_member(me, learner=True)}
        return conf


async def _promote_when_caught_up(make_client: Callable[..., Client], me: str) -> None:
    import logging

    log = logging.getLogger("rkv.cli")
    try:
        async with make_client(timeout=JOIN_PROMOTE_SECONDS) as c:
            await c.promote_member(me)
        log.info("%s: promoted to voter", me)
    except RkvError as e:
        log.warning("%s: not promoted (%s); run `rkv member promote %s`", me, e, me)


def import_trio_testing_without_pytest() -> None:
    """Import trio.testing (rkv.node's raft loop uses its wait_all_tasks_blocked) with pytest
    hidden, before rkv.node is imported.

    trio.testing imports pytest whenever it is installed (dev and CI venvs, where the
    benchmarks run), only for the error reports of its RaisesGroup helper, which a node never
    uses: about 0.12 s of a node's start-up (docs/bench.md, restart to serving). With pytest
    hidden, trio.testing uses its own small fallback, as where pytest is not installed. A
    process that has pytest or trio.testing loaded already (tests) is left as it is.
    """
    if "trio.testing" in sys.modules or "pytest" in sys.modules:
        return
    sys.modules["pytest"] = None  # type: ignore[assignment]  # `import pytest` -> ImportError
    try:
        import trio.testing  # noqa: F401
    finally:
        del sys.modules["pytest"]
