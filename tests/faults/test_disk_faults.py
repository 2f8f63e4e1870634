"""Disk faults: a failed fsync/commit stops the node (fail-stop), a corrupted log entry is
detected by its checksum and never served, a full disk turns writes into clean refusals and
loses nothing acknowledged. See docs/faults.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from fuzz.harness import SyncConn, configs, running, wait_leader
from rkv.config import NodeConfig
from rkv.errors import ExitCode
from rkv.node import Node, NodeStartError, run_node
from rkv.store import open_store
from rkv.store.env import LmdbStore
from rkv.store.errors import StoreError

CID = b"fault-client-001"


def put(k: bytes, v: bytes, seq: int, rid: int = 1) -> dict[str, Any]:
    return {"v": 1, "t": "put", "id": rid, "c": CID, "s": seq, "k": k, "val": v}


def get(k: bytes, rid: int = 1) -> dict[str, Any]:
    return {"v": 1, "t": "get", "id": rid, "k": k}


async def call(port: int, frame: dict[str, Any]) -> dict[str, Any] | None:
    def run() -> dict[str, Any] | None:
        with SyncConn(port) as c:
            return c.call(frame)

    return await trio.to_thread.run_sync(run)


async def run_until_stopped(cfg: NodeConfig, body: Any) -> NodeStartError | None:
    """Run a node and `body(node)`; return the NodeStartError the node stopped with."""
    stopped: list[NodeStartError] = []

    async def node_task(task_status: trio.TaskStatus[Node]) -> None:
        try:
            await run_node(cfg, task_status=task_status)
        except NodeStartError as e:
            stopped.append(e)
            nursery.cancel_scope.cancel()  # ends `body`

    async with trio.open_nursery() as nursery:
        node = await nursery.start(node_task)
        await body(node)
        if not stopped:
            nursery.cancel_scope.cancel()
    return stopped[0] if stopped else None


# -- (a) a failed fsync / commit ----------------------------------------------------------------


@pytest.mark.parametrize("where", ["save", "apply"])
async def test_failed_commit_stops_the_node_and_acknowledges_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    (cfg,) = configs(tmp_path, 1)
    answers: list[dict[str, Any] | None] = []

    async def body(node: Node) -> None:
        await wait_leader([node])
        assert await call(node.port, put(b"before", b"1", 1)) == {"t": "ok", "id": 1}

        def broken(self: LmdbStore, *a: Any, **kw: Any) -> Any:
            raise StoreError(f"write to {self.path} failed: mdb_txn_commit: Input/output error")

        monkeypatch.setattr(LmdbStore, where, broken)
        with trio.fail_after(10):
            answers.append(await call(node.port, put(b"after", b"2", 2)))
            # the node is gone: its run_node returned (nothing else would end this)
            await trio.sleep_forever()

    err = await run_until_stopped(cfg, body)
    monkeypatch.undo()
    assert err is not None, "the node kept running after a failed commit"
    assert err.code == ExitCode.STORE_ERROR
    assert "\n" not in err.msg and "failed" in err.msg
    # the write was not acknowledged: the connection closed without an answer
    assert answers == [None] or (answers[0] is not None and answers[0].get("t") == "error")
    # the store reopens and holds the acknowledged write
    async with running([cfg]) as (node,):
        await wait_leader([node])
        assert await call(node.port, get(b"before")) == {"t": "ok", "id": 1, "val": b"1"}
