"""`rkv status`: every node's role, term, leader and indexes, once (a table or JSON) or as a
live table (--watch).

Owns: the status table (`print_status`, which `rkv cluster` prints too), the --watch table
and its refresh loop (`watch_status`). Must not: probe nodes itself (Client.status does) or
import rich at module level (only the commands that draw a table load it).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import trio
import typer

from rkv.cli.app import AddrOpt, Exit, app, fail, run_client, settings_of
from rkv.client import Client

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
    probe_timeout = min(settings_of(ctx).timeout, 2.0)
    if watch:
        if as_json:
            fail(Exit.USAGE, "error: --watch and --json do not go together")
        from rich.console import Console

        tty = sys.stdout.isatty()
        console = Console() if tty else Console(width=200)
        run_client(
            ctx, addr, lambda c: watch_status(c, console, interval, count, tty, probe_timeout)
        )
        return
    rows = run_client(ctx, addr, lambda c: c.status(timeout=probe_timeout))
    if as_json:
        keys = (*STATUS_COLUMNS, "degraded", "recovering")
        print(json.dumps([{k: r.get(k) for k in keys} for r in rows]))
    else:
        print_status(rows)
    if all(r["role"] == "unreachable" for r in rows):
        fail(Exit.UNAVAILABLE, "unavailable: no node answered")


def print_status(rows: list[dict[str, Any]], console: Any = None) -> None:
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
