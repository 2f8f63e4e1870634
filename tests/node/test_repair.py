"""`rkv repair NODE` (rkv.repair): a node whose stored state is damaged rebuilds it from the
cluster, without guessing.

A follower's record is damaged on disk while it is stopped; started again, it refuses the
read (integrity) and is degraded. Asked to repair, it stops (exit 18), its data dir goes
aside untouched, and a new store takes its place; started again with the same config it
recovers from the leader (it votes for nobody until then), serves the right bytes and is
no longer degraded. The leader refuses a repair (it would rebuild from itself).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

import rkv
from rkv import repair as repair_mod
from rkv.errors import BadRequest, ExitCode
from rkv.nemesis.cluster import rpc_call
from rkv.net.rpc import RemoteError
from rkv.node import NodeStartError, run_node
from rkv.testing import local_configs, wait_leader

from .test_integrity_node import flip

pytestmark = pytest.mark.e2e


class Nodes:
    """Nodes started one by one in `nursery`, each stoppable (its own cancel scope); a node
    that stops with NodeStartError (a repair, a failed one) leaves it in `exits`."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.exits: dict[str, NodeStartError] = {}
        self.scopes: dict[str, trio.CancelScope] = {}
        self.ended: dict[str, trio.Event] = {}

    async def start(self, cfg: Any) -> Any:
        scope = self.scopes[cfg.id] = trio.CancelScope()
        done = self.ended[cfg.id] = trio.Event()

        async def run(task_status: trio.TaskStatus[Any]) -> None:
            try:
                with scope:
                    await run_node(cfg, task_status=task_status)
            except NodeStartError as e:
                self.exits[cfg.id] = e
            finally:
                done.set()  # the store is closed

        return await self.nursery.start(run)

    async def stop(self, cfg: Any) -> None:
        self.scopes[cfg.id].cancel()
        await self.ended[cfg.id].wait()


async def get(addr: str, key: bytes) -> dict[str, Any]:
    return await rpc_call(addr, {"t": "get", "k": key}, timeout=10.0)


async def test_a_damaged_follower_is_rebuilt_from_the_cluster(tmp_path: Path) -> None:
    cfgs = local_configs(tmp_path, 3, scrub_records_per_second=0.0)
    async with trio.open_nursery() as nursery:
        h = Nodes(nursery)
        exits, ended, start = h.exits, h.ended, h.start
        nodes = [await start(c) for c in cfgs]
        leader = await wait_leader(nodes)
        f = next(n for n in nodes if n is not leader)
        fcfg = f.cfg
        async with rkv.connect([leader.cfg.advertise], timeout=20) as c:
            await c.put("victim", b"the right bytes")
            await c.put("other", b"fine")
        with trio.fail_after(10):
            while f.store.get(b"victim") != b"the right bytes":
                await trio.sleep(0.05)
        await h.stop(fcfg)
        flip(fcfg.data_dir, b"kv", b"victim", b"right")
        f = await start(fcfg)
        with pytest.raises(RemoteError) as info:
            await rpc_call(fcfg.advertise, {"t": "get", "k": b"victim", "stale": True}, 10.0)
        assert info.value.code == "integrity"
        assert f.status()["degraded"]

        # the leader refuses (it would have to rebuild from itself)
        async with rkv.connect([leader.cfg.advertise], timeout=10) as c:
            with pytest.raises(BadRequest, match="leads"):
                await c.repair(leader.cfg.advertise)
            answer = await c.repair(fcfg.advertise)
        aside = Path(answer["moved_to"])
        assert answer["node"] == fcfg.id and aside.name.startswith(fcfg.data_dir.name + ".damaged-")
        with trio.fail_after(10):
            await ended[fcfg.id].wait()
        assert exits[fcfg.id].code == ExitCode.REPAIR
        assert str(aside) in exits[fcfg.id].msg
        assert (aside / "data.mdb").exists(), "the damaged data is kept, untouched"
        assert (fcfg.data_dir / "data.mdb").exists(), "a new store is ready"

        del exits[fcfg.id]
        f = await start(fcfg)  # the same config: it recovers from the leader
        with trio.fail_after(20):
            while True:
                st = f.status()
                if not st["recovering"] and f.store.applied_index() >= 3:
                    break
                await trio.sleep(0.05)
        reply = await get(fcfg.advertise, b"victim")
        assert reply["val"] == b"the right bytes"
        assert (await get(fcfg.advertise, b"other"))["val"] == b"fine"
        assert f.status()["degraded"] is None
        nursery.cancel_scope.cancel()


