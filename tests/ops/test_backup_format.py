"""Property tests of the backup file format: what is written verifies, and no single damaged
byte anywhere in a backup file goes unnoticed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rkv.backup import BackupCorrupt, BackupWriter, encode_header, verify


def manifest_for(data: bytes, index: int) -> dict[str, object]:
    return {
        "format": 1,
        "index": index,
        "term": 1,
        "keys": 0,
        "files": 0,
        "data_size": len(data),
        "data_sha256": hashlib.sha256(data).hexdigest(),
        "cluster_id": "c",
        "node_id": "n",
    }


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=2048), index=st.integers(0, 2**63), chunks=st.integers(1, 7))
def test_written_backups_verify(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, index: int, chunks: int
) -> None:
    path = tmp_path_factory.mktemp("w") / "b.rkvbak"
    m = manifest_for(data, index)
    w = BackupWriter(path, m)
    step = max(1, len(data) // chunks)
    for i in range(0, len(data), step):
        w.write(data[i : i + step])
    assert w.finish() == m
    assert verify(path) == m
    assert path.read_bytes() == encode_header(m) + data


@settings(max_examples=150, deadline=None)
@given(
    data=st.binary(min_size=1, max_size=512),
    where=st.floats(0, 1, exclude_max=True),
    mask=st.integers(1, 255),
)
def test_any_flipped_byte_is_refused(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, where: float, mask: int
) -> None:
    raw = bytearray(encode_header(manifest_for(data, 7)) + data)
    raw[int(where * len(raw))] ^= mask
    path = tmp_path_factory.mktemp("f") / "b.rkvbak"
    path.write_bytes(bytes(raw))
    with pytest.raises(BackupCorrupt):
        verify(path)


def test_writer_refuses_data_that_does_not_match(tmp_path: Path) -> None:
    m = manifest_for(b"abc", 1)
    w = BackupWriter(tmp_path / "b", m)
    w.write(b"abd")
    with pytest.raises(BackupCorrupt, match="SHA-256"):
        w.finish()
    w.abort()
    assert list(tmp_path.iterdir()) == []
    w = BackupWriter(tmp_path / "b", m)
    with pytest.raises(BackupCorrupt, match="more data"):
        w.write(b"abcd")
    w.abort()
    with pytest.raises(BackupCorrupt, match="data_sha256"):
        BackupWriter(tmp_path / "b", {**m, "data_sha256": None})
