"""SyncClient.watch against a real one-node cluster running in another thread: the same
events as Client.watch (prev values, deletes, progress), the same errors (Compacted, a bad
argument), and leaving the loop ends the watch on the node (no poll left running)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import GeneratorType

import pytest
import trio

import rkv
from rkv.client import WatchEvent
from rkv.errors import Compacted
from rkv.node import Node
from rkv.testing import local_configs, threaded_cluster


@dataclass(slots=True)
class Cluster:
    node: Node
    addr: str


@pytest.fixture
def one_node(tmp_path: Path) -> Iterator[Cluster]:
    cfg = local_configs(tmp_path, 1, watch_history_bytes=4000)[0]
    with threaded_cluster([cfg]) as nodes:
        yield Cluster(nodes[0], cfg.advertise)


def take(events: Iterator[WatchEvent], n: int) -> list[WatchEvent]:
    out = []
    for ev in events:
        out.append(ev)
        if len(out) == n:
            break
    return out


def test_sync_watch_yields_what_client_watch_yields(one_node: Cluster) -> None:
    with rkv.connect_sync(one_node.addr, timeout=10) as c:
        c.put("w/a", "1")
        c.put("w/a", "2")
        c.put("x/other", "no")
        assert c.delete("w/a") is True
        _, rev = c.get_revision("w/a")
        assert rev is not None
        got = take(c.watch("w/", start_revision=1, prev_value=True), 3)

        async def via_async() -> list[WatchEvent]:
            async with rkv.connect(one_node.addr, timeout=10) as ac:
                out = []
                async for ev in ac.watch("w/", start_revision=1, prev_value=True):
                    out.append(ev)
                    if len(out) == 3:
                        break
                return out

        assert got == trio.run(via_async)
        assert [(e.type, e.key, e.value, e.prev) for e in got] == [
            ("put", b"w/a", b"1", None),
            ("put", b"w/a", b"2", b"1"),
            ("delete", b"w/a", None, b"2"),
        ]
        assert [e.rev for e in got] == sorted(e.rev for e in got) and got[-1].rev <= rev


def test_sync_watch_sees_later_writes_and_progress(one_node: Cluster) -> None:
    with rkv.connect_sync(one_node.addr, timeout=10) as c:
        c.put("p/0", "a")
        _, rev = c.get_revision("p/0")
        assert rev is not None
        events = c.watch("p/", start_revision=rev + 1, progress=True, wait=0.2)
        assert isinstance(events, GeneratorType)
        first = next(events)  # nothing written since: a progress event
        assert first.type == "progress" and first.key == b"" and first.rev >= rev
        c.put("p/1", "b")
        ev = next(e for e in events if e.type != "progress")
        assert (ev.type, ev.key, ev.value) == ("put", b"p/1", b"b")
        events.close()


def test_leaving_the_loop_stops_polling(one_node: Cluster) -> None:
    hub = one_node.node.watch
    with rkv.connect_sync(one_node.addr, timeout=10) as c:
        events = c.watch("idle/", wait=0.3)
        assert isinstance(events, GeneratorType)
        c.put("idle/k", "v")
        assert next(events).key == b"idle/k"
        events.close()
        with pytest.raises(StopIteration):
            next(events)
        # the poll in flight (if any) ends at its wait; no poll follows it
        deadline = time.monotonic() + 10
        while hub.watching and time.monotonic() < deadline:
            time.sleep(0.05)
        assert hub.watching == 0
        polls = hub.polls
        time.sleep(1.0)  # three waits: a watch still running would have polled again
        assert (hub.polls, hub.watching) == (polls, 0)
        assert c.get("idle/k") == b"v"  # the client goes on


def test_sync_watch_raises_compacted_and_bad_arguments(one_node: Cluster) -> None:
    with rkv.connect_sync(one_node.addr, timeout=10) as c:
        for i in range(60):  # ~100+ bytes each past a 4,000-byte window
            c.put(f"c/{i}", "v" * 20)
        assert c.get("c/59") == b"v" * 20
        # the hub is fed after the turn that answered the get: wait until it dropped rev 1
        hub = one_node.node.watch
        deadline = time.monotonic() + 10
        while hub.first <= 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        with pytest.raises(Compacted) as exc:
            next(iter(c.watch("c/", start_revision=1)))
        assert exc.value.first_revision > 1
        with pytest.raises(ValueError, match="start_revision"):
            next(iter(c.watch("c/", start_revision=0)))
        with pytest.raises(ValueError, match="wait"):
            next(iter(c.watch("c/", wait=61)))


def test_a_watch_of_a_closed_client_says_so(one_node: Cluster) -> None:
    with rkv.connect_sync(one_node.addr, timeout=10) as c:
        events = c.watch("z/")
    with pytest.raises(RuntimeError, match="closed"):
        next(events)
