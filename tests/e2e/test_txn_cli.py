"""`rkv txn` on a real 3-node cluster (separate processes): a txn whose compares hold, one
whose compares fail (exit 1, the failure ops ran), bad JSON and a txn that does not fit
(exit 2, one line), an op that fails in the state machine (nothing applied), and the
revisions a get, a scan and a txn answer with through the Python client."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import rkv

if TYPE_CHECKING:  # tests/e2e is not a package; these come from its conftest
    from conftest import ProcCluster, RunCli

pytestmark = pytest.mark.e2e


def write(tmp_path: Path, name: str, doc: object) -> str:
    p = tmp_path / name
    p.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return str(p)


def test_txn_through_the_cli(shared_cluster: ProcCluster, run_cli: RunCli, tmp_path: Path) -> None:
    addr = shared_cluster.addr
    assert run_cli("set", "acct", "10", addr=addr).returncode == 0
    ok = {
        "compare": [
            {"key": "acct", "target": "value", "op": "==", "value": "10"},
            {"key": "lock", "target": "absent"},
        ],
        "success": [
            {"op": "put", "key": "lock", "value": "me"},
            {"op": "incr", "key": "acct", "by": -3},
            {"op": "get", "key": "acct"},
            {"op": "put", "key_b64": "AP8=", "value_b64": "//8="},
        ],
        "failure": [{"op": "get", "key": "lock"}],
    }
    r = run_cli("txn", write(tmp_path, "ok.json", ok), addr=addr)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.decode().splitlines()
    assert lines[0].startswith("SUCCESS revision ")
    assert lines[1:] == ["OK", "7", "acct\t7", "OK"]
    rev = int(lines[0].split()[-1])

    # the same txn again: the lock exists now, so the failure ops run; exit 1, JSON output
    r = run_cli("txn", "--json", write(tmp_path, "ok.json", ok), addr=addr)
    assert r.returncode == 1, r.stderr
    out = json.loads(r.stdout)
    assert out["succeeded"] is False and out["revision"] > rev
    [got] = out["results"]
    assert got["op"] == "get" and got["key"] == "lock" and got["value"] == "me"
    assert got["create_revision"] == got["mod_revision"] == rev and got["version"] == 1

    # bad input: one line on stderr, exit 2, nothing sent
    for name, doc, msg in [
        ("garbage.json", "{not json", "bad txn: not valid JSON"),
        ("badop.json", {"success": [{"op": "frob"}]}, "success[0].op: must be one of put"),
        (
            "twice.json",
            {"success": [{"op": "put", "key": "a", "value": ""}, {"op": "delete", "key": "a"}]},
            "key b'a' is written twice",
        ),
        ("b64.json", {"success": [{"op": "get", "key_b64": "!!"}]}, "key_b64: not valid base64"),
    ]:
        r = run_cli("txn", write(tmp_path, name, doc), addr=addr)
        assert r.returncode == 2, (name, r.stderr)
        err = r.stderr.decode()
        assert msg in err and err.count("\n") == 1, err

    # an op the state machine refuses: exit 2, and nothing of the txn applied
    bad = {"success": [{"op": "put", "key": "other", "value": "x"}, {"op": "incr", "key": "lock"}]}
    r = run_cli("txn", write(tmp_path, "notint.json", bad), addr=addr)
    assert r.returncode == 2
    assert "value is not an integer or out of range" in r.stderr.decode()
    assert run_cli("get", "other", addr=addr).returncode == 1

    # a missing file: exit 2
    r = run_cli("txn", str(tmp_path / "nope.json"), addr=addr)
    assert r.returncode == 2 and b"cannot read" in r.stderr


def test_revisions_through_the_client(shared_cluster: ProcCluster) -> None:
    with rkv.connect_sync(shared_cluster.addrs) as c:
        c.put("rv/a", "1")
        items, rev = c.scan_revision("rv/")
        assert items == [(b"rv/a", b"1")] and rev is not None
        r = c.txn(
            [rkv.Cmp.mod_revision("rv/a", "<", rev + 1)],
            [rkv.TxnOp.put("rv/b", "2"), rkv.TxnOp.get("rv/a")],
        )
        assert r.succeeded and r.revision > rev
        kv = r.results[1]
        assert isinstance(kv, rkv.KeyValue) and kv.value == b"1" and kv.mod_revision <= rev
        items, rev2 = c.scan_revision("rv/")
        assert rev2 is not None and rev2 >= r.revision
        assert items == [(b"rv/a", b"1"), (b"rv/b", b"2")]
        assert c.incr("rv/n", 5) == 5 and c.incr("rv/n") == 6
        value, rev3 = c.get_revision("rv/n")
        assert value == b"6" and rev3 is not None and rev3 > rev2
