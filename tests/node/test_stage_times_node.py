"""Stage timing on a running node (rkv.stagetimes): a put's window from its frame read to its
answer written, with the raft loop's stages inside."""

from __future__ import annotations

from pathlib import Path

import pytest

from rkv import stagetimes
from rkv.config import NodeConfig
from rkv.net.rpc import RpcClient
from rkv.stagetimes import StageClock
from rkv.testing import free_ports, wait_leader
from rkv.testing import running_cluster as cluster

PUTS = 5


async def _puts(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    cfg = NodeConfig.create(f"127.0.0.1:{port}", data_dir=tmp_path / "solo")
    async with cluster([cfg]) as nodes:
        await wait_leader(nodes)
        async with RpcClient("127.0.0.1", port) as c:
            for i in range(PUTS):
                put = {"t": "put", "c": b"c" * 16, "s": i + 1, "k": b"k", "val": b"v"}
                assert (await c.call(put))["t"] == "ok"


async def test_a_put_window_spans_the_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = StageClock(node="solo")
    monkeypatch.setattr(stagetimes, "clock", clock)
    await _puts(tmp_path)
    st = clock.summary()
    assert st["stages"]["put: total"]["n"] == PUTS
    marks = {k.split(" > ")[-1] for k in st["stages"] if k.startswith("put: ")}
    for m in ("decoded", "queued", "turn_start", "gathered", "stepped", "ready_built"):
        assert m in marks
    assert {"fsynced", "answer_written"} <= marks
    c = st["counts"]
    assert c["put/windows"] == PUTS
    assert c["put/fsyncs"] >= PUTS  # each put's entry is made durable inside its window
    assert c["put/turns"] >= PUTS
