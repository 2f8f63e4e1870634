"""The test-harness commands: `rkv sim` (the deterministic simulator) and `rkv nemesis`
(faults on real processes).

Owns: mounting them on the rkv app. Must not: define their options (`rkv sim`'s are
rkv.sim.cmdline's, shared with `python -m rkv.sim`; `rkv nemesis` passes its arguments through
to rkv.nemesis, whose parser lists them) or load the simulator's runs or the nemesis before
their command runs (rkv.sim.cmdline is light: typer only).
"""

from __future__ import annotations

import typer

from rkv.cli.app import app
from rkv.sim.cmdline import sim_cmd

app.command("sim")(sim_cmd)


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
