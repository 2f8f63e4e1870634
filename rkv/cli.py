"""The `rkv` command line (typer): serve, cluster, sim and the client commands.

Owns: argument parsing, the translation of errors into one stderr line and a documented exit
code (no traceback for a user mistake), output formats (tables, JSON, progress bars), and the
`rkv cluster` supervisor's policy (N child `rkv serve` processes, run through rkv.procs).
Must not: implement client or node behaviour (rkv.client, rkv.node do), or import the node
runtime / simulator unless the command needs them (client commands stay light).

Exit codes of the client commands: 0 ok, 1 not found / compare failed, 2 usage error (bad
arguments, bad address, missing local file), 3 cluster unavailable, 4 integrity error,
5 other server error, 6 authentication failed (wrong or missing cluster token), 16 a node's
stored data failed its checksum, 17 replicas differ (`rkv check`). `rkv serve` uses the node
runtime's codes (rkv.errors.ExitCode).
"""

from __future__ import annotations

import inspect
import json
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from enum import IntEnum
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn, TypeVar, get_args, get_type_hints

import trio
import typer
import typer.models

from rkv.client import DEFAULT_ADDRS, Client, Progress, parse_addresses
from rkv.config import DEFAULT_HOST, DEFAULT_PORT, format_address
from rkv.errors import (
    AuthError,
    BadRequest,
    Changed,
    CorruptData,
    ExitCode,
    IntegrityError,
    NotFound,
    NotLeader,
    RkvError,
    Timeout,
    Unavailable,
)
from rkv.procs import Child, stop_all

T = TypeVar("T")


class Exit(IntEnum):
    """Exit codes of the client commands (documented in the README and `rkv --help`)."""

    OK = 0
    NOT_FOUND = 1
    """The key or file does not exist, or a compare-and-swap did not swap."""
    USAGE = 2
    """Bad arguments, bad address, missing local file."""
    UNAVAILABLE = 3
    """The cluster could not be reached or did not answer in time."""
    INTEGRITY = 4
    """A download failed its size/SHA-256 check or the file changed meanwhile."""
    SERVER = 5
    """Any other error reported by the cluster."""
    AUTH = 6
    """Authentication failed: wrong or missing cluster token (--token / RKV_CLUSTER_TOKEN)."""
    CORRUPT = ExitCode.INTEGRITY
    """16: the node's stored copy failed its checksum (the node is degraded); nothing was
    served. Another node (`--addr`) may hold a good copy."""
    REPLICAS_DIFFER = ExitCode.REPLICAS_DIFFER
    """17: `rkv check` found a member whose state hash differs from the others'."""


EPILOG = (
    "Exit codes: 0 ok, 1 not found / compare failed, 2 usage error, 3 cluster unavailable, "
    "4 integrity error, 5 other server error, 6 authentication failed, 16 a node's stored "
    "data failed its checksum, 17 replicas differ (rkv check). Node addresses: --addr or RKV_ADDR "
    "(default: " + ",".join(DEFAULT_ADDRS) + ")."
)

