"""Optional TLS for rkv connections: SSL contexts from certificate files, stream wrapping.

Owns: building the server and client `ssl.SSLContext`s (TLS 1.2 or newer, the stdlib's
secure defaults, hostname checking on) and wrapping a TCP stream in `trio.SSLStream` with a
handshake deadline. Must not: generate certificates, or know about frames or tokens.

A node's server context loads its certificate and key; given a CA it also requires every
connecting side (peer or client) to present a certificate signed by that CA (mutual TLS).
A node's peer links use a client context that verifies the other node against the CA and
presents the node's own certificate, so the same files serve both directions.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import trio

StrPath = str | Path


def server_context(cert: StrPath, key: StrPath, ca: StrPath | None = None) -> ssl.SSLContext:
    """For `rpc.serve`: present `cert`; with `ca`, require client certificates from it.
    Raises OSError / ssl.SSLError for unreadable or mismatched files."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    if ca is not None:
        ctx.load_verify_locations(cafile=str(ca))
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(
    ca: StrPath | None = None, cert: StrPath | None = None, key: StrPath | None = None
) -> ssl.SSLContext:
    """For connecting: verify the server against `ca` (default: the system's trust store)
    and its name; present `cert`/`key` when given (needed by a mutual-TLS server)."""
    ctx = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=None if ca is None else str(ca)
    )
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        ctx.load_cert_chain(str(cert), None if key is None else str(key))
    return ctx


async def wrap(
    stream: trio.abc.Stream,
    ctx: ssl.SSLContext,
    *,
    server_side: bool,
    server_hostname: str | None = None,
    timeout: float = 10.0,
) -> trio.SSLStream[trio.abc.Stream]:
    """TLS over `stream`, handshake done. Raises trio.TooSlowError after `timeout`,
    trio.BrokenResourceError for a failed handshake (bad certificate, plain-text peer)."""
    ssl_stream = trio.SSLStream(
        stream, ctx, server_side=server_side, server_hostname=server_hostname, https_compatible=True
    )
    with trio.fail_after(timeout):
        await ssl_stream.do_handshake()
    return ssl_stream


__all__ = ["client_context", "server_context", "wrap"]
