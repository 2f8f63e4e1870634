"""`python -m rkv`: the same command line as the `rkv` console script (rkv.cli)."""

from __future__ import annotations

from rkv.cli import main

if __name__ == "__main__":
    main()