app = typer.Typer(
    name="rkv",
    help="rkv: a fault-tolerant distributed key-value store (Raft).",
    epilog=EPILOG,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@dataclass(slots=True)
class Settings:
    addr: str | None
    timeout: float
    token: str | None = field(default=None, repr=False)
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None


def _err(msg: str) -> None:
    print(f"rkv: {msg}", file=sys.stderr, flush=True)


def _fail(code: Exit | int, msg: str) -> NoReturn:
    _err(msg)
    raise typer.Exit(int(code))


def exit_code_for(exc: BaseException) -> Exit:
    """The exit code for an error raised by a client command."""
    if isinstance(exc, AuthError):
        return Exit.AUTH
    if isinstance(exc, NotFound):
        return Exit.NOT_FOUND
    if isinstance(exc, BadRequest | ValueError | TypeError | OSError):
        return Exit.USAGE
    if isinstance(exc, Unavailable | Timeout | NotLeader):
        return Exit.UNAVAILABLE
    if isinstance(exc, CorruptData):
        return Exit.CORRUPT
    if isinstance(exc, IntegrityError | Changed):
        return Exit.INTEGRITY
    return Exit.SERVER


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


@contextmanager
def _user_errors() -> Iterator[None]:
    """Errors a user can cause become one stderr line and an exit code, never a traceback."""
    try:
        yield
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        _err("interrupted")
        raise typer.Exit(130) from None
    except (RkvError, ValueError, TypeError, OSError) as exc:
        code = exit_code_for(exc)
        if isinstance(exc, OSError) and exc.filename is not None:
            reason = exc.strerror or str(exc)
            msg = f"{reason}: {exc.filename}"
        else:
            msg = str(exc) or type(exc).__name__
        kind = {
            Exit.NOT_FOUND: "not found",
            Exit.USAGE: "error",
            Exit.UNAVAILABLE: "unavailable",
            Exit.INTEGRITY: "integrity error",
            Exit.SERVER: "server error",
            Exit.AUTH: "authentication failed",
            Exit.CORRUPT: "integrity error",
        }[code]
        _fail(code, f"{kind}: {_one_line(msg)}")


def _settings(ctx: typer.Context) -> Settings:
    obj = ctx.find_object(Settings)
    return obj if obj is not None else Settings(None, 10.0)


def _run(ctx: typer.Context, addr: str | None, fn: Callable[[Client], Awaitable[T]]) -> T:
    """Run `fn(client)` against the cluster, translating errors to exit codes."""
    s = _settings(ctx)
    text = addr or s.addr or os.environ.get("RKV_ADDR") or ",".join(DEFAULT_ADDRS)
    with _user_errors():
        addrs = parse_addresses(text)
        client = Client(
            addrs,
            timeout=s.timeout,
            attempt_timeout=min(5.0, s.timeout),
            token=s.token,
            tls_ca=s.tls_ca,
            tls_cert=s.tls_cert,
            tls_key=s.tls_key,
        )

        async def main() -> T:
            async with client:
                return await fn(client)

        return trio.run(main)


def _text(b: bytes) -> str:
    return b.decode("utf-8", errors="backslashreplace")


AddrOpt = typer.Option(
    None,
    "--addr",
    "-a",
    help="Node address(es), comma separated: host:port or http://host:port.",
    show_default=False,
)


@app.callback()
def _global(
    ctx: typer.Context,
    addr: str | None = typer.Option(
        None,
        "--addr",
        "-a",
        envvar="RKV_ADDR",
        help="Node address(es), comma separated (host:port or http://host:port); any node "
        "will do. Default: the local cluster " + ",".join(DEFAULT_ADDRS) + ".",
        show_default=False,
    ),
    timeout: float = typer.Option(
        10.0, "--timeout", "-t", min=0.001, help="Seconds an operation may retry before giving up."
    ),
    token: str | None = typer.Option(
        None,
        "--token",
        envvar="RKV_CLUSTER_TOKEN",
        help="The cluster token, if the nodes have one (prefer the RKV_CLUSTER_TOKEN "
        "environment variable: a command line is visible to other local users).",
        show_default=False,
    ),
    tls_ca: Path | None = typer.Option(  # noqa: B008
        None, "--tls-ca", help="Talk TLS, verifying the nodes against this CA (PEM)."
    ),
    tls_cert: Path | None = typer.Option(  # noqa: B008
        None, "--tls-cert", help="Client certificate (PEM), for nodes that require one."
    ),
    tls_key: Path | None = typer.Option(  # noqa: B008
        None, "--tls-key", help="Private key of --tls-cert (PEM)."
    ),
) -> None:
    """rkv: a fault-tolerant distributed key-value store (Raft over trio, msgpack, LMDB)."""
    ctx.obj = Settings(addr, timeout, token or None, tls_ca, tls_cert, tls_key)


# --- client commands ------------------------------------------------------------------------


@app.command("set")
def set_cmd(
    ctx: typer.Context,
    key: str = typer.Argument(..., help="The key."),
    value: str = typer.Argument(..., help="The value (stored as UTF-8 bytes)."),
    addr: str | None = AddrOpt,
) -> None:
    """Set KEY to VALUE (acknowledged once a majority has it on disk)."""
    _run(ctx, addr, lambda c: c.put(key, value))
    print("OK")


@app.command("get")
def get_cmd(
    ctx: typer.Context,
    key: str = typer.Argument(..., help="The key."),
    stale: bool = typer.Option(
        False, "--stale", help="Read the contacted node's copy (faster, may be behind)."
    ),
    addr: str | None = AddrOpt,
) -> None:
    """Print the value of KEY (its bytes and a newline); exit 1 if there is none."""
    value = _run(ctx, addr, lambda c: c.get(key, stale=stale))
    if value is None:
        _fail(Exit.NOT_FOUND, f"not found: {key}")
    out = sys.stdout.buffer
    out.write(value + b"\n")
    out.flush()


@app.command("delete")
def delete_cmd(
    ctx: typer.Context,
    key: str = typer.Argument(..., help="The key."),
    addr: str | None = AddrOpt,
) -> None:
    """Delete KEY. Exit 1 if it did not exist."""
    existed = _run(ctx, addr, lambda c: c.delete(key))
    if not existed:
        _fail(Exit.NOT_FOUND, f"not found: {key}")
    print("OK")


@app.command("cas")
def cas_cmd(
    ctx: typer.Context,
    key: str = typer.Argument(..., help="The key."),
    new: str = typer.Argument(..., help="The new value."),
    expect: str | None = typer.Option(None, "--expect", help="Swap only if KEY has this value."),
    absent: bool = typer.Option(False, "--absent", help="Swap only if KEY does not exist."),
    addr: str | None = AddrOpt,
) -> None:
    """Set KEY to NEW only if it holds --expect OLD (or is --absent); exit 1 if not."""
    if (expect is None) == (not absent):
        _fail(Exit.USAGE, "error: give exactly one of --expect OLD or --absent")
    swapped = _run(ctx, addr, lambda c: c.cas(key, expect, new))
    if not swapped:
        _fail(Exit.NOT_FOUND, f"compare failed: {key} did not hold the expected value")
    print("OK")


@app.command("scan")
def scan_cmd(
    ctx: typer.Context,
    prefix: str = typer.Argument("", help="Key prefix (empty: all keys)."),
    limit: int = typer.Option(1000, "--limit", "-n", min=1, max=10_000, help="Most pairs."),
    as_json: bool = typer.Option(False, "--json", help="A JSON list of {key, value}."),
    stale: bool = typer.Option(False, "--stale", help="Read the contacted node's copy."),
    addr: str | None = AddrOpt,
) -> None:
    """List keys starting with PREFIX with their values (KEY<TAB>VALUE per line)."""
    items = _run(ctx, addr, lambda c: c.scan(prefix, limit, stale=stale))
    if as_json:
        print(json.dumps([{"key": _text(k), "value": _text(v)} for k, v in items]))
        return
    for k, v in items:
        print(f"{_text(k)}\t{_text(v)}")


@contextmanager
def _progress(label: str, total: int | None) -> Iterator[Progress | None]:
    """A rich progress bar on stderr for files of 1 MiB or more, only on a terminal."""
    if not sys.stderr.isatty() or (total is not None and total < (1 << 20)):
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )
    from rich.progress import Progress as Bar

    with Bar(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    ) as bar:
        task = bar.add_task(label, total=total)

        def update(done: int, of: int | None) -> None:
            bar.update(task, completed=done, total=of)

        yield update


