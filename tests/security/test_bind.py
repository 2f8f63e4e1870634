"""Nodes listen on 127.0.0.1 unless told otherwise: not reachable on another local address."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import trio

from rkv.config import DEFAULT_HOST, NodeConfig
from rkv.net.framing import Frame
from rkv.net.rpc import ConnInfo, serve

from .conftest import cluster, configs


async def echo(frame: Frame, info: ConnInfo) -> Frame:
    return {"t": "ok"}


async def reachable(host: str, port: int) -> bool:
    try:
        with trio.fail_after(3):
            stream = await trio.open_tcp_stream(host, port)
    except OSError:
        return False
    await stream.aclose()
    return True


def test_defaults_are_loopback() -> None:
    assert DEFAULT_HOST == "127.0.0.1"
    assert NodeConfig.create().host == "127.0.0.1"
    assert NodeConfig.create(peers=["127.0.0.1:50052"]).host == "127.0.0.1"


@pytest.mark.parametrize(
    ("bind", "other_reachable"),
    [
        pytest.param(None, False, id="default bind"),
        pytest.param("127.0.0.1", False, id="explicit loopback"),
        pytest.param("0.0.0.0", True, id="wildcard (control)"),
    ],
)
async def test_serve_binds_where_told(bind: str | None, other_reachable: bool) -> None:
    async with trio.open_nursery() as nursery:
        if bind is None:
            port = await nursery.start(serve, echo)
        else:
            port = await nursery.start(partial(serve, echo, bind, 0))
        assert await reachable("127.0.0.1", port)
        assert await reachable("127.0.0.2", port) is other_reachable
        nursery.cancel_scope.cancel()


async def test_node_with_default_host_is_not_reachable_elsewhere(tmp_path: Path) -> None:
    (cfg,) = configs(tmp_path, n=1)
    assert cfg.host == "127.0.0.1"
    async with cluster([cfg]) as (node,):
        assert await reachable("127.0.0.1", node.port)
        assert not await reachable("127.0.0.2", node.port)
