"""Disk faults: a failed fsync/commit stops the node (fail-stop), a corrupted log entry is
detected by its checksum and never served, a full disk turns writes into clean refusals and
loses nothing acknowledged. See docs/faults.md."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from fuzz.harness import SyncConn, configs, free_ports, running, wait_leader

from rkv.codec import Put, decode_request
from rkv.config import NodeConfig
from rkv.errors import ExitCode
from rkv.nemesis.cluster import rpc_call
from rkv.node import Node, NodeStartError, run_node
from rkv.store import open_store
from rkv.store.env import LmdbStore
from rkv.store.errors import StoreError

CID = b"fault-client-001"


def norev(reply: dict[str, object]) -> dict[str, object]:
    """The reply without its revision (get, put and delete answer with `rev`, an int >= 1)."""
    rest = dict(reply)
    rev = rest.pop("rev", None)
    assert rev is None or (type(rev) is int and rev >= 1), reply
    return rest


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
        try:
            node = await nursery.start(node_task)
        except RuntimeError:  # stopped before it was serving
            if stopped:
                return stopped[0]
            raise
        await body(node)
        if not stopped:
            nursery.cancel_scope.cancel()
    return stopped[0] if stopped else None


# -- (a) a failed fsync / commit ----------------------------------------------------------------


# The log write (alone, or with applies: group commit) and the apply alone. The write after
# the fault is a cas: its answer needs the apply (a put is answered once committed).
@pytest.mark.parametrize(
    "where", [("save", "save_and_apply"), ("apply",)], ids=["log write", "apply"]
)
async def test_failed_commit_stops_the_node_and_acknowledges_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: tuple[str, ...]
) -> None:
    (cfg,) = configs(tmp_path, 1)
    answers: list[dict[str, Any] | None] = []

    async def body(node: Node) -> None:
        await wait_leader([node])
        assert norev(await call(node.port, put(b"before", b"1", 1))) == {"t": "ok", "id": 1}
        assert norev(await call(node.port, get(b"before"))) == {"t": "ok", "id": 1, "val": b"1"}

        def broken(self: LmdbStore, *a: Any, **kw: Any) -> Any:
            raise StoreError(f"write to {self.path} failed: mdb_txn_commit: Input/output error")

        for method in where:
            monkeypatch.setattr(LmdbStore, method, broken)
        cas = {"v": 1, "t": "cas", "id": 1, "c": CID, "s": 2, "k": b"before"}
        with trio.fail_after(10):
            answers.append(await call(node.port, {**cas, "exp": b"1", "val": b"2"}))
            # the node is gone: its run_node returned (nothing else would end this)
            await trio.sleep_forever()

    err = await run_until_stopped(cfg, body)
    monkeypatch.undo()
    assert err is not None, "the node kept running after a failed commit"
    assert err.code == ExitCode.STORE_ERROR
    assert "\n" not in err.msg and "failed" in err.msg
    # the write was not acknowledged: the connection closed without an answer
    assert answers == [None] or (answers[0] is not None and answers[0].get("t") == "error")
    # The store reopens and holds the acknowledged write. The unacknowledged cas never
    # committed when the log write failed; when the apply failed it was committed (durable
    # in the log) and the restart applies it, once.
    expect = b"2" if where == ("apply",) else b"1"
    async with running([cfg]) as (node,):
        await wait_leader([node])
        assert norev(await call(node.port, get(b"before"))) == {"t": "ok", "id": 1, "val": expect}
    with open_store(
        cfg.data_dir, cluster_id=cfg.cluster_id, node_id=cfg.id, voters=cfg.voters
    ) as store:
        rec = store.get_record(b"before")
        assert rec is not None and rec.version == (2 if where == ("apply",) else 1)


# -- (b) a corrupted log entry -------------------------------------------------------------------


def flip_entry_on_disk(data_dir: Path, cfg: NodeConfig, index: int) -> None:
    """Flip one payload byte of log entry `index` inside data.mdb (LMDB has no page checksums:
    only the entry's own crc can notice)."""
    from rkv.codec import encode_entry

    with open_store(
        data_dir, cluster_id=cfg.cluster_id, node_id=cfg.id, voters=cfg.voters
    ) as store:
        (entry,) = store.entries(index, index + 1)
    record = encode_entry(entry)
    mdb = data_dir / "data.mdb"
    raw = bytearray(mdb.read_bytes())
    # LMDB copies pages on write, so stale copies may sit in free pages: flip them all
    at = raw.find(record)
    assert at >= 0, "entry record not found"
    while at >= 0:
        raw[at + len(record) - 1] ^= 0xFF  # last byte of the entry's data
        at = raw.find(record, at + 1)
    mdb.write_bytes(bytes(raw))


@pytest.mark.parametrize("which", ["last", "middle"])
async def test_corrupted_log_entry_is_detected_and_never_served(tmp_path: Path, which: str) -> None:
    cfgs = configs(tmp_path, 3, fault_injection=True)
    async with running(cfgs) as nodes:
        leader = await wait_leader(nodes)
        # one follower misses the writes (cut off), so it must later get them from the leader
        lagging = next(n for n in nodes if n is not leader)
        peers = [n.cfg.id for n in nodes if n is not lagging]
        await rpc_call(
            lagging.cfg.advertise,
            {"t": "fault", "drop_to": peers, "drop_from": peers},
            timeout=5.0,
        )
        first = lagging.replica.raw.status().last_index
        for i in range(1, 21):
            answer = await call(leader.port, put(b"k%d" % i, b"v%d" % i, i))
            assert answer is not None and answer["t"] == "ok", answer
        last = leader.replica.raw.status().last_index
        assert lagging.replica.raw.status().last_index == first
        cfg = leader.cfg
    index = last if which == "last" else last - 10
    flip_entry_on_disk(cfg.data_dir, cfg, index)
    # Restart the damaged node with the lagging follower (the third stays down): only the
    # damaged node can lead, and it must send the follower the entries it missed. (A wiped
    # follower would not do: a replaced disk votes for nobody while a voter is down.)
    damaged = cfg
    behind = next(c for c in cfgs if c.id == lagging.cfg.id)
    outcome: list[NodeStartError | None] = []

    async def body() -> None:
        async with running([behind]) as (w,):
            with trio.fail_after(15):
                while not outcome:
                    await trio.sleep(0.05)
            # what the follower got never includes the damaged entry
            assert w.store.last_index() < index

    async def damaged_node() -> None:
        outcome.append(await run_until_stopped(damaged, lambda _: trio.sleep_forever()))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(damaged_node)
        await body()
    (err,) = outcome
    assert err is not None, "the node served on with a corrupt log entry"
    assert err.code == ExitCode.STORE_ERROR
    assert "checksum" in err.msg and "\n" not in err.msg, err.msg


# -- (c) a full disk -------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs (root only). A failing mount fails the test: it must not pass unseen."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs (root needed): {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


async def test_full_disk_stops_cleanly_loses_nothing_and_recovers(small_disk: Path) -> None:
    addr = f"127.0.0.1:{free_ports(1)[0]}"
    cfg = NodeConfig.create(addr, [addr], data_dir=small_disk / "node")
    acked: dict[bytes, bytes] = {}
    refusals: list[dict[str, Any] | None] = []

    async def body(node: Node) -> None:
        await wait_leader([node])

        def writer() -> None:
            with SyncConn(node.port) as c:
                for seq in range(1, 1000):
                    k, v = b"fill/%04d" % seq, bytes([seq % 251]) * (64 << 10)
                    answer = c.call(put(k, v, seq, rid=seq))
                    if answer is None or norev(answer) != {"t": "ok", "id": seq}:
                        refusals.append(answer)
                        return
                    acked[k] = v

        await trio.to_thread.run_sync(writer)
        with trio.fail_after(10):
            await trio.sleep_forever()  # the node stops by itself (fail-stop)

    err = await run_until_stopped(cfg, body)
    assert len(acked) > 10, "the disk filled up before anything was written"
    assert refusals, "8 MiB never filled up"
    assert err is not None and err.code == ExitCode.STORE_FULL, err
    assert "\n" not in err.msg and "full" in err.msg
    # the refused write got no acknowledgement: no answer or an error frame
    assert refusals[0] is None or refusals[0]["t"] == "error"

    # Nothing on disk is corrupted: the store opens and holds every acknowledged write, in
    # its state or (answered once committed, not yet applied) in the log after it.
    with open_store(
        cfg.data_dir, cluster_id=cfg.cluster_id, node_id=cfg.id, voters=cfg.voters
    ) as s:
        in_log: dict[bytes, bytes] = {}
        for e in s.entries(s.applied_index() + 1, s.last_index() + 1):
            cmd = decode_request(e.data).command if e.data else None
            if isinstance(cmd, Put):
                in_log[cmd.key] = cmd.value
        assert all(in_log.get(k, s.get(k)) == v for k, v in acked.items())
        assert s.last_index() >= len(acked)

    # space returns: the restarted node serves again and still has everything
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    async with running([cfg]) as (node,):
        await wait_leader([node])
        assert norev(await call(node.port, put(b"after", b"space", 5000, rid=7))) == {
            "t": "ok",
            "id": 7,
        }
        for k, v in [*acked.items(), (b"after", b"space")]:
            assert norev(await call(node.port, get(k))) == {"t": "ok", "id": 1, "val": v}
