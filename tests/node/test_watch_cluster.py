"""Watches on an in-process 3-node cluster (rkv.node.watch through the native protocol and
Client.watch): a watch through a follower sees every write of concurrent writers exactly once,
in revision order, each at the revision the leader's store records; and a watch goes on
through another node when the node it watched through is stopped, from the revision after
the last it answered for: nothing missed, nothing repeated."""

from __future__ import annotations

import io
from functools import partial
from pathlib import Path

import pytest
import trio

import rkv
from rkv.client import WatchEvent
from rkv.errors import Compacted
from rkv.nemesis.cluster import rpc_call
from rkv.net.rpc import RemoteError
from rkv.testing import RestartableNode, local_configs, running_cluster, wait_leader

WRITERS = 6
WRITES = 40


async def collect(
    c: rkv.Client, out: list[WatchEvent], want: int, prefix: bytes = b"w", **kw: object
) -> None:
    async for ev in c.watch(prefix, start_revision=1, **kw):  # type: ignore[arg-type]
        out.append(ev)
        if len(out) >= want:
            return


def check_exactly_once_in_order(events: list[WatchEvent]) -> None:
    revs = [e.rev for e in events]
    assert revs == sorted(revs), "events out of revision order"
    seen = [(e.rev, e.key) for e in events]
    assert len(seen) == len(set(seen)), "an event was delivered twice"
    for w in range(WRITERS):
        mine = [int(e.value or b"-1") for e in events if e.key.startswith(b"w%d/" % w)]
        assert mine == list(range(WRITES)), f"writer {w}: {mine}"


async def test_a_watch_on_a_follower_sees_every_write_once_in_order(tmp_path: Path) -> None:
    async with running_cluster(local_configs(tmp_path, 3)) as nodes:
        leader = await wait_leader(nodes)
        follower = next(n for n in nodes if n is not leader)
        events: list[WatchEvent] = []
        addrs = [n.cfg.advertise for n in nodes]

        async def writer(c: rkv.Client, w: int) -> None:
            for j in range(WRITES):
                await c.put(b"w%d/%03d" % (w, j), str(j).encode())

        with trio.fail_after(60):
            async with (
                rkv.connect([follower.cfg.advertise], timeout=20) as wc,
                rkv.connect(addrs, timeout=20) as c,
                trio.open_nursery() as n,
            ):
                n.start_soon(collect, wc, events, WRITERS * WRITES)
                await c.put(b"other", b"not watched")
                for w in range(WRITERS):
                    n.start_soon(writer, c, w)
        check_exactly_once_in_order(events)
        assert all(e.type == "put" and not e.prev_known for e in events)
        for e in events:  # each at the revision the leader recorded for it
            rec = leader.store.get_record(e.key)
            assert rec is not None and rec.mod_index == e.rev
        assert follower.statistics()["watch"]["watch_polls"] >= 1


async def test_prev_values_deletes_and_files_through_the_watch(tmp_path: Path) -> None:
    async with running_cluster(local_configs(tmp_path, 3)) as nodes:
        await wait_leader(nodes)
        events: list[WatchEvent] = []
        with trio.fail_after(30):
            async with (
                rkv.connect([n.cfg.advertise for n in nodes], timeout=20) as c,
                trio.open_nursery() as n,
            ):
                n.start_soon(partial(collect, c, events, 7, b"k", prev_value=True))
                await c.put("k", "1")
                await c.put("k", "2")
                await c.cas("k", "2", "3")
                assert not await c.cas("k", "2", "4")  # failed: no event
                await c.delete("k")
                assert not await c.delete("k")  # nothing to delete: no event
                await c.upload("kfile", io.BytesIO(b"x" * 3000), chunk_size=1024)
                await c.upload("kfile", io.BytesIO(b"y" * 10), chunk_size=1024)  # replaced
                assert await c.delete_file("kfile")
        assert [(e.type, e.key, e.value, e.prev) for e in events] == [
            ("put", b"k", b"1", None),
            ("put", b"k", b"2", b"1"),
            ("put", b"k", b"3", b"2"),
            ("delete", b"k", None, b"3"),
            ("file_commit", b"kfile", None, None),
            ("file_commit", b"kfile", None, None),
            ("file_delete", b"kfile", None, None),
        ]
        assert [e.prev_known for e in events] == [True] * 4 + [False] * 3  # files: no prev


