"""The HTTP port as the node has it: HTTPS with the node's certificate when TLS is on (a
client certificate too with mutual TLS), the cluster token as a bearer token, curl as the
client; and an in-process cluster's HTTP API: a put through a follower read everywhere."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import trio

from .conftest import TOKEN, Certs, cluster, configs, wait_leader


@pytest.fixture(autouse=True)
def _need_curl() -> None:
    if shutil.which("curl") is None:
        pytest.fail("the HTTP tests need curl (Debian: apt-get install curl; .ci/run installs it)")


async def curl(*args: str) -> tuple[int, bytes]:
    """(HTTP status or 0 when curl failed, body)."""
    cmd = ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "--max-time", "20", *args]
    r = await trio.to_thread.run_sync(lambda: subprocess.run(cmd, capture_output=True, timeout=30))
    body, _, code = r.stdout.rpartition(b"\n")
    return int(code or 0), body


async def test_https_with_mutual_tls_and_the_token(tmp_path: Path, certs: Certs) -> None:
    cfgs = configs(
        tmp_path,
        cluster_token=TOKEN,
        tls_cert=certs.node_cert,
        tls_key=certs.node_key,
        tls_ca=certs.ca,
        http_port=0,
    )
    async with cluster(cfgs) as nodes:
        leader = await wait_leader(nodes)
        f = next(n for n in nodes if n is not leader)
        url = f"https://127.0.0.1:{f.http_port}"
        tls = ["--cacert", str(certs.ca), "--cert", str(certs.client_cert)]
        tls += ["--key", str(certs.client_key)]
        auth = ["-H", f"Authorization: Bearer {TOKEN}"]
        assert (await curl(*tls, *auth, "-X", "PUT", "-d", "v1", f"{url}/v1/kv/k"))[0] == 204
        assert await curl(*tls, *auth, f"{url}/v1/kv/k") == (200, b"v1")
        assert (await curl(*tls, f"{url}/v1/kv/k"))[0] == 401  # TLS alone is not the token
        assert await curl(*tls, f"{url}/livez") == (200, b"ok\n")
        # no client certificate: the handshake fails; plain HTTP: no answer
        assert (await curl("--cacert", str(certs.ca), *auth, f"{url}/v1/kv/k"))[0] == 0
        assert (await curl(*auth, f"http://127.0.0.1:{f.http_port}/v1/kv/k"))[0] == 0
        for n in nodes:  # the put went through the log
            with trio.fail_after(10):
                while n.store.get(b"k") != b"v1":
                    await trio.sleep(0.02)


async def test_https_server_only_tls(tmp_path: Path, certs: Certs) -> None:
    cfgs = configs(tmp_path, 1, tls_cert=certs.node_cert, tls_key=certs.node_key, http_port=0)
    async with cluster(cfgs) as nodes:
        await wait_leader(nodes)
        url = f"https://127.0.0.1:{nodes[0].http_port}"
        assert (await curl("--cacert", str(certs.ca), "-X", "PUT", "-d", "x", f"{url}/v1/kv/a"))[
            0
        ] == 204
        # linearizable: a put is acknowledged once committed, maybe before the node applied
        # it, so a stale read right after it may not see it yet
        assert await curl("--cacert", str(certs.ca), f"{url}/v1/kv/a") == (200, b"x")
        code, body = await curl("--cacert", str(certs.ca), f"{url}/v1/status")
        assert code == 200 and b'"role": "leader"' in body
