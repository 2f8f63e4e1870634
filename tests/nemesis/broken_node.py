"""`python broken_node.py serve ...`: an rkv node with a planted bug, for the nemesis's
end-to-end teeth test. Its "linearizable" reads skip ReadIndex and answer from local state,
so a partitioned-away or just-woken node serves stale values."""

from __future__ import annotations

from rkv import node


async def _no_read_index(self: node.Node) -> None:
    return None


node.Node._linearizable = _no_read_index  # type: ignore[method-assign]

if __name__ == "__main__":
    from rkv.cli import main

    main()
