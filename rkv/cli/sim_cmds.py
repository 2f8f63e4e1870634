"""The test-harness commands: `rkv sim` (the deterministic simulator) and `rkv nemesis`
(faults on real processes).

Owns: `rkv sim`'s options (`python -m rkv.sim` has the same ones) and mounting `rkv nemesis`.
Must not: run seeds (rkv.sim.command.run_sim_command does), parse the nemesis' options (they
pass through to rkv.nemesis, whose parser lists them) or import the simulator or the nemesis
at module level (they load only when their command runs).
"""

from __future__ import annotations

import typer

from rkv.cli.app import app


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
