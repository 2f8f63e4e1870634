"""NodeConfig, parse_address and the shared error types (table and property tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rkv.config import NodeConfig, default_cluster_id, parse_address
from rkv.errors import (
    BadRequest,
    CorruptData,
    ExitCode,
    InternalError,
    NotLeader,
    RkvError,
    StoreFull,
    Timeout,
    Unavailable,
    error_frame,
    from_error_frame,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:50051", ("127.0.0.1", 50051)),
        ("http://127.0.0.1:50051", ("127.0.0.1", 50051)),
        ("http://127.0.0.1:50051/", ("127.0.0.1", 50051)),
        ("localhost:1", ("localhost", 1)),
        ("  node-a.example:65535 ", ("node-a.example", 65535)),
        ("[::1]:7000", ("::1", 7000)),
    ],
)
def test_parse_address_accepts(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        ("127.0.0.1", "missing port"),
        ("127.0.0.1:0", "out of range"),
        ("127.0.0.1:65536", "out of range"),
        ("127.0.0.1:http", "not a number"),
        ("a:1:2", "IPv6"),
        (":50051", "missing host"),
        ("http://x:1/path", "expected host:port"),
        ("[::1:5", "unclosed"),
        ("bad_host!:5", "bad host"),
    ],
)
def test_parse_address_refuses_with_one_line(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why) as ei:
        parse_address(text)
    assert "\n" not in str(ei.value)


@given(st.integers(1, 65535), st.sampled_from(["127.0.0.1", "localhost", "n1.local"]))
def test_parse_address_round_trips(port: int, host: str) -> None:
    assert parse_address(f"{host}:{port}") == (host, port)
    assert parse_address(f"http://{host}:{port}") == (host, port)


def test_create_defaults_and_shared_cluster_id() -> None:
    addrs = ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"]
    cfgs = [NodeConfig.create(a, addrs) for a in addrs]
    assert {c.cluster_id for c in cfgs} == {default_cluster_id(addrs)}
    assert cfgs[0].cluster_id.startswith("rkv-") and len(cfgs[0].cluster_id) == 20
    c = cfgs[1]
    assert c.id == "127.0.0.1:7002" and c.host == "127.0.0.1" and c.port == 7002
    assert set(c.peers) == {"127.0.0.1:7001", "127.0.0.1:7003"}
    assert c.voters == tuple(sorted(addrs))
    assert c.data_dir == Path("rkv-data/127.0.0.1_7002")
    assert c.peer_address("127.0.0.1:7003") == "127.0.0.1:7003"
    # members that joined later are reached at their id, which is their address
    assert c.peer_address("10.0.0.9:7009") == "10.0.0.9:7009"
    assert c.peer_address("not-an-address") is None
    assert NodeConfig.create(addrs[0], join=True).voters == ()
    # another voter set is another cluster
    assert NodeConfig.create(addrs[0], addrs[:2]).cluster_id != c.cluster_id
    with pytest.raises(TypeError):
        c.peers["x"] = ("h", 1)  # type: ignore[index]


@pytest.mark.parametrize(
    ("kw", "why"),
    [
        ({"tick_ms": 0}, "tick_ms"),
        ({"election_ticks": 2, "heartbeat_ticks": 2}, "must exceed"),
        ({"max_frame": 10}, "max_frame"),
        ({"request_timeout": 0}, "request_timeout"),
        ({"cluster_id": "x" * 200}, "at most 128"),
        ({"advertise": "0.0.0.0:5"}, "wildcard"),
        ({"max_connections": 0}, "max_connections must be in 1"),
        ({"max_connections_per_source": 0}, "max_connections_per_source"),
        ({"handshake_timeout": 0}, "handshake_timeout"),
        ({"handshake_timeout": "5"}, "handshake_timeout must be a number"),
        ({"frame_timeout": -1}, "frame_timeout"),
        ({"min_frame_rate": -1}, "min_frame_rate"),
        ({"idle_timeout": 0}, "idle_timeout"),
        ({"auto_repair": 1}, "auto_repair must be a bool"),
        ({"http_open_metrics": "yes"}, "http_open_metrics must be a bool"),
        ({"watch_max": 8, "watch_max_per_conn": 8}, "watch_max_per_conn must be in 1..7"),
        ({"watch_max": 1}, "watch_max must be >= 2"),
    ],
)
def test_create_validates(kw: dict[str, Any], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        NodeConfig.create("127.0.0.1:5000", **kw)


@pytest.mark.parametrize(
    "err",
    [
        NotLeader(leader_addr="127.0.0.1:7001"),
        NotLeader(),
        Unavailable(),
        Timeout("slow"),
        BadRequest("k must be bytes"),
        StoreFull(),
        CorruptData("key b'k' failed its checksum"),
    ],
)
def test_error_frames_round_trip(err: RkvError) -> None:
    frame = error_frame(7, err)
    assert frame["t"] == "error" and frame["id"] == 7 and frame["code"] == err.code
    back = from_error_frame(frame)
    assert type(back) is type(err) and back.msg == err.msg
    if isinstance(err, NotLeader):
        assert isinstance(back, NotLeader) and back.leader_addr == err.leader_addr


def test_unknown_error_code_maps_to_internal() -> None:
    assert isinstance(from_error_frame({"code": "from_the_future", "msg": 3}), InternalError)


def test_exit_codes_are_distinct() -> None:
    values = [c.value for c in ExitCode]
    assert len(values) == len(set(values))
    assert (ExitCode.OK, ExitCode.USAGE, ExitCode.PORT_IN_USE) == (0, 2, 10)
