"""The HTTP/JSON API with curl (a client nobody here wrote) against 3 real `rkv serve`
processes: writes through a follower, linearizable and stale reads, a scan, a 5 MiB file
streamed up and down, the cluster token, a leader killed during a stream of puts, and the
bounds (431, 413, slowloris) while the node keeps serving."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ProcCluster  # tests/e2e is not a package (rootdir-relative import)

from rkv.procs import free_ports

pytestmark = pytest.mark.e2e
TOKEN = "curl-test-token-0123456789"


@pytest.fixture(autouse=True)
def _need_curl() -> None:
    if shutil.which("curl") is None:
        pytest.fail("the HTTP tests need curl (Debian: apt-get install curl; .ci/run installs it)")


class HttpCluster:
    def __init__(self, root: Path, token: str | None) -> None:
        self.procs = ProcCluster(root, 3)
        self.http = dict(zip(self.procs.addrs, free_ports(3), strict=True))
        self.token = token
        for n in self.procs.nodes:
            n.args += ["--http-port", str(self.http[n.addr])]
            if token:
                n.args += ["--cluster-token", token]

    def url(self, addr: str, path: str) -> str:
        return f"http://127.0.0.1:{self.http[addr]}{path}"

    def curl(self, *args: str, auth: bool = True, timeout: float = 60) -> tuple[int, bytes]:
        """(HTTP status, body) of `curl ARGS` (status 0 when curl itself failed)."""
        cmd = ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "--max-time", str(timeout)]
        if auth and self.token:
            cmd += ["-H", f"Authorization: Bearer {self.token}"]
        r = subprocess.run([*cmd, *args], capture_output=True, timeout=timeout + 10)
        body, _, code = r.stdout.rpartition(b"\n")
        return int(code or 0), body

    def status(self, addr: str) -> dict[str, Any] | None:
        try:
            code, body = self.curl(self.url(addr, "/v1/status"), timeout=2)
        except subprocess.TimeoutExpired:
            return None
        return json.loads(body) if code == 200 else None

    def wait_leader(self, timeout: float = 30.0, exclude: str | None = None) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = [self.status(a) for a in self.procs.addrs if a != exclude]
            leaders = {r["leader"] for r in rows if r is not None}
            if len(leaders) == 1 and None not in leaders and all(rows):
                leader = str(leaders.pop())
                if leader != exclude:
                    return leader
            time.sleep(0.1)
        logs = "\n".join(f"--- {n.addr}\n{n.log()}" for n in self.procs.nodes)
        pytest.fail(f"no leader within {timeout}s\n{logs}")


def _cluster(tmp_path: Path, token: str | None) -> Iterator[HttpCluster]:
    c = HttpCluster(tmp_path, token)
    c.procs.start()
    try:
        c.wait_leader()
        yield c
    finally:
        c.procs.kill_all()


@pytest.fixture
def http_cluster(tmp_path: Path) -> Iterator[HttpCluster]:
    yield from _cluster(tmp_path, None)


@pytest.fixture
def token_cluster(tmp_path: Path) -> Iterator[HttpCluster]:
    yield from _cluster(tmp_path, TOKEN)


def test_curl_walkthrough(http_cluster: HttpCluster, tmp_path: Path) -> None:
    c = http_cluster
    leader = c.wait_leader()
    f1, f2 = [a for a in c.procs.addrs if a != leader]
    assert (
        c.curl("-X", "PUT", "--data-binary", "hello world", c.url(f1, "/v1/kv/greeting"))[0] == 204
    )
    assert c.curl(c.url(f2, "/v1/kv/greeting")) == (200, b"hello world")
    code, _ = c.curl(c.url(f2, "/v1/kv/greeting?consistency=stale"))
    assert code in (200, 404)  # a stale read may lag; it must not fail
    assert c.curl("-X", "PUT", "--data-binary", "x", c.url(f2, "/v1/kv/a%2Fb"))[0] == 204
    code, body = c.curl(c.url(f1, "/v1/kv?prefix=a&limit=10"))
    scanned = json.loads(body)
    assert code == 200 and scanned.pop("revision") >= 2  # the revision it read at
    assert scanned == {"items": [{"key": "YS9i", "value": "eA=="}], "more": False}
    assert c.curl(c.url(f1, "/v1/kv/nope"))[0] == 404
    # a key with a lease of its own (through a follower), and one naming no lease
    assert c.curl("-X", "PUT", "--data-binary", "t", c.url(f1, "/v1/kv/x?ttl=30"))[0] == 204
    assert c.curl(c.url(f2, "/v1/kv/x")) == (200, b"t")
    code, body = c.curl("-X", "PUT", "--data-binary", "t", c.url(f1, "/v1/kv/y?lease=999999"))
    assert code == 404 and json.loads(body)["error"] == "lease_not_found"
    # a conditional write on the key's mod revision (x was written long after revision 1)
    code, body = c.curl("-X", "PUT", "--data-binary", "u", c.url(f2, "/v1/kv/x?if_mod_revision=1"))
    assert code == 412 and json.loads(body)["error"] == "precondition_failed"
    assert c.curl(c.url(f1, "/v1/kv/x")) == (200, b"t")  # nothing written
    code, _ = c.curl("-X", "PUT", "--data-binary", "n", c.url(f2, "/v1/kv/fresh?if_mod_revision=0"))
    assert code == 204 and c.curl(c.url(f1, "/v1/kv/fresh")) == (200, b"n")
    # a transaction through a follower (forwarded): compares, then one revision of writes
    txn = {
        "compare": [{"key": "a/b", "target": "value", "op": "==", "value": "x"}],
        "success": [{"op": "incr", "key": "hits", "by": 2}, {"op": "get", "key": "a/b"}],
        "failure": [{"op": "get", "key": "a/b"}],
    }
    code, body = c.curl("-X", "POST", "--data-binary", json.dumps(txn), c.url(f2, "/v1/txn"))
    doc = json.loads(body)
    assert code == 200 and doc["succeeded"] is True, body
    assert doc["results"][0] == {"op": "incr", "value": 2}
    assert doc["results"][1]["value"] == "x" and doc["results"][1]["version"] == 1
    code, body = c.curl("-X", "POST", "--data-binary", "{oops", c.url(f1, "/v1/txn"))
    assert code == 400 and "not valid JSON" in json.loads(body)["message"]
    assert c.curl("-X", "DELETE", c.url(leader, "/v1/kv/greeting"))[0] == 204
    assert c.curl(c.url(f1, "/v1/kv/greeting"))[0] == 404
    # a 5 MiB file up through one follower, down from the other, verified
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(5 << 20))
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    code, body = c.curl("-T", str(src), c.url(f1, "/v1/files/big"))
    assert code == 201 and json.loads(body)["sha256"] == sha, body
    dest = tmp_path / "down.bin"
    r = subprocess.run(
        ["curl", "-sSf", "-D", "-", "-o", str(dest), c.url(f2, "/v1/files/big")],
        capture_output=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert f"x-rkv-sha256: {sha}".encode() in r.stdout.lower()
    assert f"content-length: {5 << 20}".encode() in r.stdout.lower()
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == sha
    status = json.loads(c.curl(c.url(f2, "/v1/status"))[1])
    assert status["leader"] == leader and status["role"] == "follower"


def test_curl_with_the_token(token_cluster: HttpCluster) -> None:
    c = token_cluster
    a = c.procs.addrs[0]
    assert c.curl(c.url(a, "/v1/kv/k"), auth=False)[0] == 401
    assert c.curl("-X", "PUT", "-d", "v", c.url(a, "/v1/kv/k"), auth=False)[0] == 401
    assert c.curl(c.url(a, "/metrics"), auth=False)[0] == 401
    assert c.curl(c.url(a, "/livez"), auth=False) == (200, b"ok\n")
    assert c.curl("-X", "PUT", "-d", "v", c.url(a, "/v1/kv/k"))[0] == 204
    assert c.curl(c.url(a, "/v1/kv/k")) == (200, b"v")
    assert c.curl(c.url(a, "/metrics"))[0] == 200


def test_leader_kill_during_puts_loses_no_acknowledged_put(http_cluster: HttpCluster) -> None:
    c = http_cluster
    leader = c.wait_leader()
    target = next(a for a in c.procs.addrs if a != leader)
    acked: list[str] = []
    failed: list[tuple[str, int]] = []
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            key = f"kill-{i:05d}"
            code, _ = c.curl("-X", "PUT", "-d", key, c.url(target, f"/v1/kv/{key}"), timeout=20)
            (acked.append(key) if code == 204 else failed.append((key, code)))
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        deadline = time.monotonic() + 60
        while len(acked) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        c.procs.node(leader).kill(signal.SIGKILL)
        before = len(acked)
        while len(acked) < before + 20 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        t.join(60)
    assert len(acked) >= before + 20, (len(acked), failed)
    new_leader = c.wait_leader(exclude=leader)
    assert new_leader != leader
    code, body = c.curl(c.url(target, "/v1/kv?prefix=kill-&limit=9999"))
    assert code == 200
    stored_keys = {base64.b64decode(i["key"]).decode() for i in json.loads(body)["items"]}
    assert set(acked) <= stored_keys, sorted(set(acked) - stored_keys)[:10]
    assert len(failed) <= 3, failed  # the forwarder retries at the new leader


def test_bounds_and_the_node_keeps_serving(http_cluster: HttpCluster, tmp_path: Path) -> None:
    c = http_cluster
    a = c.procs.addrs[0]
    code, body = c.curl("-H", "X-Big: " + "a" * 20000, c.url(a, "/v1/status"))
    assert code == 431, body
    huge = tmp_path / "huge.bin"
    with huge.open("wb") as f:
        f.truncate((16 << 20) + 1)
    code, body = c.curl("-T", str(huge), c.url(a, "/v1/kv/huge"))
    assert code == 413 and json.loads(body)["error"] == "too_large"
    # slowloris: a header line every second; closed after the head deadline (10 s)
    s = socket.create_connection(("127.0.0.1", c.http[a]))
    s.sendall(b"GET /v1/status HTTP/1.1\r\n")
    t0 = time.monotonic()
    answer = b""
    s.settimeout(1.0)
    while time.monotonic() - t0 < 30:
        try:
            s.sendall(b"X: y\r\n")
            answer += s.recv(65536)
            if answer:
                break
        except TimeoutError:
            assert c.curl(c.url(a, "/livez")) == (200, b"ok\n")  # others are served meanwhile
        except OSError:
            break
    s.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
    assert time.monotonic() - t0 < 15
    assert c.curl("-X", "PUT", "-d", "still", c.url(a, "/v1/kv/after"))[0] == 204
    assert c.curl(c.url(a, "/v1/kv/after")) == (200, b"still")


def test_curl_watch(http_cluster: HttpCluster) -> None:
    """GET /v1/watch through a follower with curl: the writes made before it (from
    start_revision) and while it runs, one JSON line each (key and values base64), in
    revision order; a revision older than the node holds is 410 with the first it holds."""
    c = http_cluster
    leader = c.wait_leader()
    f1 = next(a for a in c.procs.addrs if a != leader)
    assert c.curl("-X", "PUT", "--data-binary", "1", c.url(leader, "/v1/kv/w%2Fa"))[0] == 204
    code, body = c.curl(c.url(leader, "/v1/kv?prefix=w%2F"))
    start = json.loads(body)["revision"]
    cmd = ["curl", "-sS", "-N", "--max-time", "60"]
    url = c.url(f1, f"/v1/watch?prefix=w%2F&start_revision={start}&prev=true")
    proc = subprocess.Popen([*cmd, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert c.curl("-X", "PUT", "--data-binary", "2", c.url(leader, "/v1/kv/w%2Fa"))[0] == 204
        assert c.curl("-X", "DELETE", c.url(leader, "/v1/kv/w%2Fa"))[0] == 204
        assert c.curl("-X", "PUT", "--data-binary", "no", c.url(leader, "/v1/kv/x"))[0] == 204
        assert proc.stdout is not None
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + 30
        while len(got) < 3 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            doc = json.loads(line)
            if doc["type"] != "progress":
                got.append(doc)
    finally:
        proc.kill()
        proc.wait()
    b64 = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731
    assert [(d["type"], d["key"], d["value"], d["prev_value"]) for d in got] == [
        ("put", b64("w/a"), b64("1"), None),
        ("put", b64("w/a"), b64("2"), b64("1")),
        ("delete", b64("w/a"), None, b64("2")),
    ]
    assert [d["revision"] for d in got] == sorted(d["revision"] for d in got)
    assert got[0]["revision"] == start
    code, body = c.curl(c.url(f1, "/v1/watch?start_revision=0"))
    assert code == 400 and json.loads(body)["error"] == "bad_request"
