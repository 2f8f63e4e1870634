"""What the recipe tests share: an in-process 3-node cluster with connected clients, and
reads of a queue's keys."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import trio

import rkv
from rkv.testing import local_configs, running_cluster, wait_leader


@asynccontextmanager
async def cluster(tmp_path: Path, clients: int = 1) -> AsyncIterator[list[rkv.Client]]:
    async with running_cluster(local_configs(tmp_path, 3)) as nodes:
        await wait_leader(nodes)
        addrs = [n.cfg.advertise for n in nodes]
        async with AsyncExitStack() as stack:
            yield [
                await stack.enter_async_context(rkv.connect(addrs, timeout=10))
                for _ in range(clients)
            ]


async def keys_of(db: rkv.Client, name: str) -> list[bytes]:
    return [k for k, _ in await db.scan(name + "/")]


async def wait_keys(db: rkv.Client, name: str, n: int) -> None:
    with trio.fail_after(10):
        while len(await keys_of(db, name)) != n:
            await trio.sleep(0.02)
