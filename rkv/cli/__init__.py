"""The `rkv` command line (typer): client commands, serve, cluster, admin, sim and nemesis.

One module per concern, each registering its commands on the one app (rkv.cli.app):

- app.py: the app, global options, the client runner, errors -> one stderr line and an exit
  code (`Exit`, `exit_code_for`), the progress bar
- client_cmds.py: set, get, delete, cas, scan, upload, download
- lease_cmds.py: lease grant|keepalive|revoke|ttl|list; recipe_cmds.py: lock, elect
- status.py: status (and --watch)
- admin.py: check, repair, leader transfer, member ..., backup, restore
- serve.py: serve and its --join flow; fastserve.py: serve's fast argument parser
- sim_cmds.py: sim (defined in rkv.sim.cmdline) and nemesis
- cluster.py: the `rkv cluster` supervisor's policy (over rkv.procs)

This package owns `main`, the console script (pyproject: rkv = "rkv.cli:main"), and the
order of the commands in `rkv --help` (the order the modules are imported below). Must not:
implement client or node behaviour (rkv.client, rkv.node do), or import the node runtime,
the simulator's runs or rich unless the command needs them (client commands stay light).
"""

from __future__ import annotations

import sys

import typer

# The command modules register their commands on `app` when imported, and `rkv --help` lists
# them in that order (typer keeps the order of registration): hence the order here.
# isort: off
from rkv.cli import client_cmds
from rkv.cli import lease_cmds
from rkv.cli import recipe_cmds
from rkv.cli import status
from rkv.cli import admin
from rkv.cli import serve
from rkv.cli import sim_cmds
from rkv.cli import cluster

# isort: on
from rkv.cli.app import Exit, app, exit_code_for
from rkv.cli.fastserve import fast_kwargs
from rkv.cli.serve import serve_cmd

COMMAND_MODULES = (client_cmds, lease_cmds, recipe_cmds, status, admin, serve, sim_cmds, cluster)
"""The modules that register commands, in the order of `rkv --help`."""


def main() -> None:
    """The `rkv` console script (pyproject: rkv = "rkv.cli:main").

    `rkv serve` with plain options skips typer's parsing (see `fast_kwargs`); everything
    else, and any serve command line it is not sure about, goes through typer.
    """
    args = sys.argv[1:]
    kwargs = fast_kwargs(serve_cmd, args[1:]) if args[:1] == ["serve"] else None
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
