"""Issue 20's repro on real processes: on a 3-node cluster, `rkv set victim <100 bytes>`, stop
a follower, flip one bit of the value's copy in its data.mdb, start it again: a get through
that follower (linearizable or --stale) is refused with an integrity error (exit 16), never
the flipped bytes; the follower keeps serving other keys and says it is degraded in /readyz,
/metrics and `rkv status`. A write over a damaged session stops it with exit 16."""

from __future__ import annotations

import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import lmdb
import pytest

import rkv
from rkv.procs import free_ports
from rkv.store import kv as kvdb

if TYPE_CHECKING:  # tests/e2e is not a package; these come from its conftest
    from conftest import ProcCluster, RunCli

pytestmark = pytest.mark.e2e


def stored(data_dir: Path, db: bytes, key: bytes) -> bytes:
    """The stored (sealed) value of a record of the live state, read with LMDB."""
    env = lmdb.open(str(data_dir), max_dbs=12, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            meta = env.open_db(b"meta", txn=txn, create=False)
            gen = txn.get(kvdb.GEN_KEY, db=meta) or b"\x00"
            d = env.open_db(db + (b".1" if gen == b"\x01" else b""), txn=txn, create=False)
            raw = txn.get(key, db=d)
    finally:
        env.close()
    assert raw is not None
    return raw


def flip_in_file(data_dir: Path, record: bytes, offset: int) -> int:
    """Flip one bit at `offset` of every copy of the bytes `record` in data.mdb (the live one
    and any stale copy in a freed page), as a bad disk would; returns the copies found."""
    path = data_dir / "data.mdb"
    data = bytearray(path.read_bytes())
    found, pos = 0, data.find(record)
    while pos >= 0:
        data[pos + offset] ^= 0x08
        found += 1
        pos = data.find(record, pos + 1)
    path.write_bytes(bytes(data))
    return found


def http_get_sync(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_for(cond: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_a_flipped_bit_on_a_follower_is_never_served(
    cluster_factory: Callable[[int], ProcCluster], run_cli: RunCli
) -> None:
    c = cluster_factory(3)
    leader = c.wait_leader()
    victim = secrets.token_hex(50)  # 100 bytes, nowhere else in the file
    assert run_cli("set", "victim", victim, addr=c.addr).returncode == 0
    assert run_cli("set", "other", "fine", addr=c.addr).returncode == 0
    follower = c.followers(leader)[0]
    node = c.node(follower)
    with rkv.connect_sync(c.addrs) as client:  # one client: its session is damaged too
        client.put("mine", b"1")

        def applied_there() -> bool:
            r = run_cli("--addr", follower, "get", "mine", "--stale")
            return r.stdout == b"1\n"

        wait_for(applied_there, "the follower to apply the writes")
        assert node.kill(15) == 0  # SIGTERM: a clean stop
        value = stored(node.data_dir, b"kv", b"victim")
        assert victim.encode() in value
        assert flip_in_file(node.data_dir, value, value.find(victim.encode()) + 10) >= 1
        session = stored(node.data_dir, b"sessions", kvdb.session_key(client.client_id))
        assert flip_in_file(node.data_dir, session, len(session) - 1) >= 1

        http = free_ports(1)[0]
        # the reads find it (the background scrub would, first: tests/node/test_compare_node.py)
        node.args += ["--http-port", str(http), "--scrub-rate", "0"]
        node.start()
        up = {"addr": follower, "role": "follower"}
        wait_for(lambda: any(up.items() <= r.items() for r in c.status()), "the restart")
        for stale in ([], ["--stale"]):
            r = run_cli("--addr", follower, "get", "victim", *stale)
            assert r.returncode == 16, (r.returncode, r.stderr)
            err = r.stderr.decode()
            assert err.startswith("rkv: integrity error: node ") and "key b'victim'" in err
            assert "failed its checksum" in err and err.count("\n") == 1
            assert r.stdout == b""  # never the flipped bytes
        r = run_cli("--addr", follower, "get", "other")
        assert (r.returncode, r.stdout) == (0, b"fine\n")
        r = run_cli("--addr", leader, "get", "victim")  # a healthy replica has it
        assert (r.returncode, r.stdout) == (0, victim.encode() + b"\n")

        status, body = http_get_sync(http, "/readyz")
        assert status == 503
        assert body.decode().startswith("degraded: integrity error: key b'victim' failed")
        _, page = http_get_sync(http, "/metrics")
        assert b"rkv_integrity_errors_total 2.0" in page and b"rkv_degraded 1.0" in page
        r = run_cli("--addr", follower, "status")
        assert r.returncode == 0 and f"{follower} degraded: integrity error" in r.stdout.decode()

        # the client's next write needs its session: the follower stops rather than diverge
        client.put("mine", b"2")
        wait_for(lambda: not node.alive(), "the follower to stop")
        assert node.child.exit_code() == 16
        assert "store damaged, stopping: session of client" in node.log()
    assert run_cli("--addr", leader, "get", "mine").stdout == b"2\n"
