"""bench.rawwire: the request bytes of the raw generator and its response parsers (etcd's
HTTP/1.1 and rkv's frames), byte for byte; and one short closed loop of bench.rawgen against
a fake etcd on loopback (a thread answering canned responses), to check its accounting."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time

import msgpack
import pytest

from bench.loadgen import WorkerArgs, key_of
from bench.rawwire import (
    EtcdWire,
    RkvWire,
    WireError,
    b64,
    parse_http_response,
    parse_rkv_frame,
)

GO_200 = (
    b"HTTP/1.1 200 OK\r\nAccess-Control-Allow-Origin: *\r\nContent-Type: application/json\r\n"
    b"Grpc-Metadata-Content-Type: application/grpc\r\nDate: Mon, 07 Dec 2026 10:45:02 GMT\r\n"
    b'Content-Length: 19\r\n\r\n{"header":{"a":"1"}}'
)[:-1]  # 19 bytes of body: {"header":{"a":"1"}


def _split_http(raw: bytes) -> tuple[dict[str, str], bytes, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    return {"line": lines[0], **headers}, body, head


def test_etcd_put_and_get_are_valid_http_with_exact_lengths() -> None:
    w = EtcdWire("127.0.0.1", 2379, b"\x00\xffvalue", len(key_of(0)))
    for i in (0, 7, 999_999_999):
        k64 = b64(key_of(i))
        for req, path in ((w.put(k64), "/v3/kv/put"), (w.get(k64), "/v3/kv/range")):
            h, body, _ = _split_http(req)
            assert h["line"] == f"POST {path} HTTP/1.1"
            assert h["host"] == "127.0.0.1:2379"
            assert int(h["content-length"]) == len(body)
            doc = json.loads(body)
            assert base64.b64decode(doc["key"]) == key_of(i)
            if path.endswith("put"):
                assert base64.b64decode(doc["value"]) == b"\x00\xffvalue"
            else:
                assert doc["serializable"] is False


def test_http_response_fast_path_and_pipelined_rest() -> None:
    two = GO_200 + GO_200
    r = parse_http_response(two)
    assert r is not None
    status, body_start, end = r
    assert status == 200 and two[body_start:end] == b'{"header":{"a":"1"}'
    assert parse_http_response(two, end) == (200, end + body_start, 2 * end)


def test_http_response_incomplete_until_the_last_byte() -> None:
    for cut in range(len(GO_200)):
        assert parse_http_response(GO_200[:cut]) is None, cut
    assert parse_http_response(GO_200) is not None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 2\r\n\r\n{}", (503, 2)),
        (b"HTTP/1.0 200 OK\r\nCONTENT-LENGTH:  3\r\n\r\nabc", (200, 3)),
        (b"HTTP/1.1 204 No Content\r\n\r\n", (204, 0)),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", (200, 13)),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;x=y\r\nab\r\n0\r\nT: 1\r\n\r\n",
            (200, 22),
        ),
    ],
)
def test_http_response_other_forms(raw: bytes, expected: tuple[int, int]) -> None:
    r = parse_http_response(raw)
    assert r is not None
    status, body_start, end = r
    assert (status, end - body_start) == expected
    assert end == len(raw)
    assert parse_http_response(raw[:-1]) is None


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/2 200\r\n\r\n",
        b"HTTX/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: many\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
def test_http_response_garbage(raw: bytes) -> None:
    with pytest.raises(WireError):
        parse_http_response(raw)


def test_http_response_header_limit() -> None:
    with pytest.raises(WireError):
        parse_http_response(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 20_000)


def test_rkv_frames_carry_what_rkvs_client_sends() -> None:
    w = RkvWire(b"v" * 10, client_id=b"c" * 16)
    f1, f2, g = w.put(b"k1"), w.put(b"k2"), w.get(b"k1")
    bodies = []
    for f in (f1, f2, g):
        n = int.from_bytes(f[:4], "big")
        assert n == len(f) - 4
        bodies.append(msgpack.unpackb(f[4:], raw=False))
    assert bodies[0] == {
        "t": "put",
        "id": 1,
        "k": b"k1",
        "val": b"v" * 10,
        "c": b"c" * 16,
        "s": 1,
        "v": 1,
    }
    assert (bodies[1]["id"], bodies[1]["s"]) == (2, 2)  # one session: seq goes up by one
    assert bodies[2] == {"t": "get", "id": 3, "k": b"k1", "stale": False, "v": 1}
    # The frames are what rkv's own framing decodes.
    from rkv.net.framing import FrameDecoder

    assert FrameDecoder().feed(f1 + f2 + g) == bodies


def test_rkv_frame_parser() -> None:
    body = msgpack.packb({"t": "ok", "id": 4, "leader_addr": "127.0.0.1:1"}, use_bin_type=True)
    raw = len(body).to_bytes(4, "big") + body
    for cut in range(len(raw)):
        assert parse_rkv_frame(raw[:cut]) is None
    assert parse_rkv_frame(raw + raw, len(raw)) == (
        {"t": "ok", "id": 4, "leader_addr": "127.0.0.1:1"},
        2 * len(raw),
    )
    with pytest.raises(WireError):
        parse_rkv_frame((3).to_bytes(4, "big") + msgpack.packb([1, 2]))
    with pytest.raises(WireError):
        parse_rkv_frame((1 << 31).to_bytes(4, "big"))


# -- one short run of the raw generator against a fake etcd ---------------------------------


class FakeEtcd:
    """Answers every request on every connection with GO_200, a 503 every `fail_every`
    requests, and closes the connection unanswered every `close_every`. Counts requests that
    arrive while one is still unanswered on the same connection (`pipelined`): a closed-loop
    client must never send one."""

    def __init__(self, fail_every: int = 0, close_every: int = 0) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.fail_every = fail_every
        self.close_every = close_every
        self.requests = 0
        self.pipelined = 0
        self.lock = threading.Lock()
        self.closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closing:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                buf += data
                while True:
                    head_end = buf.find(b"\r\n\r\n")
                    if head_end < 0:
                        break
                    i = buf.find(b"Content-Length: ")
                    n = int(buf[i + 16 : buf.find(b"\r\n", i)])
                    if len(buf) < head_end + 4 + n:
                        break
                    buf = buf[head_end + 4 + n :]
                    with self.lock:
                        self.requests += 1
                        self.pipelined += bool(buf)
                        fail = self.fail_every and self.requests % self.fail_every == 0
                        close = self.close_every and self.requests % self.close_every == 0
                    if close:
                        return
                    conn.sendall(
                        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n\r\n{}"
                        if fail
                        else GO_200
                    )

    def close(self) -> None:
        self.closing = True
        self.sock.close()


@pytest.mark.parametrize(
    ("fail_every", "close_every", "loop"),
    [(0, 0, "default"), (50, 0, "default"), (0, 0, "asyncio"), (7, 40, "default")],
)
def test_raw_generator_closed_loop_against_a_fake_etcd(
    fail_every: int, close_every: int, loop: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench.rawgen import LOOP_ENV, loop_name, run_worker

    if loop == "asyncio":
        monkeypatch.setenv(LOOP_ENV, "asyncio")
        assert loop_name() == "asyncio"

    fake = FakeEtcd(fail_every, close_every)
    try:
        a = WorkerArgs(
            spec={"system": "etcd", "addrs": [f"127.0.0.1:{fake.port}"], "generator": "raw"},
            clients=4,
            client_offset=0,
            workload="mixed",
            value_size=100,
            keys=100,
            duration=0.6,
            warmup=0.2,
            start_at=time.time() + 0.2,
            seed=1,
        )
        r = run_worker(a)
    finally:
        fake.close()
    assert r.ops > 50 and r.hist.count == r.ops
    assert r.elapsed_s == pytest.approx(0.6)
    assert r.cpu_s > 0
    assert r.stalled_at_end == 0
    if close_every:
        assert set(r.error_kinds) == {"HTTP503", "ConnectionError"}
    elif fail_every:
        assert r.errors > 0 and set(r.error_kinds) == {"HTTP503"}
    else:
        assert r.errors == 0
    assert fake.pipelined == 0
    # Warmup and after-window requests are answered too but do not count.
    assert fake.requests > r.ops + r.errors


def test_raw_generator_fill_writes_every_key_once() -> None:
    from bench.rawgen import run_worker

    fake = FakeEtcd()
    try:
        a = WorkerArgs(
            spec={"system": "etcd", "addrs": [f"127.0.0.1:{fake.port}"], "generator": "raw"},
            clients=3,
            client_offset=0,
            workload="put",
            value_size=10,
            keys=200,
            duration=0,
            warmup=0,
            start_at=time.time() + 0.1,
            seed=1,
            fill_total=200,
            fill_offset=0,
        )
        r = run_worker(a)
    finally:
        fake.close()
    assert (r.ops, r.errors, fake.requests) == (200, 0, 200)