@app.command("upload")
def upload_cmd(
    ctx: typer.Context,
    key: str = typer.Argument(..., help="The file's key in the store."),
    path: Path = typer.Argument(..., help="Local file to upload."),  # noqa: B008
    chunk_size: int = typer.Option(
        1 << 20, "--chunk-size", min=1, max=8 << 20, help="Bytes per chunk."
    ),
    addr: str | None = AddrOpt,
) -> None:
    """Upload the file PATH under KEY (atomically: the file appears whole or not at all)."""
    if not path.is_file():
        _fail(Exit.USAGE, f"error: no such file: {path}")
    size = path.stat().st_size
    with _progress(f"upload {key}", size) as progress:
        info = _run(
            ctx, addr, lambda c: c.upload(key, path, chunk_size=chunk_size, progress=progress)
        )
    print(f"uploaded {key}: {info['size']} bytes, {info['chunks']} chunks, sha256 {info['sha256']}")


@app.command("download")
def download_cmd(
    ctx: typer.Context,
    key: str = typer.Argument(..., help="The file's key in the store."),
    path: Path = typer.Argument(  # noqa: B008
        ..., help="Where to write the file (replaced atomically)."
    ),
    stale: bool = typer.Option(False, "--stale", help="Read the contacted node's copy."),
    addr: str | None = AddrOpt,
) -> None:
    """Download the file KEY to PATH, verifying its size and SHA-256 (exit 4 on mismatch)."""
    if path.is_dir():
        _fail(Exit.USAGE, f"error: {path} is a directory; give a file path")
    if not path.resolve().parent.is_dir():
        _fail(Exit.USAGE, f"error: no such directory: {path.parent}")

    async def go(c: Client) -> dict[str, Any]:
        with _progress(f"download {key}", None) as progress:
            return await c.download(key, path, stale=stale, progress=progress)

    info = _run(ctx, addr, go)
    print(f"downloaded {key}: {info['size']} bytes, sha256 {info['sha256']} (verified) -> {path}")


STATUS_COLUMNS = ("id", "addr", "role", "term", "leader", "commit", "applied", "last_index")


@app.command("status")
def status_cmd(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="A JSON list, one object per node."),
    watch: bool = typer.Option(
        False, "--watch", "-w", help="Keep refreshing a live table until Ctrl+C."
    ),
    interval: float = typer.Option(
        1.0, "--interval", "-i", min=0.05, help="Seconds between refreshes (--watch)."
    ),
    count: int | None = typer.Option(
        None, "--count", "-c", min=1, help="Stop after this many refreshes (--watch)."
    ),
    addr: str | None = AddrOpt,
) -> None:
    """Show every node: role, term, leader, commit/applied/last index; exit 3 if none answers.

    A node that found damaged stored data is listed below the table as "ADDR degraded:
    REASON" ("degraded" in --json: the reason, or null); one whose storage is new and that
    does not vote yet, as "ADDR recovering" ("recovering" in --json).

    With --watch: a table refreshing in place (id, addr, role, term, leader, commit, applied,
    last index, lag = the highest commit index seen minus the node's applied index).
    """
    probe_timeout = min(_settings(ctx).timeout, 2.0)
    if watch:
        if as_json:
            _fail(Exit.USAGE, "error: --watch and --json do not go together")
        from rich.console import Console

        tty = sys.stdout.isatty()
        console = Console() if tty else Console(width=200)
        _run(ctx, addr, lambda c: watch_status(c, console, interval, count, tty, probe_timeout))
        return
    rows = _run(ctx, addr, lambda c: c.status(timeout=probe_timeout))
    if as_json:
        keys = (*STATUS_COLUMNS, "degraded", "recovering")
        print(json.dumps([{k: r.get(k) for k in keys} for r in rows]))
    else:
        _print_status(rows)
    if all(r["role"] == "unreachable" for r in rows):
        _fail(Exit.UNAVAILABLE, "unavailable: no node answered")


def _print_status(rows: list[dict[str, Any]], console: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=True, header_style="bold")
    for col in ("node", "role", "term", "leader", "commit", "applied", "last index"):
        right = col in ("term", "commit", "applied", "last index")
        table.add_column(col, justify="right" if right else "left", no_wrap=True)
    for r in rows:
        role = str(r["role"])
        style = {"leader": "bold green", "unreachable": "red", "candidate": "yellow"}.get(role)
        cells = [
            str(r["addr"]),
            role,
            *("-" if r.get(k) is None else str(r[k]) for k in STATUS_COLUMNS[3:]),
        ]
        table.add_row(*cells, style=style)
    if console is None:
        # Off a terminal rich assumes 80 columns and would truncate addresses.
        console = Console() if sys.stdout.isatty() else Console(width=200)
    console.print(table)
    for r in rows:
        if r.get("degraded"):
            console.print(f"{r['addr']} degraded: {r['degraded']}", style="red", markup=False)
        if r.get("recovering"):
            console.print(
                f"{r['addr']} recovering: new storage, does not vote until caught up",
                style="yellow",
                markup=False,
            )


