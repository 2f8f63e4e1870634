"""The operator's commands on a running cluster and its data: check, repair, leader
transfer, member list/add/promote/remove, backup and restore.

Owns: their arguments and output (tables, member lines, JSON), and `rkv restore`'s local
seeding of a data dir from a backup file (rkv.backup does the work). Must not: implement
membership, transfer, comparison or backup (the nodes do, through rkv.client), or import
rkv.backup (lmdb) or rich at module level: client commands stay light.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from rkv.cli.app import AddrOpt, Exit, app, fail, progress_bar, run_client, settings_of, user_errors
from rkv.client import Client
from rkv.config import DEFAULT_HOST, DEFAULT_PORT


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
    result = run_client(ctx, addr, lambda c: c.check())
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
    result = run_client(ctx, addr, lambda c: c.repair(node))
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
    new = run_client(ctx, addr, lambda c: c.transfer_leader(to))
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
    _print_members(run_client(ctx, addr, lambda c: c.members()), as_json)


def _long(ctx: typer.Context, timeout: float | None) -> float:
    return timeout if timeout is not None else max(settings_of(ctx).timeout, 60.0)


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
        run_client(ctx, addr, lambda c: c.add_member(node, learner=learner, timeout=t)), as_json
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
    _print_members(run_client(ctx, addr, lambda c: c.promote_member(node, timeout=t)), as_json)


@member_app.command("remove")
def member_remove_cmd(
    ctx: typer.Context,
    node: str = typer.Argument(..., help="The member's id (host:port); the leader is fine."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    addr: str | None = AddrOpt,
) -> None:
    """Remove a voter or learner. The removed node stops itself (exit code 14); a removed
    leader first hands leadership to the most caught-up voter."""
    _print_members(run_client(ctx, addr, lambda c: c.remove_member(node)), as_json)


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
        fail(Exit.USAGE, f"error: {path} is a directory; give a file path")
    if not path.resolve().parent.is_dir():
        fail(Exit.USAGE, f"error: no such directory: {path.parent}")

    async def go(c: Client) -> dict[str, Any]:
        with progress_bar("backup", None) as progress:
            return await c.backup(path, node=node, progress=progress)

    m = run_client(ctx, addr, go)
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
        fail(Exit.USAGE, f"error: no such file: {path}")
    with user_errors():
        if check:
            m = verify(path)
            print(f"backup {path} is intact: index {m['index']}, {m['keys']} keys")
            return
        if data_dir is None:
            fail(Exit.USAGE, "error: give --data-dir (a new, empty directory)")
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
