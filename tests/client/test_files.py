"""File upload/download through the client: chunking, atomic commit, verification, memory."""

from __future__ import annotations

import hashlib
import io
import os
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import trio

import rkv
from rkv.client import PIPELINE

from .fake import FakeCluster

FAST: dict[str, Any] = {"timeout": 5.0, "attempt_timeout": 0.5, "backoff_base": 0.01}


@pytest.mark.parametrize(
    ("size", "chunk_size", "chunks"),
    [(0, 100, 0), (1, 100, 1), (100, 100, 1), (101, 100, 2), (10_000, 999, 11)],
)
async def test_upload_download_roundtrip(
    cluster: FakeCluster, tmp_path: Path, size: int, chunk_size: int, chunks: int
) -> None:
    data = os.urandom(size)
    src, dst = tmp_path / "src.bin", tmp_path / "out" / "dst.bin"
    src.write_bytes(data)
    dst.parent.mkdir()
    async with rkv.connect(cluster.addrs, **FAST) as c:
        info = await c.upload("f", src, chunk_size=chunk_size)
        assert info == {"size": size, "chunks": chunks, "sha256": hashlib.sha256(data).hexdigest()}
        assert all(n <= chunk_size for n in cluster.chunk_sizes)
        assert len(cluster.chunk_sizes) == chunks
        assert await c.download("f", dst) == info
        assert await c.file_info("f") == info
    assert dst.read_bytes() == data
    assert os.listdir(dst.parent) == ["dst.bin"]  # no partial file left behind


async def test_streams_and_progress(cluster: FakeCluster) -> None:
    data = os.urandom(50_000)
    seen_up: list[tuple[int, int | None]] = []
    seen_down: list[tuple[int, int | None]] = []
    out = io.BytesIO()
    async with rkv.connect(cluster.addrs, **FAST) as c:
        await c.upload(
            b"bin\x00key",
            io.BytesIO(data),
            chunk_size=4096,
            progress=lambda d, t: seen_up.append((d, t)),
        )
        await c.download(b"bin\x00key", out, progress=lambda d, t: seen_down.append((d, t)))
    assert out.getvalue() == data
    assert seen_up[-1] == (50_000, 50_000)
    assert seen_down[-1] == (50_000, 50_000)
    assert [d for d, _ in seen_down] == sorted(d for d, _ in seen_down)
    # Downloads are pipelined, but never more than PIPELINE chunks at once.
    assert 1 < cluster.max_chunk_reads_inflight <= PIPELINE


async def test_upload_with_dropped_replies_applies_each_chunk_once(
    cluster: FakeCluster, tmp_path: Path
) -> None:
    data = os.urandom(20_000)
    cluster.drop_write_replies = 3
    async with rkv.connect(cluster.addrs, **FAST) as c:
        await c.upload("f", io.BytesIO(data), chunk_size=1000)
        out = io.BytesIO()
        await c.download("f", out)
    assert out.getvalue() == data
    assert set(cluster.state.applied.values()) == {1}
    assert len(cluster.state.applied) == 21  # 20 chunks + the commit
    assert cluster.state.stale_seqs == 0


async def test_checksum_mismatch_raises_and_removes_partial_file(
    cluster: FakeCluster, tmp_path: Path
) -> None:
    dst = tmp_path / "dst.bin"
    dst.write_bytes(b"previous content")
    async with rkv.connect(cluster.addrs, **FAST) as c:
        await c.upload("f", io.BytesIO(os.urandom(5000)), chunk_size=1000)
        cluster.corrupt_reads = True
        with pytest.raises(rkv.IntegrityError, match="SHA-256 mismatch"):
            await c.download("f", dst)
    # The destination is untouched and no partial output remains.
    assert dst.read_bytes() == b"previous content"
    assert sorted(os.listdir(tmp_path)) == ["dst.bin"]


async def test_download_of_missing_file(cluster: FakeCluster, tmp_path: Path) -> None:
    async with rkv.connect(cluster.addrs, **FAST) as c:
        with pytest.raises(rkv.NotFound):
            await c.download("nope", tmp_path / "x")
        assert await c.file_info("nope") is None
    assert os.listdir(tmp_path) == []