WATCH_COLUMNS = ("id", "addr", "role", "term", "leader", "commit", "applied", "last index", "lag")


def watch_table(rows: list[dict[str, Any]], title: str | None = None) -> Any:
    """The --watch table: one row per node, lag = highest commit seen - applied."""
    from rich.table import Table

    commits = [r["commit"] for r in rows if isinstance(r.get("commit"), int)]
    top = max(commits) if commits else None
    table = Table(show_header=True, header_style="bold", title=title)
    for col in WATCH_COLUMNS:
        right = col in ("term", "commit", "applied", "last index", "lag")
        table.add_column(col, justify="right" if right else "left", no_wrap=True)
    for r in rows:
        role = str(r["role"])
        style = {"leader": "bold green", "unreachable": "red", "candidate": "yellow"}.get(role)
        applied = r.get("applied")
        lag = "-" if top is None or not isinstance(applied, int) else str(max(0, top - applied))
        vals = [r.get(k) for k in ("term", "leader", "commit", "applied", "last_index")]
        cells = [str(r["id"]), str(r["addr"]), role, *("-" if v is None else str(v) for v in vals)]
        table.add_row(*cells, lag, style=style)
    return table


async def watch_status(
    client: Client,
    console: Any,
    interval: float,
    count: int | None,
    live: bool,
    probe_timeout: float = 2.0,
) -> int:
    """Refresh the status table every `interval` s: in place (rich Live) when `live`, else one
    table per refresh (logs, pipes). Stops after `count` refreshes or Ctrl+C; returns the
    number of refreshes."""
    from rich.live import Live

    done = 0

    def title() -> str:
        return f"rkv status {time.strftime('%H:%M:%S')} (every {interval:g}s, Ctrl+C to stop)"

    try:
        if live:
            rows = await client.status(timeout=probe_timeout)
            with Live(watch_table(rows, title()), console=console, auto_refresh=False) as view:
                done = 1
                while count is None or done < count:
                    await trio.sleep(interval)
                    rows = await client.status(timeout=probe_timeout)
                    view.update(watch_table(rows, title()), refresh=True)
                    done += 1
        else:
            while count is None or done < count:
                if done:
                    await trio.sleep(interval)
                rows = await client.status(timeout=probe_timeout)
                console.print(watch_table(rows, title()))
                done += 1
    except KeyboardInterrupt:
        pass  # Ctrl+C is how a watch normally ends
    return done


@app.command("check")
def check_cmd(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="One JSON object."),
    addr: str | None = AddrOpt,
) -> None:
    """Compare every member's state hash at a common applied index (through any node).

    Prints, per member: the verdict (agrees, differs, not compared, unreachable), the index
    compared at, its state hash there and its applied index. Exit 0 when every member
    agrees, 17 when one differs (its stored state is not the others': see README,
    Integrity), 3 when one could not be compared (unreachable, or too far behind)."""
    result = _run(ctx, addr, lambda c: c.check())
    members = result["members"]
    if as_json:
        print(json.dumps(result, sort_keys=True))
    else:
        _print_check(result)
    verdicts = {m.get("verdict") for m in members}
    if "differs" in verdicts:
        raise typer.Exit(int(Exit.REPLICAS_DIFFER))
    if not members or verdicts != {"agrees"}:
        raise typer.Exit(int(Exit.UNAVAILABLE))


@app.command("repair")
def repair_cmd(
    ctx: typer.Context,
    node: str = typer.Argument(..., help="The damaged node's address (host:port)."),
    addr: str | None = AddrOpt,
) -> None:
    """Rebuild NODE's stored state from the cluster (README, Integrity).

    NODE stops (exit code 18), its data dir is moved aside (DATA_DIR.damaged-TIME, kept for
    inspection) and a new one prepared. Start NODE again with its usual flags: it recovers
    from the leader (a snapshot or the log) before it votes again. Refused for the leader
    (hand leadership over first: rkv leader transfer) and for a cluster's only voter."""
    result = _run(ctx, addr, lambda c: c.repair(node))
    print(
        f"{result['node']}: stopping for repair; its damaged data dir goes to "
        f"{result['moved_to']}. Start it again with its usual flags: it rebuilds from the "
        "cluster."
    )


