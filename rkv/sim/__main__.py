"""`python -m rkv.sim`: the simulator's command line without the rkv CLI: the very command
`rkv sim` runs (rkv.sim.cmdline), with the same options, defaults and output.

Owns: running that command alone and turning its outcome into a return code. Must not:
define options (rkv.sim.cmdline is their one definition; a replay command is always
`rkv sim ...`).
"""

from __future__ import annotations

import sys

from rkv.sim.cmdline import PROG, standalone


def main(argv: list[str] | None = None) -> int:
    """Run `python -m rkv.sim ARGV` (default: sys.argv[1:]); return its exit code (2 for a
    usage error, reported on stderr as `rkv sim` reports it)."""
    try:
        standalone().main(args=argv, prog_name=PROG, standalone_mode=True)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 0 if e.code is None else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