async def test_a_watch_resumes_through_another_node_when_its_node_stops(tmp_path: Path) -> None:
    cfgs = local_configs(tmp_path, 3)
    handles = [RestartableNode(cfg) for cfg in cfgs]
    async with trio.open_nursery() as nursery:
        nodes = [await h.start(nursery) for h in handles]
        leader = await wait_leader(nodes)
        watched = next(n for n in nodes if n is not leader)
        other = next(n for n in nodes if n is not leader and n is not watched)
        events: list[WatchEvent] = []
        half = WRITERS * WRITES // 2
        with trio.fail_after(90):
            # the watch goes through `watched` first (the client's first address)
            async with (
                rkv.connect([watched.cfg.advertise, other.cfg.advertise], timeout=30) as wc,
                rkv.connect([leader.cfg.advertise], timeout=30) as c,
                trio.open_nursery() as n,
            ):
                n.start_soon(collect, wc, events, WRITERS * WRITES)
                for w in range(WRITERS // 2):
                    for j in range(WRITES):
                        await c.put(b"w%d/%03d" % (w, j), str(j).encode())
                while len(events) < half:
                    await trio.sleep(0.01)
                assert watched.statistics()["watch"]["watch_polls"] >= 1
                await handles[nodes.index(watched)].stop()
                for w in range(WRITERS // 2, WRITERS):
                    for j in range(WRITES):
                        await c.put(b"w%d/%03d" % (w, j), str(j).encode())
        check_exactly_once_in_order(events)
        assert other.statistics()["watch"]["watch_polls"] >= 1
        nursery.cancel_scope.cancel()


async def test_a_watch_from_before_the_window_is_compacted(tmp_path: Path) -> None:
    async with running_cluster(local_configs(tmp_path, 3, watch_history=20)) as nodes:
        await wait_leader(nodes)
        with trio.fail_after(30):
            # one node: another node's window may start elsewhere
            async with rkv.connect([nodes[0].cfg.advertise], timeout=20) as c:
                for i in range(200):
                    await c.put(b"k%d" % i, b"v")
                # a linearizable read through nodes[0] waits until it applied every write: its
                # window no longer moves (a follower may still be applying the last ones)
                assert await c.get(b"k199") == b"v"
                try:
                    async for _ in c.watch(b"k", start_revision=1):
                        raise AssertionError("a watch from revision 1 must not start")
                except Compacted as e:
                    assert e.first_revision > 1
                    first = e.first_revision
                got = []
                async for ev in c.watch(b"k", start_revision=first):
                    got.append(ev)
                    if ev.key == b"k199":
                        break
                assert got[0].rev >= first


async def test_a_watch_on_a_cut_off_node_is_told_no_leader_and_goes_on_elsewhere(
    tmp_path: Path,
) -> None:
    """A follower loses its Raft links (clients still reach it): a poll waiting on it is
    answered no_leader within about an election timeout of the node losing its leader (not
    left hanging), and a client watch through it goes on through another node, missing
    none of the writes made meanwhile."""
    cfgs = local_configs(tmp_path, 3, fault_injection=True)
    async with running_cluster(cfgs) as nodes:
        leader = await wait_leader(nodes)
        cut, other = (n for n in nodes if n is not leader)
        election = cut.cfg.election_ticks * cut.cfg.tick_seconds
        events: list[WatchEvent] = []
        with trio.fail_after(60):
            async with (
                rkv.connect([cut.cfg.advertise, other.cfg.advertise], timeout=30) as wc,
                rkv.connect([leader.cfg.advertise], timeout=30) as c,
                trio.open_nursery() as n,
            ):
                n.start_soon(collect, wc, events, 2 * WRITES)
                for j in range(WRITES):
                    await c.put(b"w0/%03d" % j, str(j).encode())
                while len(events) < WRITES:
                    await trio.sleep(0.01)
                assert cut.statistics()["watch"]["watch_polls"] >= 1
                peers = [m.cfg.id for m in nodes if m is not cut]
                frame = {"t": "fault", "drop_to": peers, "drop_from": peers}
                await rpc_call(cut.cfg.advertise, frame, timeout=5.0)
                t0 = trio.current_time()
                poll = {"t": "watch", "p": b"w", "wait_ms": 60_000}
                with pytest.raises(RemoteError) as told:
                    await rpc_call(cut.cfg.advertise, poll, timeout=30.0)
                took = trio.current_time() - t0
                assert told.value.code == "no_leader", told.value
                # the follower notices after 1-2 election timeouts (randomized), then one
                # more without a leader, checked every half election timeout
                assert took <= 3.5 * election + 0.5, took
                for j in range(WRITES):
                    await c.put(b"w1/%03d" % j, str(j).encode())
        keys = [e.key for e in events]
        assert keys == [b"w0/%03d" % j for j in range(WRITES)] + [
            b"w1/%03d" % j for j in range(WRITES)
        ]
        assert other.statistics()["watch"]["watch_polls"] >= 1
