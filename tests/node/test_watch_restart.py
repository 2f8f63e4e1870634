"""A watch's history survives a restart of its node (rkv.store.history through the watch hub):
a client that saw revision R before the node stopped watches from R + 1 after it started
again and gets exactly the changes after R, at their revisions, with their previous values,
then the live ones; and a Client.watch running across the restart goes on from where it was."""

from __future__ import annotations

from pathlib import Path

import trio

import rkv
from rkv.client import WatchEvent
from rkv.testing import RestartableNode, local_configs, wait_leader


def shape(events: list[WatchEvent]) -> list[tuple[int, str, bytes, bytes | None, bytes | None]]:
    return [(e.rev, e.type, e.key, e.value, e.prev) for e in events]


async def take(c: rkv.Client, start: int, n: int) -> list[WatchEvent]:
    out: list[WatchEvent] = []
    async for ev in c.watch(b"k/", start_revision=start, prev_value=True):
        out.append(ev)
        if len(out) == n:
            break
    return out


async def test_a_watch_from_before_a_restart_gets_exactly_the_changes_after_it(
    tmp_path: Path,
) -> None:
    cfg = local_configs(tmp_path, 1)[0]
    handle = RestartableNode(cfg)
    async with trio.open_nursery() as nursery:
        node = await handle.start(nursery)
        await wait_leader([node])
        with trio.fail_after(60):
            async with rkv.connect([cfg.advertise], timeout=20) as c:
                await c.put("k/a", "1")
                await c.put("k/b", "1")
                assert await c.get("k/b") == b"1"  # a linearizable read: applied by now
                rec = node.store.get_record(b"k/b")
                assert rec is not None
                seen = rec.mod_index  # the revision the client saw
                await c.put("k/a", "2")
                assert await c.delete("k/b")
                await c.put("other", "not watched")
                await c.put("k/c", "3")
                before = await take(c, seen + 1, 3)
            await handle.stop()
            node = await handle.start(nursery)
            await wait_leader([node])
            async with rkv.connect([cfg.advertise], timeout=20) as c:
                after = await take(c, seen + 1, 3)
                assert node.statistics()["watch"]["watch_history_reads"] >= 1
                # and on into what is written after the restart
                await c.put("k/d", "4")
                more = await take(c, seen + 1, 4)
        assert shape(after) == shape(before)
        assert shape(after) == [
            (seen + 1, "put", b"k/a", b"2", b"1"),
            (seen + 2, "delete", b"k/b", None, b"1"),
            (seen + 4, "put", b"k/c", b"3", None),
        ]
        assert shape(more) == [*shape(after), (more[-1].rev, "put", b"k/d", b"4", None)]
        assert more[-1].rev > seen + 4
        nursery.cancel_scope.cancel()


async def test_a_client_watch_goes_on_across_a_restart_of_its_node(tmp_path: Path) -> None:
    """The watcher stops reading after 5 events (its cursor stays there), 5 more writes are
    made, the node restarts: the watch's next poll is from before what the restarted node
    holds in memory, and the durable history answers it."""
    cfg = local_configs(tmp_path, 1)[0]
    handle = RestartableNode(cfg)
    events: list[WatchEvent] = []
    release = trio.Event()
    async with trio.open_nursery() as nursery:
        node = await handle.start(nursery)
        await wait_leader([node])
        with trio.fail_after(30):
            async with rkv.connect([cfg.advertise], timeout=60) as c, trio.open_nursery() as n:

                async def watch() -> None:
                    async for ev in c.watch(b"k/", start_revision=1):
                        events.append(ev)
                        if len(events) == 5:
                            await release.wait()  # a slow reader: no poll meanwhile
                        if len(events) == 15:
                            break

                n.start_soon(watch)
                for i in range(5):
                    await c.put(b"k/%02d" % i, b"%d" % i)
                while len(events) < 5:
                    await trio.sleep(0.01)
                for i in range(5, 10):
                    await c.put(b"k/%02d" % i, b"%d" % i)
                assert await c.get(b"k/09") == b"9"  # applied
                await handle.stop()
                node = await handle.start(nursery)
                release.set()
                for i in range(10, 15):
                    await c.put(b"k/%02d" % i, b"%d" % i)
                while len(events) < 15:
                    await trio.sleep(0.01)
        assert [e.key for e in events] == [b"k/%02d" % i for i in range(15)]
        revs = [e.rev for e in events]
        assert revs == sorted(set(revs))
        assert node.statistics()["watch"]["watch_history_reads"] >= 1
        nursery.cancel_scope.cancel()
