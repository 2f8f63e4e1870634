"""The lease commands: `rkv lease grant|keepalive|revoke|ttl|list`, and `rkv set --lease/--ttl`.

Owns: their arguments and output (one line per lease or renewal; TTLs in seconds). Must not:
implement client behaviour (rkv.client and rkv.client_leases do) or import anything heavy at
module level (every `rkv` process loads this module).
Exit codes: 7 when the lease does not exist (rkv.cli.app.Exit.LEASE_NOT_FOUND).
"""

from __future__ import annotations

import trio
import typer

from rkv.cli.app import AddrOpt, Exit, app, fail, run_client
from rkv.client import Client

lease_app = typer.Typer(
    help="Leases: keys attached to a lease are deleted with it (TTLs in seconds).",
    no_args_is_help=True,
)
app.add_typer(lease_app, name="lease")


def _secs(x: float) -> str:
    return f"{x:.3f}".rstrip("0").rstrip(".")


@lease_app.command("grant")
def grant_cmd(
    ctx: typer.Context,
    ttl: float = typer.Argument(..., help="Seconds the lease lives without a keep-alive."),
    lease_id: int = typer.Option(0, "--id", min=0, help="The lease's id (default: picked)."),
    addr: str | None = AddrOpt,
) -> None:
    """Grant a lease; prints ID<TAB>TTL (a TTL below the cluster's minimum is raised)."""
    lease = run_client(ctx, addr, lambda c: c.lease_grant(ttl, lease_id))
    print(f"{lease.id}\t{_secs(lease.ttl)}")


@lease_app.command("keepalive")
def keepalive_cmd(
    ctx: typer.Context,
    lease_id: int = typer.Argument(..., min=1, help="The lease."),
    once: bool = typer.Option(False, "--once", help="Renew once and exit."),
    addr: str | None = AddrOpt,
) -> None:
    """Keep the lease alive, renewing every TTL/3 and printing ID<TAB>TTL each time, until
    interrupted (or once with --once). Exit 7 once the lease is gone."""

    async def go(c: Client) -> None:
        while True:
            ttl = await c.lease_keepalive(lease_id)
            print(f"{lease_id}\t{_secs(ttl)}", flush=True)
            if once:
                return
            await trio.sleep(ttl / 3)

    run_client(ctx, addr, go)


@lease_app.command("revoke")
def revoke_cmd(
    ctx: typer.Context,
    lease_id: int = typer.Argument(..., min=1, help="The lease."),
    addr: str | None = AddrOpt,
) -> None:
    """Revoke the lease, deleting its keys in one revision. Exit 7 if there is no such lease."""
    if not run_client(ctx, addr, lambda c: c.lease_revoke(lease_id)):
        fail(Exit.LEASE_NOT_FOUND, f"lease not found: {lease_id}")
    print("OK")


@lease_app.command("ttl")
def ttl_cmd(
    ctx: typer.Context,
    lease_id: int = typer.Argument(..., min=1, help="The lease."),
    keys: bool = typer.Option(False, "--keys", help="Also list the attached keys."),
    addr: str | None = AddrOpt,
) -> None:
    """Print ID<TAB>TTL<TAB>REMAINING<TAB>KEYS (remaining on the answering node's clock), then
    with --keys one attached key per line. Exit 7 if there is no such lease."""
    info = run_client(ctx, addr, lambda c: c.lease_time_to_live(lease_id, keys=keys))
    if info is None:
        fail(Exit.LEASE_NOT_FOUND, f"lease not found: {lease_id}")
    print(f"{info.id}\t{_secs(info.ttl)}\t{_secs(info.remaining)}\t{info.keys}")
    for k in info.key_names or ():
        print(k.decode("utf-8", errors="backslashreplace"))


@lease_app.command("list")
def list_cmd(ctx: typer.Context, addr: str | None = AddrOpt) -> None:
    """Print every lease: ID<TAB>TTL<TAB>REMAINING<TAB>KEYS, by id."""
    for info in run_client(ctx, addr, lambda c: c.lease_list()):
        print(f"{info.id}\t{_secs(info.ttl)}\t{_secs(info.remaining)}\t{info.keys}")
