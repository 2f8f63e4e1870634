"""The watch hub's figures on /metrics (rkv.metrics over rkv.node.watch's statistics): the
page a scrape renders from a hub that served events, a Compacted and a NoLeader answer; and
on a running node over HTTP, a watch in flight counted active, its events counted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

import rkv
from rkv.errors import Compacted, NoLeader
from rkv.http import http_get
from rkv.metrics import NodeMetrics
from rkv.node.watch import WatchHub
from rkv.protocol import WatchRequest
from rkv.store.commands import Change
from rkv.testing import local_configs, running_cluster, wait_leader

Page = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(body: bytes) -> Page:
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(page: Page, name: str, **labels: str) -> float:
    return page[(name, tuple(sorted(labels.items())))]


async def no_barrier() -> None:
    pass


def render(hub: WatchHub) -> Page:
    stats: dict[str, Any] = {"watch": hub.statistics()}
    m = NodeMetrics(lambda: {}, lambda: stats, lambda: {})
    return samples(m.render())


async def test_a_scrape_shows_the_hub() -> None:
    hub = WatchHub(0, history=100, election_timeout=0.1)
    page = render(hub)
    assert value(page, "rkv_watch_first_revision") == 1
    assert value(page, "rkv_watch_window_changes") == 0
    for reason in ("compacted", "no_leader"):
        assert value(page, "rkv_watch_cancelled_total", reason=reason) == 0
    for rev in range(1, 301):
        hub.feed([Change(rev, "put", b"k", b"v" * 10, None)], rev, "n1", 0.0)
    reply = await hub.poll(
        WatchRequest(after=hub.first - 1), 1, barrier=no_barrier, applied=lambda: 300
    )
    with pytest.raises(Compacted):
        await hub.poll(WatchRequest(after=0), 1, barrier=no_barrier, applied=lambda: 300)
    hub.feed([], 300, "", trio.current_time())
    with pytest.raises(NoLeader):
        await hub.poll(WatchRequest(wait_ms=5000), 1, barrier=no_barrier, applied=lambda: 300)
    page = render(hub)
    held = 300 - hub.first + 1
    assert 100 <= held < 300
    assert value(page, "rkv_watch_first_revision") == hub.first
    assert value(page, "rkv_watch_window_changes") == held
    assert value(page, "rkv_watch_window_bytes") == held * (1 + 10 + 100)
    assert value(page, "rkv_watch_events_delivered_total") == len(reply.events) == held
    assert value(page, "rkv_watch_cancelled_total", reason="compacted") == 1
    assert value(page, "rkv_watch_cancelled_total", reason="no_leader") == 1
    assert value(page, "rkv_watch_polls_total") == 3
    assert value(page, "rkv_watch_active") == 0


async def test_a_node_counts_its_watches_on_metrics(tmp_path: Path) -> None:
    cfg = local_configs(tmp_path, 1, http_port=0)[0]
    async with running_cluster([cfg]) as nodes:
        await wait_leader(nodes)
        port = nodes[0].http_port or 0

        async def scrape() -> Page:
            status, body = await http_get("127.0.0.1", port, "/metrics")
            assert status == 200
            return samples(body)

        before = await scrape()
        assert value(before, "rkv_watch_active") == 0
        with trio.fail_after(30):
            async with rkv.connect(cfg.advertise, timeout=10) as c, trio.open_nursery() as n:
                got: list[rkv.WatchEvent] = []

                async def watcher() -> None:
                    async for ev in c.watch(b"m/", wait=30):
                        got.append(ev)

                n.start_soon(watcher)
                while value(await scrape(), "rkv_watch_active") != 1:
                    await trio.sleep(0.02)
                for i in range(5):
                    await c.put(b"m/%d" % i, b"v")
                while len(got) < 5:
                    await trio.sleep(0.01)
                n.cancel_scope.cancel()
            after = await scrape()
        delivered = value(after, "rkv_watch_events_delivered_total")
        assert delivered - value(before, "rkv_watch_events_delivered_total") == 5
        assert value(after, "rkv_watch_polls_total") > value(before, "rkv_watch_polls_total")
        assert value(after, "rkv_watch_window_changes") >= 5
        assert value(after, "rkv_watch_window_bytes") >= 5 * 100
