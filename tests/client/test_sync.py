"""The blocking SyncClient (its own trio loop in a thread) against a fake cluster that runs
in another thread."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

import rkv

from .fake import FakeCluster


@pytest.fixture
def threaded_cluster() -> Iterator[FakeCluster]:
    cluster = FakeCluster(3)
    ready = threading.Event()
    token: list[trio.lowlevel.TrioToken] = []
    stop = trio.Event()

    async def main() -> None:
        async with trio.open_nursery() as n:
            await n.start(cluster.run)
            token.append(trio.lowlevel.current_trio_token())
            ready.set()
            await stop.wait()
            n.cancel_scope.cancel()

    t = threading.Thread(target=trio.run, args=(main,), daemon=True)
    t.start()
    assert ready.wait(10)
    yield cluster
    trio.from_thread.run_sync(stop.set, trio_token=token[0])
    t.join(10)


def test_sync_client(threaded_cluster: FakeCluster, tmp_path: Path) -> None:
    threaded_cluster.leader = 1
    with rkv.connect_sync(threaded_cluster.addrs[0], timeout=1.0) as c:
        assert isinstance(c, rkv.SyncClient)
        c.put("k", "v")
        assert c.leader == threaded_cluster.addrs[1]
        assert c.get("k") == b"v"
        assert c.get("k", stale=True) == b"v"
        assert c.cas("k", "v", "w") is True
        assert c.scan("k") == [(b"k", b"w")]
        assert c.delete("k") is True
        assert c.get("k") is None
        c.upload("f", io.BytesIO(b"abc" * 1000), chunk_size=1000)
        c.download("f", tmp_path / "f")
        assert (tmp_path / "f").read_bytes() == b"abc" * 1000
        assert len(c.status()) == 3
        with pytest.raises(rkv.NotFound):
            c.download("nope", tmp_path / "g")
        threaded_cluster.unavailable = {0, 1, 2}
        with pytest.raises(rkv.Unavailable):
            c.get("k")
    with pytest.raises(RuntimeError, match="closed"):
        c.get("k")


def test_sync_client_rejects_bad_address() -> None:
    with pytest.raises(ValueError, match="address"):
        rkv.connect_sync("nope")