def _print_check(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    index = result.get("index")
    print(
        f"state hashes compared at index {'-' if index is None else index} "
        f"(by {result.get('node')})"
    )
    table = Table(show_header=True, header_style="bold")
    for col in ("member", "verdict", "index", "state hash", "applied"):
        table.add_column(col, justify="right" if col in ("index", "applied") else "left")
    styles = {"agrees": "green", "differs": "bold red", "unreachable": "red"}
    for m in result["members"]:
        cells = [m.get(k) for k in ("node", "verdict", "index", "hash", "applied")]
        table.add_row(
            *("-" if c is None else str(c) for c in cells), style=styles.get(m.get("verdict"))
        )
    console = Console() if sys.stdout.isatty() else Console(width=200)
    console.print(table)
    for m in result["members"]:
        if m.get("reason"):
            console.print(f"{m.get('node')} {m.get('verdict')}: {m['reason']}", markup=False)


leader_app = typer.Typer(help="Leadership: transfer it to another node.", no_args_is_help=True)
app.add_typer(leader_app, name="leader")


@leader_app.command("transfer")
def leader_transfer_cmd(
    ctx: typer.Context,
    to: str | None = typer.Option(
        None, "--to", help="The new leader's id (host:port). Default: the most caught-up node."
    ),
    addr: str | None = AddrOpt,
) -> None:
    """Hand leadership to another node (e.g. before maintenance); prints the new leader."""
    new = _run(ctx, addr, lambda c: c.transfer_leader(to))
    print(f"leader: {new}")


member_app = typer.Typer(
    help="Membership: list, add (as a learner, then promote), promote, remove.",
    no_args_is_help=True,
)
app.add_typer(member_app, name="member")


def _print_members(conf: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(conf, sort_keys=True))
        return
    progress = {p.get("node"): p for p in conf["progress"]}
    for role, ids in (("voter", conf["voters"]), ("learner", conf["learners"])):
        for node in ids:
            p = progress.get(node, {})
            lead = " (leader)" if node == conf["leader"] else ""
            match = p.get("match")
            state = f"  match {match}/{conf['commit']} {p.get('state', '')}" if match else ""
            print(f"{node}  {role}{lead}{state}".rstrip())


MemberTimeoutOpt = typer.Option(
    None,
    "--timeout",
    min=0.1,
    help="Seconds to keep trying (a new member must catch up before it is promoted). "
    "Default: the global --timeout, at least 60 s for add and promote.",
)


@member_app.command("list")
def member_list_cmd(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    addr: str | None = AddrOpt,
) -> None:
    """The voters and learners, with each one's replication progress (from the leader)."""
    _print_members(_run(ctx, addr, lambda c: c.members()), as_json)


def _long(ctx: typer.Context, timeout: float | None) -> float:
    return timeout if timeout is not None else max(_settings(ctx).timeout, 60.0)


@member_app.command("add")
def member_add_cmd(
    ctx: typer.Context,
    node: str = typer.Argument(..., help="The new node's address host:port (its id)."),
    learner: bool = typer.Option(
        False, "--learner", help="Leave it a learner (non-voting); do not promote it."
    ),
    timeout: float | None = MemberTimeoutOpt,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    addr: str | None = AddrOpt,
) -> None:
    """Add a node: it joins as a learner, and is promoted to voter once caught up.

    Start the node with `rkv serve --join` (it does this itself when not yet a member).
    """
    t = _long(ctx, timeout)
    _print_members(
        _run(ctx, addr, lambda c: c.add_member(node, learner=learner, timeout=t)), as_json
    )


@member_app.command("promote")
def member_promote_cmd(
    ctx: typer.Context,
    node: str = typer.Argument(..., help="The learner's id (host:port)."),
    timeout: float | None = MemberTimeoutOpt,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    addr: str | None = AddrOpt,
) -> None:
    """Make a learner a voter (waits until it has caught up with the log)."""
    t = _long(ctx, timeout)
    _print_members(_run(ctx, addr, lambda c: c.promote_member(node, timeout=t)), as_json)


@member_app.command("remove")
def member_remove_cmd(
    ctx: typer.Context,
    node: str = typer.Argument(..., help="The member's id (host:port); the leader is fine."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    addr: str | None = AddrOpt,
) -> None:
    """Remove a voter or learner. The removed node stops itself (exit code 14); a removed
    leader first hands leadership to the most caught-up voter."""
    _print_members(_run(ctx, addr, lambda c: c.remove_member(node)), as_json)


@app.command("backup")
def backup_cmd(
    ctx: typer.Context,
    path: Path = typer.Argument(..., help="The backup file to write (replaced atomically)."),  # noqa: B008
    node: str | None = typer.Option(
        None, "--node", help="Back up this node's copy (default: the first node that answers)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
    addr: str | None = AddrOpt,
) -> None:
    """Write a consistent hot backup of the cluster to PATH (manifest + compacted store).

    It holds every write acknowledged before the command started; its SHA-256 is checked
    before the file is renamed into place. Restore it with `rkv restore`.
    """
    if path.is_dir():
        _fail(Exit.USAGE, f"error: {path} is a directory; give a file path")
    if not path.resolve().parent.is_dir():
        _fail(Exit.USAGE, f"error: no such directory: {path.parent}")

    async def go(c: Client) -> dict[str, Any]:
        with _progress("backup", None) as progress:
            return await c.backup(path, node=node, progress=progress)

    m = _run(ctx, addr, go)
    if as_json:
        print(json.dumps(m, sort_keys=True))
        return
    print(
        f"backup {path}: index {m['index']} (term {m['term']}), {m['keys']} keys, "
        f"{m['files']} files, {m['data_size']} bytes, sha256 {m['data_sha256']} "
        f"(from {m.get('node_id', '?')})"
    )


@app.command("restore")
def restore_cmd(
    path: Path = typer.Argument(..., help="The backup file."),  # noqa: B008
    data_dir: Path | None = typer.Option(  # noqa: B008
        None, "--data-dir", "-d", help="New (empty) data directory to seed."
    ),
    port: int = typer.Option(DEFAULT_PORT, "--port", "-p", help="Port the restored node will use."),
    host: str = typer.Option(DEFAULT_HOST, "--host", help="Host the restored node will use."),
    node_id: str | None = typer.Option(
        None, "--id", "--advertise", help="The restored node's id (default: HOST:PORT)."
    ),
    check: bool = typer.Option(False, "--check", help="Only verify the backup file."),
) -> None:
    """Verify a backup, then seed a new single-node cluster's data dir from it.

    Then run `rkv serve --port P --data-dir D` (same --host/--port/--id) to serve it.
    Exit 4 if the backup is corrupt, 2 if the data dir is not empty.
    """
    from rkv.backup import restore, verify

    if not path.is_file():
        _fail(Exit.USAGE, f"error: no such file: {path}")
    with _user_errors():
        if check:
            m = verify(path)
            print(f"backup {path} is intact: index {m['index']}, {m['keys']} keys")
            return
        if data_dir is None:
            _fail(Exit.USAGE, "error: give --data-dir (a new, empty directory)")
        from rkv.config import NodeConfig

        cfg = NodeConfig.create((host, port), [], advertise=node_id, data_dir=data_dir)
        m = restore(path, data_dir, node_id=cfg.id, cluster_id=cfg.cluster_id)
    print(
        f"restored index {m['index']} ({m['keys']} keys, {m['files']} files) into {data_dir} "
        f"as single-node cluster {cfg.cluster_id}; start it with:\n"
        f"  rkv serve --host {host} --port {port}"
        + (f" --id {node_id}" if node_id else "")
        + f" --data-dir {data_dir}"
    )


# --- serve, cluster, sim ---------------------------------------------------------------------


def _split_peers(peers: str | None) -> list[str]:
    return [p.strip() for p in (peers or "").split(",") if p.strip()]


JOIN_PROMOTE_SECONDS = 3600.0
"""How long `rkv serve --join` keeps trying to promote the new node (it must catch up
first; a large data set takes a while to stream)."""


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
        help="Serve /livez, /readyz and /metrics (Prometheus) over HTTP on HOST:PORT. Off "
        "by default.",
    ),
    cluster_token: str | None = typer.Option(
        None,
        "--cluster-token",
        envvar="RKV_CLUSTER_TOKEN",
        help="Shared secret (16+ characters) every peer and client must prove it knows "
        "(HMAC challenge-response; never sent). Prefer the environment variable.",
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
        _fail(Exit.USAGE, "serve: error: give either --peers (a new cluster) or --join, not both")
    if learner and join is None:
        _fail(Exit.USAGE, "serve: error: --learner needs --join")
    seeds: list[str] = []
    if join is not None:
        with _user_errors():
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
        _fail(Exit.USAGE, f"serve: error: {_one_line(str(exc))}")
    _import_trio_testing_without_pytest()
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
    with _user_errors():
        conf = trio.run(_join_cluster, join_client, cfg.id)
    if new_dir and cfg.id in conf["voters"]:
        # A voter that lost its data dir would vote with a log it no longer has (issue 20).
        _fail(
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


def _import_trio_testing_without_pytest() -> None:
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


_NO_VALUE = object()


@dataclass(frozen=True, slots=True)
class _FastOption:
    dest: str
    kind: type
    """int, str, Path or bool (a flag)."""
    default: Any
    envvar: str | None
    lo: float | None
    hi: float | None

    def convert(self, text: str) -> Any:
        """The value typer would produce from `text`, or _NO_VALUE where it might differ."""
        if text.startswith("-"):
            return _NO_VALUE  # typer's business: a missing value, a negative number
        if self.kind is str:
            return text
        if self.kind is Path:
            return Path(text) if text else _NO_VALUE
        if not (text.isascii() and text.isdigit()):
            return _NO_VALUE
        value = int(text)
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            return _NO_VALUE
        return value


def _fast_options(command: Callable[..., Any]) -> dict[str, _FastOption] | None:
    """Option name -> spec for each option of a typer command, read from its signature (the
    one definition of the options); None if it uses what `_fast_kwargs` does not handle."""
    hints = get_type_hints(command)
    by_name: dict[str, _FastOption] = {}
    for name, param in inspect.signature(command).parameters.items():
        info = param.default
        if not isinstance(info, typer.models.OptionInfo):
            return None
        kinds = [t for t in get_args(hints[name]) or (hints[name],) if t is not type(None)]
        plain = (
            info.callback is None
            and info.parser is None
            and info.default_factory is None
            and info.default is not ...  # a required option
            and not info.is_eager
            and not info.clamp
            and not info.exists
            and not info.resolve_path
            and info.path_type is None
            and not info.count
            and not info.prompt
            and getattr(info, "flag_value", None) is None  # older typers only
        )
        if len(kinds) != 1 or kinds[0] not in (int, str, Path, bool) or not plain:
            return None
        envvar = info.envvar if isinstance(info.envvar, str) or info.envvar is None else None
        if info.envvar is not None and envvar is None:
            return None
        spec = _FastOption(name, kinds[0], info.default, envvar, info.min, info.max)
        decls = list(info.param_decls or ()) or ["--" + name.replace("_", "-")]
        for decl in decls:
            if "/" in decl or not decl.startswith("-"):
                return None
            by_name[decl] = spec
    return by_name


def _fast_kwargs(command: Callable[..., Any], args: list[str]) -> dict[str, Any] | None:
    """The keyword arguments typer would call `command` with for `args`, found without typer,
    or None when `args` hold anything but plain options of `command` (help, an unknown
    option, an out-of-range or odd value, ...): typer then parses them and reports the errors.

    Why: this typer builds a pydantic validator for every parameter of the command it runs
    (importing pydantic), about 0.14 s of CPU that `rkv serve` pays at every start; three
    nodes restarting at once on two cores wait for it (docs/bench.md, restart to serving).
    """
    if any(k.endswith("_COMPLETE") and k.startswith("_") for k in os.environ):
        return None  # shell completion is typer's
    options = _fast_options(command)
    if options is None:
        return None
    given: dict[str, Any] = {}
    i = 0
    while i < len(args):
        token = args[i]
        name, eq, text = token.partition("=") if token.startswith("--") else (token, "", "")
        spec = options.get(name)
        if spec is None:
            return None
        i += 1
        if spec.kind is bool:
            if eq:
                return None
            given[spec.dest] = True
            continue
        if not eq:
            if i == len(args):
                return None
            text = args[i]
            i += 1
        value = spec.convert(text)
        if value is _NO_VALUE:
            return None
        given[spec.dest] = value
    out: dict[str, Any] = {}
    for spec in options.values():
        if spec.dest in given:
            out[spec.dest] = given[spec.dest]
        elif spec.envvar is not None and os.environ.get(spec.envvar):
            value = spec.convert(os.environ[spec.envvar])
            if value is _NO_VALUE:
                return None
            out[spec.dest] = value
        else:
            out[spec.dest] = spec.default
    return out


@app.command("sim")
def sim_cmd(
    seeds: int | None = typer.Option(
        None, "--seeds", min=1, help="How many seeds to run (default 100 without --duration)."
    ),
    first_seed: int | None = typer.Option(
        None,
        "--first-seed",
        help="First seed of the range (default 1; with --duration a random one, printed).",
    ),
    nodes: int = typer.Option(3, "--nodes", min=1, help="Cluster size."),
    ticks: int | None = typer.Option(
        None, "--ticks", min=1, help="Length of the faulty phase in ticks (default 1500)."
    ),
    compact_every: int = typer.Option(
        0,
        "--compact-every",
        min=0,
        help="Compact each node's log every N applied entries (snapshots; 0: never).",
    ),
    membership: bool = typer.Option(
        False, "--membership", help="Random membership changes among the faults."
    ),
    disk_replace: bool = typer.Option(
        False,
        "--disk-replace",
        help="Replaced disks among the faults: a node restarts with empty storage.",
    ),
    jobs: int = typer.Option(
        1, "--jobs", "-j", min=1, help="Worker processes to shard the seeds over."
    ),
    duration: float | None = typer.Option(
        None,
        "--duration",
        min=0.001,
        help="Soak: run fresh seeds for this many seconds (with --seeds: whichever ends first).",
    ),
    as_json: bool = typer.Option(False, "--json", help="End with one JSON summary line."),
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="A line per seed; with --seeds 1 the full event trace."
    ),
    raw_node_factory: str | None = typer.Option(None, "--raw-node-factory", hidden=True),
) -> None:
    """Run the deterministic simulator (real Raft core, simulated faults) over many seeds.

    A failing seed prints its trace and the `rkv sim` command that replays it.

    Exit code: 0 if every seed passed, 1 if a seed failed or a worker died, 130 if interrupted.
    """
    from rkv.sim.command import run_sim_command

    raise typer.Exit(
        run_sim_command(
            seeds,
            first_seed,
            nodes,
            as_json,
            verbose,
            ticks=ticks,
            compact_every=compact_every,
            membership=membership,
            disk_replace=disk_replace,
            jobs=jobs,
            duration=duration,
            raw_node_factory=raw_node_factory,
        )
    )


@app.command(
    "nemesis",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def nemesis_cmd(ctx: typer.Context) -> None:
    """Jepsen-style run on real processes: faults, concurrent clients, linearizability check.

    Options are those of `python -m rkv.nemesis` (e.g. --duration 600 --nodes 5 --json;
    `rkv nemesis --help` lists them). Exit 0 only on a clean verdict.
    """
    from rkv.nemesis import main as nemesis_main

    raise typer.Exit(nemesis_main(list(ctx.args)))


class _Stop(Exception):
    """SIGTERM/SIGINT reached the cluster supervisor."""


class _StopFlag:
    """Set by the signal handler; polled by the supervisor loops. (Raising from the handler
    could land inside a trio.run used for a status poll and break it mid-flight.)"""

    def __init__(self) -> None:
        self.signal: str | None = None

    def check(self) -> None:
        if self.signal is not None:
            raise _Stop(f"{self.signal} received")

    def sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.check()
            time.sleep(min(0.05, max(0.0, end - time.monotonic())))
        self.check()


def _tail(child: Child, lines: int = 5) -> str:
    """The last lines of a node's log, indented (for an error message)."""
    text = child.log_text(4096)
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


def _stop_children(children: list[Child], grace: float = 10.0) -> None:
    def on_kill(ch: Child) -> None:
        _err(f"cluster: {ch.name} did not stop within {grace:g}s; killing it")

    stop_all(children, grace, on_kill)


def _cluster_status(addrs: list[str]) -> list[dict[str, Any]]:
    async def go() -> list[dict[str, Any]]:
        token = os.environ.get("RKV_CLUSTER_TOKEN") or None  # the children's, inherited
        async with Client(addrs, timeout=1.0, token=token) as c:
            return await c.status(timeout=1.0)

    return trio.run(go)


@app.command("cluster")
def cluster_cmd(
    nodes: int = typer.Option(3, "--nodes", "-n", min=1, max=15, help="How many nodes."),
    base_port: int = typer.Option(
        DEFAULT_PORT, "--base-port", min=1, max=65535, help="Port of the first node."
    ),
    host: str = typer.Option(DEFAULT_HOST, "--host", help="Address of every node."),
    data_dir: Path = typer.Option(  # noqa: B008
        Path("rkv-data"), "--data-dir", "-d", help="Parent of the nodes' data directories."
    ),
    startup_timeout: float = typer.Option(
        30.0, "--startup-timeout", help="Seconds to wait for a leader."
    ),
) -> None:
    """Run a local N-node cluster (child `rkv serve` processes) until Ctrl+C / SIGTERM.

    Running it again with the same --data-dir recovers the same data.
    """
    if base_port + nodes - 1 > 65535:
        _fail(Exit.USAGE, "error: --base-port + --nodes exceeds 65535")
    addrs = [format_address(host, base_port + i) for i in range(nodes)]
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _fail(Exit.USAGE, f"error: cannot create {data_dir}: {exc.strerror or exc}")
    children: list[Child] = []
    reported: set[str] = set()  # nodes whose unexpected exit was reported

    stop_flag = _StopFlag()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop_flag.signal = signal.Signals(signum).name

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    try:
        for a in addrs:
            h, p = a.rsplit(":", 1)
            safe = h.strip("[]").replace(":", "_")
            ddir = data_dir / f"{safe}_{p}"
            log_path = data_dir / f"{safe}_{p}.log"
            cmd = [
                sys.executable,
                "-m",
                "rkv",
                "serve",
                "--host",
                host,
                "--port",
                p,
                "--peers",
                ",".join(addrs),
                "--data-dir",
                str(ddir),
            ]
            # A session of their own: Ctrl+C reaches only this supervisor, which then stops
            # every child in order (SIGTERM, wait, SIGKILL after a grace period).
            child = Child(a, cmd, log_path, new_session=True)
            child.start()
            children.append(child)
        print(f"rkv cluster: starting {nodes} nodes ({', '.join(addrs)}), data in {data_dir}/")
        leader = _wait_for_leader(children, addrs, startup_timeout, stop_flag)
        if leader is None:
            code = 1
            return
        print()
        _print_status(_cluster_status(addrs))
        alist = ",".join(addrs)
        print(
            f"\nleader: {leader}. Try (in another terminal):\n"
            f"  rkv set greeting 'Hello World'\n"
            f"  rkv get greeting\n"
            f"  rkv upload photo ./some.png && rkv download photo ./copy.png\n"
            f"  rkv status\n"
            + ("" if alist == ",".join(DEFAULT_ADDRS) else f"  (with --addr {alist})\n")
            + f"Node logs: {data_dir}/*.log. Press Ctrl+C to stop the cluster."
        )
        sys.stdout.flush()
        while True:
            stop_flag.check()
            alive = 0
            for ch in children:
                rc = ch.exit_code()
                if rc is None:
                    alive += 1
                elif ch.name not in reported:
                    reported.add(ch.name)
                    _err(
                        f"cluster: node {ch.name} (pid {ch.pid}) exited unexpectedly "
                        f"with code {rc}; log {ch.log_path}:\n{_tail(ch)}"
                    )
            if alive == 0:
                _err("cluster: every node has exited")
                code = 1
                return
            stop_flag.sleep(0.2)
    except _Stop as stop:
        print(f"\nrkv cluster: {stop}, stopping the nodes...", flush=True)
    finally:
        # Further signals must not interrupt the orderly stop.
        for s in old:
            signal.signal(s, signal.SIG_IGN)
        _stop_children(children)
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if children:
            print("rkv cluster: stopped", flush=True)
    raise typer.Exit(code)


def _wait_for_leader(
    children: list[Child], addrs: list[str], timeout: float, stop_flag: _StopFlag
) -> str | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stop_flag.check()
        for ch in children:
            rc = ch.exit_code()
            if rc is not None:
                _err(
                    f"cluster: node {ch.name} exited during startup with code {rc}; "
                    f"log {ch.log_path}:\n{_tail(ch)}"
                )
                return None
        rows = _cluster_status(addrs)
        for r in rows:
            if r["role"] == "leader":
                return str(r["addr"])
        stop_flag.sleep(0.2)
    _err(
        f"cluster: no leader elected within {timeout:g}s (see {children[0].log_path.parent}/*.log)"
    )
    return None


def main() -> None:
    """The `rkv` console script (pyproject: rkv = "rkv.cli:main").

    `rkv serve` with plain options skips typer's parsing (see `_fast_kwargs`); everything
    else, and any serve command line it is not sure about, goes through typer.
    """
    args = sys.argv[1:]
    kwargs = _fast_kwargs(serve_cmd, args[1:]) if args[:1] == ["serve"] else None
    if kwargs is None:
        app(prog_name="rkv")
        return
    # What typer's standalone mode does with the command's outcome.
    try:
        serve_cmd(**kwargs)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(0)


__all__ = ["Exit", "app", "exit_code_for", "main"]
