"""`rkv watch` on a real 3-node cluster (separate processes): a watch through a follower from
revision 1 replays the puts, a txn's changes and a delete as JSON lines (revision, type, key,
value, prev_value) in revision order, and a live watch prints writes made after it started."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # tests/e2e is not a package; these come from its conftest
    from conftest import ProcCluster, RunCli

from conftest import ROOT, rkv_env, wait_for_line

pytestmark = pytest.mark.e2e


def lines(out: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.decode().splitlines() if line.strip()]


def test_watch_replays_and_follows(cluster_factory: Any, run_cli: RunCli, tmp_path: Path) -> None:
    c: ProcCluster = cluster_factory(3)
    leader = c.wait_leader()
    follower = c.followers(leader)[0]
    for args in (["set", "w/a", "1"], ["set", "w/b", "2"], ["set", "w/a", "3"], ["set", "x", "no"]):
        assert run_cli(*args, addr=leader).returncode == 0
    txn = tmp_path / "t.json"
    txn.write_text(
        json.dumps(
            {
                "compare": [{"key": "w/a", "target": "value", "op": "==", "value": "3"}],
                "success": [{"op": "incr", "key": "w/n", "by": 5}, {"op": "delete", "key": "w/b"}],
                "failure": [],
            }
        )
    )
    assert run_cli("txn", str(txn), addr=leader).returncode == 0
    assert run_cli("delete", "w/a", addr=leader).returncode == 0

    r = run_cli("watch", "w/", "--from", "1", "--json", "--prev", "--count", "6", addr=follower)
    assert r.returncode == 0, r.stderr
    got = lines(r.stdout)
    revs = [e["revision"] for e in got]
    assert revs == sorted(revs)
    rows = [(e["type"], e["key"], e["value"], e["prev_value"]) for e in got]
    txn_rev = got[3]["revision"]
    assert rows[:3] == [
        ("put", "w/a", "1", None),
        ("put", "w/b", "2", None),
        ("put", "w/a", "3", "1"),
    ]
    assert sorted(rows[3:5]) == [("delete", "w/b", None, "2"), ("put", "w/n", "5", None)]
    assert got[4]["revision"] == txn_rev  # one txn, one revision
    assert rows[5] == ("delete", "w/a", None, "3")

    # one key (--exact): w/a only, not the other keys it begins
    r = run_cli("watch", "w/a", "--exact", "--from", "1", "--json", "--count", "3", addr=follower)
    assert r.returncode == 0, r.stderr
    assert [(e["type"], e["key"], e["value"]) for e in lines(r.stdout)] == [
        ("put", "w/a", "1"),
        ("put", "w/a", "3"),
        ("delete", "w/a", None),
    ]

    # live: a watch from the revision after the last write, then two writes while it runs
    after = str(got[5]["revision"] + 1)
    proc = subprocess.Popen(
        [sys.executable, "-m", "rkv", "watch", "live/", "--from", after, "--json", "--count", "2"],
        cwd=ROOT,
        env=rkv_env(RKV_ADDR=follower),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        assert run_cli("set", "live/1", "one", addr=leader).returncode == 0
        assert run_cli("set", "live/2", "two", addr=leader).returncode == 0
        out = wait_for_line(proc, b'"live/2"', timeout=30)
        assert proc.wait(timeout=15) == 0
    finally:
        proc.kill()
    live = lines(out)
    assert [(e["key"], e["value"]) for e in live] == [("live/1", "one"), ("live/2", "two")]
    assert "prev_value" not in live[0]  # only with --prev
