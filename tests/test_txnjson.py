"""The JSON form of a txn (rkv.txnjson: `rkv txn`, `POST /v1/txn`) and the client's txn
builders (rkv.Cmp, rkv.TxnOp): what each shape reads as, the one-line errors naming the
place, the result's JSON, and the decimal rules of incr_float (rkv.txn)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import rkv
from rkv.txn import (
    Compare,
    KeyValue,
    OpAppend,
    OpDelete,
    OpDeletePrefix,
    OpGet,
    OpIncr,
    OpIncrFloat,
    OpPut,
    Txn,
    TxnResult,
    add_decimal,
    format_decimal,
    parse_int,
)
from rkv.txnjson import TxnJsonError, result_to_json, txn_from_json, txn_from_text


def test_every_shape() -> None:
    doc = {
        "compare": [
            {"key": "a", "target": "value", "op": "==", "value": "x"},
            {"key_b64": "AP8=", "target": "value", "op": "!=", "value_b64": "//8="},
            {"key": "n", "target": "version", "op": ">", "number": 2},
            {"key": "n", "target": "create", "op": "<", "number": 10},
            {"key": "n", "target": "mod", "op": "==", "number": 0},
            {"key": "l", "target": "exists"},
            {"key": "l", "target": "absent"},
        ],
        "success": [
            {"op": "put", "key": "a", "value": "y"},
            {"op": "delete", "key": "b"},
            {"op": "delete_prefix", "prefix": "tmp/"},
            {"op": "get", "key": "a"},
            {"op": "incr", "key": "n"},
            {"op": "incr_float", "key": "f", "by": 0.5},
            {"op": "append", "key": "s", "value_b64": "AA=="},
        ],
    }
    assert txn_from_json(doc) == Txn(
        (
            Compare(b"a", "value", "==", b"x"),
            Compare(b"\x00\xff", "value", "!=", b"\xff\xff"),
            Compare(b"n", "version", ">", 2),
            Compare(b"n", "create", "<", 10),
            Compare(b"n", "mod", "==", 0),
            Compare(b"l", "version", ">", 0),
            Compare(b"l", "version", "==", 0),
        ),
        (
            OpPut(b"a", b"y"),
            OpDelete(b"b"),
            OpDeletePrefix(b"tmp/"),
            OpGet(b"a"),
            OpIncr(b"n", 1),
            OpIncrFloat(b"f", b"0.5"),
            OpAppend(b"s", b"\x00"),
        ),
    )
    assert txn_from_text("{}") == Txn()


@pytest.mark.parametrize(
    ("doc", "msg"),
    [
        ("[", "not valid JSON"),
        ([], "txn: must be an object"),
        ({"compares": []}, "txn: unknown field 'compares'"),
        ({"success": {}}, "success: must be a list"),
        ({"compare": [{"key": "a", "target": "size"}]}, "compare[0].target: must be one of"),
        ({"compare": [{"key": "a", "target": "value", "op": "="}]}, "compare[0].op: must be one"),
        ({"compare": [{"target": "absent"}]}, "compare[0]: key (or key_b64) is missing"),
        (
            {"compare": [{"key": "a", "target": "absent", "op": "=="}]},
            "target absent takes no op",
        ),
        (
            {"compare": [{"key": "a", "target": "version", "op": "==", "number": "1"}]},
            "compare[0].number: a version compare takes an integer >= 0",
        ),
        (
            {"compare": [{"key": "a", "target": "value", "op": "==", "number": 1}]},
            "a value compare takes value",
        ),
        ({"success": [{"op": "put", "key": "a"}]}, "success[0]: value (or value_b64) is missing"),
        ({"failure": [{"op": "get", "key": 1}]}, "failure[0].key: must be a string"),
        ({"success": [{"op": "get", "key": "a", "by": 1}]}, "success[0]: unknown field 'by'"),
        ({"success": [{"op": "get", "key": "a", "key_b64": "YQ=="}]}, "not both"),
        ({"success": [{"op": "incr", "key": "a", "by": 1.5}]}, "success[0].by: must be an integer"),
        ({"success": [{"op": "incr_float", "key": "a", "by": "1x"}]}, "value is not a valid float"),
        ({"success": [{"op": "get", "key": ""}]}, "key must be 1..400 bytes, got 0 bytes"),
        ({"success": [{"op": "delete_prefix", "prefix": ""}]}, "prefix must be 1..400 bytes"),
        (
            {"success": [{"op": "get", "key": "a"}] * 129},
            "a txn has at most 128 success ops, got 129",
        ),
    ],
)
def test_errors_name_the_place(doc: Any, msg: str) -> None:
    text = doc if isinstance(doc, str) else json.dumps(doc)
    with pytest.raises(TxnJsonError) as info:
        txn_from_text(text)
    assert msg in str(info.value)
    assert "\n" not in str(info.value)


def test_result_json() -> None:
    branch = (
        OpPut(b"a", b""),
        OpGet(b"a"),
        OpGet(b"\xff"),
        OpDelete(b"x"),
        OpIncrFloat(b"f", b"1"),
    )
    r = TxnResult(True, 9, (None, KeyValue(b"\xfe", 3, 9, 2), None, 1, b"2.5"))
    assert result_to_json(branch, r) == {
        "succeeded": True,
        "revision": 9,
        "results": [
            {"op": "put"},
            {
                "op": "get",
                "key": "a",
                "found": True,
                "value_b64": "/g==",
                "create_revision": 3,
                "mod_revision": 9,
                "version": 2,
            },
            {"op": "get", "key_b64": "/w==", "found": False},
            {"op": "delete", "deleted": 1},
            {"op": "incr_float", "value": "2.5"},
        ],
    }


def test_client_builders() -> None:
    assert rkv.Cmp.absent("k") == Compare(b"k", "version", "==", 0)
    assert rkv.Cmp.mod_revision(b"k", "<", 5) == Compare(b"k", "mod", "<", 5)
    assert rkv.TxnOp.incr_float("f", 1.5) == OpIncrFloat(b"f", b"1.5")
    with pytest.raises(rkv.BadRequest, match="compare op must be one of"):
        rkv.Cmp.value("k", "=", "v")
    with pytest.raises(rkv.BadRequest, match="incr delta must be in"):
        rkv.TxnOp.incr("k", 1 << 63)


@pytest.mark.parametrize(
    ("cur", "by", "out"),
    [
        (None, b"1.5", b"1.5"),
        (b"10.50", b"0.1", b"10.6"),
        (b"5.0e3", b"2.0e2", b"5200"),
        (b"3", b"-3", b"0"),
        (b"-0.5", b"0.5", b"0"),
        (b"1", b"1e-20", b"1"),  # at most 17 decimals, as Redis prints it
        (b"0", b".125", b"0.125"),
        (b"1e30", b"1", b"1000000000000000000000000000001"),
    ],
)
def test_incr_float_as_redis_prints_it(cur: bytes | None, by: bytes, out: bytes) -> None:
    assert add_decimal(cur, by) == out


@given(
    st.decimals(
        allow_nan=False, allow_infinity=False, places=6, min_value=-(10**12), max_value=10**12
    )
)
def test_formatted_decimals_read_back(d: Decimal) -> None:
    assert Decimal(format_decimal(d).decode()) == d


@pytest.mark.parametrize(
    ("b", "n"),
    [(b"0", 0), (b"-12", -12), (b"9223372036854775807", (1 << 63) - 1), (b"01", None)],
)
def test_integers_as_redis_reads_them(b: bytes, n: int | None) -> None:
    assert parse_int(b) == n
    for bad in (b"", b"+1", b"-0", b" 1", b"1 ", b"1.0", b"9223372036854775808"):
        assert parse_int(bad) is None
