"""The node's HTTP port: /livez, /readyz, /metrics and the HTTP/JSON API (docs/contracts.md,
"HTTP API"; docs/operations.md, "The HTTP port").

The package: `server` (HTTP/1.1 connections on trio, parsed by h11, and their bounds),
`exchange` (one request: its body within bounds, its response),
`api` (the routes, the token, JSON), `calls` (an rkv.protocol request handed to the node's
dispatcher, with retries), `files` (streamed uploads and downloads), `errors` (rkv error
codes as HTTP statuses).

Owns: nothing of the node: the node builds `HttpApi` from what it talks to (its dispatcher,
its health routes, its token) and runs `serve_api`. Must not: import rkv.node (it sits below
it: tests/test_architecture.py), or answer a request other than through the dispatcher.
"""

from __future__ import annotations

from rkv.httpapi.api import HttpApi
from rkv.httpapi.exchange import Limits
from rkv.httpapi.server import serve_api

__all__ = ["HttpApi", "Limits", "serve_api"]
