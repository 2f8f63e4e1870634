"""When a node applies its backlog of committed entries (docs/runtime.md, "Deferred apply, in
batches"), seen from outside through stale reads, which answer from the local store.

A put is answered once committed; the store gets it later, in a batch: once writes stop
(`apply_delay_seconds` without new entries and nothing uncommitted) or once the oldest entry
waited `apply_max_delay_seconds` while writes go on. Each case sets the other delay far above
its bound, so only the path under test can make the write visible in time.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from rkv.net.rpc import RpcClient
from rkv.testing import free_ports, local_configs, running_cluster, wait_leader

from .test_node_cluster import put


async def stale_get(port: int, key: bytes) -> bytes | None:
    async with RpcClient("127.0.0.1", port) as c:
        got = await c.call({"t": "get", "k": key, "stale": True})
    value: bytes | None = got["val"]
    return value


@pytest.mark.parametrize(
    ("case", "apply_delay", "apply_max_delay", "writes_go_on"),
    [
        # idle path: nothing else is written, the 10 s cap is never reached within the bound
        ("writes stopped", 0.01, 10.0, False),
        # age path: a put every 50 ms keeps the backlog growing (the 1 s idle delay never
        # passes) far below a full batch (512 entries)
        ("steady writes", 1.0, 0.2, True),
    ],
)
async def test_a_committed_put_reaches_every_store_in_time(
    tmp_path: Path, case: str, apply_delay: float, apply_max_delay: float, writes_go_on: bool
) -> None:
    bound = 4.0  # the path under test takes ~0.2 s at most; the other one 10 s (or never)
    cfgs = local_configs(
        tmp_path,
        free_ports(3),
        apply_delay_seconds=apply_delay,
        apply_max_delay_seconds=apply_max_delay,
    )
    async with running_cluster(cfgs) as nodes:
        leader = await wait_leader(nodes)
        async with RpcClient("127.0.0.1", leader.port) as c, trio.open_nursery() as nursery:
            assert (await c.call(put(b"first", b"v", 1)))["t"] == "ok"
            written = [1]

            async def writer() -> None:
                seq = 2
                while True:
                    await c.call(put(b"k%d" % seq, b"x", seq))
                    written.append(seq)
                    seq += 1
                    await trio.sleep(0.05)

            if writes_go_on:
                nursery.start_soon(writer)
            with trio.fail_after(bound):
                for node in nodes:
                    while await stale_get(node.port, b"first") != b"v":
                        await trio.sleep(0.02)
            # the premise of the case: writes went on meanwhile (or none did)
            assert (len(written) > 1) == writes_go_on, case
            nursery.cancel_scope.cancel()
