"""`python -m rkv.nemesis --duration S --nodes 3|5`: see rkv.nemesis.command.main."""

from __future__ import annotations

import sys

from rkv.nemesis.command import main

if __name__ == "__main__":
    sys.exit(main())
