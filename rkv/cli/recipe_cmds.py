"""The recipe commands: `rkv lock NAME -- COMMAND...` and `rkv elect NAME [PROPOSAL]`.

Owns: their arguments, output and exit codes, and how they stop on SIGINT/SIGTERM (the lock
or candidacy is released first). `rkv lock` runs COMMAND while holding the lock (as `etcdctl
lock`), with RKV_LOCK_KEY (the lock's key) and RKV_LOCK_REVISION (its fencing token) in its
environment, and exits with the command's code (128+N if signal N ended it; 2 if it
cannot be run). If the lock is
lost meanwhile, the command gets SIGTERM (SIGKILL 5 s later) and rkv exits 8
(Exit.LOCK_LOST). `rkv elect NAME PROPOSAL` campaigns, prints REVISION<TAB>PROPOSAL once
elected and leads until interrupted (then resigns; exit 0; 8 if leadership is lost);
`rkv elect NAME` (or `--listen`) prints REVISION<TAB>VALUE for the leader and each change.
Must not: implement the recipes (rkv.recipes) or import anything heavy at module level.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Awaitable, Callable

import trio
import typer

from rkv.cli.app import AddrOpt, Exit, app, fail, run_client
from rkv.client import Client
from rkv.client_leases import plain_errors
from rkv.recipes import Election, Lock


def _text(b: bytes) -> str:
    return b.decode("utf-8", errors="backslashreplace")


async def _until_signal(fn: Callable[[], Awaitable[int]]) -> int:
    """`fn()`'s result, or, on SIGINT/SIGTERM, `fn` cancelled (it cleans up on its way out)
    and 128 + the signal's number."""
    got: list[int] = []

    async def watch(scope: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                got.append(signum)
                scope.cancel()
                return

    result = 0
    with plain_errors():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch, nursery.cancel_scope)
            result = await fn()
            nursery.cancel_scope.cancel()
    return 128 + got[0] if got else result


@app.command("lock")
def lock_cmd(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The lock's name (its keys: NAME/<lease id>)."),
    command: list[str] = typer.Argument(  # noqa: B008
        ..., help="The command to run while holding the lock (after --)."
    ),
    ttl: float = typer.Option(60.0, "--ttl", min=0.001, help="Seconds of the lock's lease."),
    timeout: float | None = typer.Option(
        None, "--timeout", min=0.001, help="Seconds to wait for the lock (default: no limit)."
    ),
    addr: str | None = AddrOpt,
) -> None:
    """Run COMMAND while holding the lock NAME: `rkv lock NAME -- COMMAND...`. Its env has
    RKV_LOCK_KEY and RKV_LOCK_REVISION (a fencing token). Exits with the command's code;
    8 if the lock was lost (the command got SIGTERM); 3 if not acquired within --timeout."""

    async def hold(c: Client) -> int:
        async with Lock(c, name, ttl, timeout=timeout) as lock:
            assert lock.key is not None
            env = dict(os.environ)
            env["RKV_LOCK_KEY"] = _text(lock.key)
            env["RKV_LOCK_REVISION"] = str(lock.revision)
            proc = await trio.run_process(command, check=False, stdin=None, env=env)
        rc = proc.returncode
        return 128 - rc if rc < 0 else rc

    code = run_client(ctx, addr, lambda c: _until_signal(lambda: hold(c)))
    if code:
        raise typer.Exit(code)


@app.command("elect")
def elect_cmd(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The election's name."),
    proposal: str | None = typer.Argument(None, help="Campaign with this value."),
    listen: bool = typer.Option(
        False,
        "--listen",
        "-l",
        help="Print each leader as it changes (the default without PROPOSAL).",
    ),
    ttl: float = typer.Option(60.0, "--ttl", min=0.001, help="Seconds of the candidate's lease."),
    addr: str | None = AddrOpt,
) -> None:
    """With PROPOSAL: campaign, print REVISION<TAB>PROPOSAL once elected, lead until Ctrl-C or
    SIGTERM, then resign (exit 8 if leadership is lost). Without (or --listen): print
    REVISION<TAB>VALUE for the leader and each change of leader or value."""
    if listen and proposal is not None:
        fail(Exit.USAGE, "error: --listen takes no PROPOSAL")

    async def lead(c: Client) -> int:
        assert proposal is not None
        async with Election(c, name, ttl) as e:
            rev = await e.campaign(proposal)
            print(f"{rev}\t{proposal}", flush=True)
            try:
                await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True, deadline=trio.current_time() + 5):
                    await e.resign()
        return 0

    async def observe(c: Client) -> int:
        async for value, rev in Election(c, name).observe():
            print(f"{rev}\t{_text(value)}", flush=True)
        return 0

    run = observe if proposal is None else lead
    code = run_client(ctx, addr, lambda c: _until_signal(lambda: run(c)))
    if code not in (0, 128 + signal.SIGINT, 128 + signal.SIGTERM):
        raise typer.Exit(code)
