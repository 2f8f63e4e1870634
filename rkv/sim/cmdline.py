"""The simulator's command line, defined once: the `sim` command's options, help and defaults.

`rkv sim` is this command mounted on the rkv CLI (rkv.cli.sim_cmds); `python -m rkv.sim` runs
it alone (rkv/sim/__main__.py, with `standalone()`). So both take the same options with the
same defaults, and a printed replay command (`rkv sim ...`) runs under either.

Owns: the typer signature and docstring of `sim_cmd`. Must not: run seeds (it hands its
options to rkv.sim.command.run_sim_command, imported when the command runs, so that every
`rkv` process can load this module cheaply) or import rkv.cli (the layer above).
"""

from __future__ import annotations

import typer
import typer.core
import typer.main

PROG = "python -m rkv.sim"


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
    txn_fraction: float = typer.Option(
        0.0,
        "--txn-fraction",
        min=0.0,
        max=0.65,
        help="Of the writes: two-key transactions (checked atomic and linearizable; 0: none).",
    ),
    lease_fraction: float = typer.Option(
        0.0,
        "--lease-fraction",
        min=0.0,
        max=0.9,
        help="Of the client operations: lease grants, keep-alives, revokes and puts attached "
        "to leases (checked: no lease expires before its promise; 0: none).",
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
            txn_fraction=txn_fraction,
            lease_fraction=lease_fraction,
            jobs=jobs,
            duration=duration,
            raw_node_factory=raw_node_factory,
        )
    )


def standalone() -> typer.core.TyperCommand:
    """`sim_cmd` as a command of its own (`python -m rkv.sim`), -h as well as --help."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command(context_settings={"help_option_names": ["-h", "--help"]})(sim_cmd)
    command = typer.main.get_command(app)
    assert isinstance(command, typer.core.TyperCommand)
    return command
