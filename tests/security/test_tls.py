"""TLS on rkv connections (rkv.net.tls): verified servers, mutual TLS, and a TLS cluster.

Certificates come from the session fixture in conftest.py (openssl command line).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from rkv.client import Client
from rkv.net import tls
from rkv.net.framing import Frame
from rkv.net.rpc import ConnectionLost, ConnInfo, RpcClient, serve

from .conftest import TOKEN, Certs, cluster, configs, wait_leader


async def echo(frame: Frame, info: ConnInfo) -> Frame:
    return {"t": "ok", "echo": frame.get("x")}


@asynccontextmanager
async def tls_server(ctx: ssl.SSLContext | None, **kw: Any) -> AsyncIterator[int]:
    async with trio.open_nursery() as nursery:
        yield await nursery.start(partial(serve, echo, "127.0.0.1", 0, ssl_context=ctx, **kw))
        nursery.cancel_scope.cancel()


async def call(port: int, ctx: ssl.SSLContext | None, **kw: Any) -> Frame:
    with trio.fail_after(5):
        async with RpcClient("127.0.0.1", port, ssl_context=ctx, **kw) as c:
            reply = await c.call({"t": "ping", "x": 5})
    return reply


def client_ctx(certs: Certs, *, ca: Path | None = None, with_cert: bool = False) -> ssl.SSLContext:
    if with_cert:
        return tls.client_context(ca or certs.ca, certs.client_cert, certs.client_key)
    return tls.client_context(ca or certs.ca)


async def test_server_tls_table(certs: Certs) -> None:
    server = tls.server_context(certs.node_cert, certs.node_key)
    async with tls_server(server) as port:
        assert (await call(port, client_ctx(certs)))["echo"] == 5
        # A CA that did not sign the node's certificate: the client refuses the server.
        with pytest.raises(ConnectionLost, match="TLS"):
            await call(port, client_ctx(certs, ca=certs.other_ca))
        # Plain TCP to a TLS node fails cleanly (no hang, no crash) ...
        with pytest.raises(ConnectionLost):
            await call(port, None)
        # ... and the node keeps serving TLS clients.
        assert (await call(port, client_ctx(certs)))["echo"] == 5


async def test_tls_client_to_a_plain_node_fails_cleanly() -> None:
    async with tls_server(None) as port:
        with pytest.raises(ConnectionLost):
            await call(port, tls.client_context())
        assert (await call(port, None))["echo"] == 5


async def test_mutual_tls_requires_a_client_certificate(certs: Certs) -> None:
    server = tls.server_context(certs.node_cert, certs.node_key, certs.ca)
    async with tls_server(server) as port:
        with pytest.raises(ConnectionLost):
            await call(port, client_ctx(certs))
        assert (await call(port, client_ctx(certs, with_cert=True)))["echo"] == 5


async def test_tls_and_token_together(certs: Certs) -> None:
    server = tls.server_context(certs.node_cert, certs.node_key)
    async with tls_server(server, token=TOKEN) as port:
        assert (await call(port, client_ctx(certs), token=TOKEN))["echo"] == 5


async def test_mutual_tls_cluster_with_token_elects_and_replicates(
    tmp_path: Path, certs: Certs
) -> None:
    cfgs = configs(
        tmp_path,
        cluster_token=TOKEN,
        tls_cert=certs.node_cert,
        tls_key=certs.node_key,
        tls_ca=certs.ca,
    )
    async with cluster(cfgs) as nodes:
        await wait_leader(nodes)
        addrs = [n.cfg.id for n in nodes]
        with trio.fail_after(15):
            async with Client(
                addrs,
                token=TOKEN,
                tls_ca=certs.ca,
                tls_cert=certs.client_cert,
                tls_key=certs.client_key,
            ) as c:
                for i in range(20):
                    await c.put(b"k%d" % i, b"v%d" % i)
                assert await c.get(b"k19") == b"v19"
            while any(n.store.get(b"k19") != b"v19" for n in nodes):
                await trio.sleep(0.02)
        # The peer links really were TLS: no eager raw-socket writes bypassed the TLS layer.
        for n in nodes:
            for peer in n.transport.statistics().values():
                assert peer.get("eager_writes", 0) == 0
