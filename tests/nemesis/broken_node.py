"""`python broken_node.py serve ...`: an rkv node with a planted bug, for the nemesis's
end-to-end teeth test. Its "linearizable" reads skip ReadIndex and answer from local state,
so a partitioned-away or just-woken node serves stale values."""

from __future__ import annotations

from rkv.node import handlers


async def _no_read_index(self: handlers.ClientHandlers) -> None:
    return None


handlers.ClientHandlers._linearizable = _no_read_index  # type: ignore[method-assign]

if __name__ == "__main__":
    from rkv.cli import main

    main()
