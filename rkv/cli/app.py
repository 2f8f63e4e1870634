"""The `rkv` typer app and what every command shares: the global options (--addr, --timeout,
--token, TLS), the client runner, and the translation of errors into one stderr line and a
documented exit code (no traceback for a user mistake).

Owns: `app`, `Exit` and its epilog, `exit_code_for`, `user_errors`, `run_client` (a command's
call on a Client), `AddrOpt`, and the progress bar of file transfers. Must not: define
commands (rkv.cli.client_cmds, status, admin, serve, sim_cmds, cluster register theirs on
`app`) or import the command modules (they import this one), the node runtime or the
simulator: every `rkv` process loads this module.

Exit codes of the client commands: 0 ok, 1 not found / compare failed, 2 usage error (bad
arguments, bad address, missing local file), 3 cluster unavailable, 4 integrity error,
5 other server error, 6 authentication failed (wrong or missing cluster token), 7 lease not
found, 8 lock or leadership lost (`rkv lock`, `rkv elect`), 16 a node's
stored data failed its checksum, 17 replicas differ (`rkv check`). `rkv serve` uses the node
runtime's codes (rkv.errors.ExitCode).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import NoReturn, TypeVar

import trio
import typer

from rkv.client import DEFAULT_ADDRS, Client, Progress, parse_addresses
from rkv.errors import (
    AuthError,
    BadRequest,
    Changed,
    Compacted,
    CorruptData,
    ExitCode,
    IntegrityError,
    LeaseNotFound,
    LockLost,
    NotFound,
    NotLeader,
    RkvError,
    Timeout,
    Unavailable,
)

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
    LEASE_NOT_FOUND = 7
    """The lease does not exist (never granted, revoked or expired)."""
    LOCK_LOST = 8
    """`rkv lock` / `rkv elect`: the lock or leadership was lost (its lease expired or was
    revoked, or its key deleted) while held; `rkv lock`'s command got SIGTERM."""
    CORRUPT = ExitCode.INTEGRITY
    """16: the node's stored copy failed its checksum (the node is degraded); nothing was
    served. Another node (`--addr`) may hold a good copy."""
    REPLICAS_DIFFER = ExitCode.REPLICAS_DIFFER
    """17: `rkv check` found a member whose state hash differs from the others'."""


EPILOG = (
    "Exit codes: 0 ok, 1 not found / compare failed, 2 usage error, 3 cluster unavailable, "
    "4 integrity error, 5 other server error, 6 authentication failed, 7 lease not found, "
    "8 lock or leadership lost, "
    "16 a node's stored "
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


def err(msg: str) -> None:
    print(f"rkv: {msg}", file=sys.stderr, flush=True)


def fail(code: Exit | int, msg: str) -> NoReturn:
    err(msg)
    raise typer.Exit(int(code))


def exit_code_for(exc: BaseException) -> Exit:
    """The exit code for an error raised by a client command."""
    if isinstance(exc, AuthError):
        return Exit.AUTH
    if isinstance(exc, LeaseNotFound):
        return Exit.LEASE_NOT_FOUND
    if isinstance(exc, LockLost):
        return Exit.LOCK_LOST
    if isinstance(exc, NotFound | Compacted):  # Compacted: the revisions asked for are gone
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


def one_line(text: str) -> str:
    return " ".join(str(text).split())


@contextmanager
def user_errors() -> Iterator[None]:
    """Errors a user can cause become one stderr line and an exit code, never a traceback."""
    try:
        yield
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        err("interrupted")
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
            Exit.LEASE_NOT_FOUND: "lease not found",
            Exit.LOCK_LOST: "lock lost",
            Exit.CORRUPT: "integrity error",
        }[code]
        fail(code, f"{kind}: {one_line(msg)}")


def settings_of(ctx: typer.Context) -> Settings:
    obj = ctx.find_object(Settings)
    return obj if obj is not None else Settings(None, 10.0)


def run_client(ctx: typer.Context, addr: str | None, fn: Callable[[Client], Awaitable[T]]) -> T:
    """Run `fn(client)` against the cluster, translating errors to exit codes."""
    s = settings_of(ctx)
    text = addr or s.addr or os.environ.get("RKV_ADDR") or ",".join(DEFAULT_ADDRS)
    with user_errors():
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


@contextmanager
def progress_bar(label: str, total: int | None) -> Iterator[Progress | None]:
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