async def test_file_overwritten_during_download(cluster: FakeCluster) -> None:
    async with rkv.connect(cluster.addrs, **FAST) as c:
        await c.upload("f", io.BytesIO(b"a" * 10_000), chunk_size=100)
        orig = cluster._read

        async def overwrite_midway(frame: dict[str, Any]) -> dict[str, Any]:
            if frame["t"] == "file_read" and frame["n"] == 50:
                sha = hashlib.sha256(b"b").digest()
                cluster.state.files[b"f"] = (1, sha, [b"b"])
            return await orig(frame)

        cluster._read = overwrite_midway  # type: ignore[method-assign]
        with pytest.raises(rkv.Changed):
            await c.download("f", io.BytesIO())


async def test_delete_file(cluster: FakeCluster) -> None:
    async with rkv.connect(cluster.addrs, **FAST) as c:
        await c.upload("f", io.BytesIO(b"x"))
        assert await c.delete_file("f") is True
        assert await c.delete_file("f") is False
        assert await c.file_info("f") is None


@pytest.mark.parametrize("chunk_size", [0, -1, 64 << 20])
async def test_bad_chunk_size(cluster: FakeCluster, chunk_size: int) -> None:
    async with rkv.connect(cluster.addrs, **FAST) as c:
        with pytest.raises(ValueError, match="chunk_size"):
            await c.upload("f", io.BytesIO(b"x"), chunk_size=chunk_size)


class _VirtualFiles:
    """A node holding no data: chunk n of the file is a pure function of n, and uploads are
    hashed as they arrive. So the only big allocations in this process are the client's."""

    def __init__(self, size: int, chunk: int) -> None:
        self.size, self.chunk = size, chunk
        self.chunks = -(-size // chunk)
        h = hashlib.sha256()
        for n in range(self.chunks):
            h.update(self.data(n))
        self.sha = h.digest()
        self.received: dict[int, int] = {}
        self.upload_hash = hashlib.sha256()
        self._pending: dict[int, bytes] = {}
        self._next = 0

    def data(self, n: int) -> bytes:
        length = min(self.chunk, self.size - n * self.chunk)
        return bytes([n % 251]) * length

    async def handle(self, i: int, frame: dict[str, Any]) -> dict[str, Any]:
        t = frame["t"]
        if t == "file_chunk":
            self._pending[frame["n"]] = frame["data"]
            # Only reordering within the client's window is ever buffered.
            assert len(self._pending) <= PIPELINE
            while self._next in self._pending:
                self.upload_hash.update(self._pending.pop(self._next))
                self._next += 1
            return {"t": "ok"}
        if t == "file_commit":
            assert frame["sha"] == self.upload_hash.digest()
            return {"t": "ok"}
        if t == "file_meta":
            return {"t": "ok", "size": self.size, "chunks": self.chunks, "sha": self.sha}
        if t == "file_read":
            return {"t": "ok", "data": self.data(frame["n"])}
        return {"t": "error", "code": "bad_request", "msg": t}


class _Zeros(io.RawIOBase):
    """A readable stream of `size` bytes that holds none of them."""

    def __init__(self, size: int, vf: _VirtualFiles) -> None:
        self.left, self.vf, self.n = size, vf, 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        # The client reads exactly chunk_size at a time, so chunks line up with vf.data.
        assert size == self.vf.chunk
        if self.left <= 0:
            return b""
        out = self.vf.data(self.n)
        self.n += 1
        self.left -= len(out)
        return out


class _Sink(io.RawIOBase):
    def __init__(self) -> None:
        self.h = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.h.update(b)
        self.size += len(b)
        return len(b)


async def test_memory_stays_bounded_for_large_files(nursery: trio.Nursery) -> None:
    """128 MiB up and down with 1 MiB chunks: the peak of Python allocations must stay near
    the pipeline window (a few chunks, their frames and copies), far below the file size."""
    size, chunk = 128 << 20, 1 << 20
    vf = _VirtualFiles(size, chunk)
    cluster = FakeCluster(1)
    cluster.handle = vf.handle  # type: ignore[method-assign]
    await nursery.start(cluster.run)
    sink = _Sink()
    tracemalloc.start()
    try:
        async with rkv.connect(cluster.addrs, **FAST) as c:
            await c.upload("big", _Zeros(size, vf), chunk_size=chunk)
            await c.download("big", sink)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sink.size == size and sink.h.digest() == vf.sha
    assert vf._next == vf.chunks
    # Generous: ~PIPELINE chunks on each side of the loopback plus encode/decode copies
    # (~4 * PIPELINE chunks measured); the file is several times that.
    bound = (4 * PIPELINE + 8) * chunk
    assert bound <= size // 3
    assert peak < bound, f"peak {peak >> 20} MiB for a {size >> 20} MiB file"