async def test_with_auto_repair_a_damaged_follower_repairs_itself(tmp_path: Path) -> None:
    cfgs = local_configs(tmp_path, 3, scrub_records_per_second=0.0, auto_repair=True)
    async with trio.open_nursery() as nursery:
        h = Nodes(nursery)
        exits, ended, start = h.exits, h.ended, h.start
        nodes = [await start(c) for c in cfgs]
        leader = await wait_leader(nodes)
        fcfg = next(n for n in nodes if n is not leader).cfg
        async with rkv.connect([leader.cfg.advertise], timeout=20) as c:
            await c.put("victim", b"the right bytes")
        f = next(n for n in nodes if n.cfg is fcfg)
        with trio.fail_after(10):
            while f.store.get(b"victim") != b"the right bytes":
                await trio.sleep(0.05)
        await h.stop(fcfg)
        flip(fcfg.data_dir, b"kv", b"victim", b"right")
        await start(fcfg)
        with pytest.raises(RemoteError) as info:  # the read that finds the damage
            await rpc_call(fcfg.advertise, {"t": "get", "k": b"victim", "stale": True}, 10.0)
        assert info.value.code == "integrity"
        with trio.fail_after(10):
            await ended[fcfg.id].wait()
        assert exits[fcfg.id].code == ExitCode.REPAIR  # stopped by itself, data moved aside
        del exits[fcfg.id]
        f = await start(fcfg)  # what its supervisor does
        with trio.fail_after(20):
            while f.status()["recovering"] or f.store.applied_index() < 2:
                await trio.sleep(0.05)
        assert (await get(fcfg.advertise, b"victim"))["val"] == b"the right bytes"
        nursery.cancel_scope.cancel()


async def test_a_crash_during_repair_leaves_a_node_that_still_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process dies between moving the data dir aside and creating the new store: the
    node finds no data dir at its next start, creates one as a bootstrap member (recovering)
    and rebuilds from the cluster all the same; the damaged data is still aside."""
    cfgs = local_configs(tmp_path, 3, scrub_records_per_second=0.0)
    async with trio.open_nursery() as nursery:
        h = Nodes(nursery)
        exits, ended, start = h.exits, h.ended, h.start
        nodes = [await start(c) for c in cfgs]
        leader = await wait_leader(nodes)
        fcfg = next(n for n in nodes if n is not leader).cfg
        async with rkv.connect([leader.cfg.advertise], timeout=20) as c:
            await c.put("kept", b"by the cluster")

        def crash(*a: object, **kw: object) -> None:
            raise OSError("the process died here")

        monkeypatch.setattr(repair_mod, "open_store", crash)
        answer = await rpc_call(fcfg.advertise, {"t": "repair"}, timeout=10.0)
        with trio.fail_after(10):
            await ended[fcfg.id].wait()
        monkeypatch.undo()
        assert exits.pop(fcfg.id).code == ExitCode.STORE_ERROR
        assert not fcfg.data_dir.exists() and Path(answer["moved_to"]).exists()
        f = await start(fcfg)
        with trio.fail_after(20):
            while f.status()["recovering"] or f.store.applied_index() < 2:
                await trio.sleep(0.05)
        assert (await get(fcfg.advertise, b"kept"))["val"] == b"by the cluster"
        nursery.cancel_scope.cancel()
