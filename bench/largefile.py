"""Large file: upload then download one file (256 MiB by default) and report MB/s each way.

Owns: making the test file (random bytes on the data disk), the generic chunked transfer for
systems without a file API (chunk i under "<key>/<i>", then a manifest with size, chunk count
and sha256 written last; `window` chunks in flight, one client each), the sha256 check of the
download, and the results file. A driver with its own file API (rkv's upload/download) offers
`upload_file` / `download_file` and is measured through it. MB = 10**6 bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from bench.common import (
    describe_error,
    envelope,
    fresh_cluster,
    host_info,
    series_meta,
    stamp,
    write_json,
)
from bench.drivers import KV, Driver

REQUEST_TIMEOUT = 60.0
ATTEMPTS = 10
RETRIES = {"n": 0}


async def _retry(fn: Any, *args: Any) -> Any:
    """Chunk puts and gets are idempotent: retry them like a real client would (counted)."""
    for attempt in range(ATTEMPTS):
        try:
            with trio.fail_after(REQUEST_TIMEOUT):
                return await fn(*args)
        except Exception:
            if attempt == ATTEMPTS - 1:
                raise
            RETRIES["n"] += 1
            await trio.sleep(min(2.0, 0.05 * 2**attempt))
    raise AssertionError("unreachable")


def make_file(path: Path, size: int, seed: int) -> str:
    """Write `size` pseudo-random bytes to `path`; returns their sha256 hex."""
    import random

    rng = random.Random(seed)
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            block = rng.randbytes(min(left, 1 << 20))
            h.update(block)
            f.write(block)
            left -= len(block)
    return h.hexdigest()


async def _with_clients(driver: Driver, n: int) -> list[KV]:
    return [await type(driver).connect(driver.spec(), i) for i in range(n)]


async def _close(clients: list[KV]) -> None:
    # Reverse order: a client may hold a nursery opened in this task (rkv's does).
    for c in reversed(clients):
        with trio.move_on_after(2):
            # Best effort at teardown.
            with contextlib.suppress(Exception):
                await c.aclose()


async def upload_chunked(
    driver: Driver, key: bytes, path: Path, chunk: int, window: int
) -> dict[str, Any]:
    size = path.stat().st_size
    n_chunks = max(1, -(-size // chunk))
    clients = await _with_clients(driver, window)
    h = hashlib.sha256()
    send, recv = trio.open_memory_channel[tuple[int, bytes]](window)

    async def reader() -> None:
        async with send:
            with open(path, "rb") as f:
                for i in range(n_chunks):
                    data = f.read(chunk)
                    h.update(data)
                    await send.send((i, data))

    async def writer(kv: KV, recv: trio.MemoryReceiveChannel[tuple[int, bytes]]) -> None:
        async with recv:
            async for i, data in recv:
                await _retry(kv.put, key + b"/%d" % i, data)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            for kv in clients:
                nursery.start_soon(writer, kv, recv.clone())
            await recv.aclose()
        manifest = {"size": size, "chunks": n_chunks, "sha256": h.hexdigest()}
        await _retry(clients[0].put, key + b"/manifest", json.dumps(manifest).encode())
    finally:
        await _close(clients)
    return manifest


async def download_chunked(driver: Driver, key: bytes, dest: Path, window: int) -> dict[str, Any]:
    clients = await _with_clients(driver, window)
    try:
        raw = await _retry(clients[0].get, key + b"/manifest")
        if raw is None:
            raise RuntimeError("manifest not found")
        manifest = json.loads(raw)
        n_chunks = int(manifest["chunks"])
        # Fetch in order with `window` in flight; write in order so the hash is streamed.
        results: dict[int, bytes] = {}
        next_write = 0
        h = hashlib.sha256()
        ready = trio.Condition()
        counter = {"next": 0}

        async def fetch(kv: KV) -> None:
            while counter["next"] < n_chunks:
                i = counter["next"]
                counter["next"] += 1
                data = await _retry(kv.get, key + b"/%d" % i)
                if data is None:
                    raise RuntimeError(f"chunk {i} missing")
                async with ready:
                    # Bound memory: wait while too far ahead of the writer.
                    while i - next_write > 4 * window:
                        await ready.wait()
                    results[i] = data
                    ready.notify_all()

        with open(dest, "wb") as f:

            async def write_out() -> None:
                nonlocal next_write
                while next_write < n_chunks:
                    async with ready:
                        while next_write not in results:
                            await ready.wait()
                        data = results.pop(next_write)
                        next_write += 1
                        ready.notify_all()
                    h.update(data)
                    f.write(data)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(write_out)
                for kv in clients:
                    nursery.start_soon(fetch, kv)
        if h.hexdigest() != manifest["sha256"]:
            raise RuntimeError("downloaded file does not match its sha256")
        return dict(manifest)
    finally:
        await _close(clients)


async def _one(
    driver: Driver, path: Path, sha: str, chunk: int, window: int, timeout: float
) -> dict[str, Any]:
    try:
        with trio.fail_after(timeout):
            return await _transfer(driver, path, sha, chunk, window)
    except trio.TooSlowError:
        raise TimeoutError(f"upload + download not done after {timeout:.0f}s") from None


async def _transfer(
    driver: Driver, path: Path, sha: str, chunk: int, window: int
) -> dict[str, Any]:
    size = path.stat().st_size
    key = b"bench/largefile"
    dest = path.with_suffix(".down")
    native_up = getattr(driver, "upload_file", None)
    native_down = getattr(driver, "download_file", None)
    RETRIES["n"] = 0
    t0 = time.perf_counter()
    if native_up is not None:
        await native_up(key, path)
    else:
        await upload_chunked(driver, key, path, chunk, window)
    up = time.perf_counter() - t0
    t0 = time.perf_counter()
    if native_down is not None:
        await native_down(key, dest)
    else:
        await download_chunked(driver, key, dest, window)
    down = time.perf_counter() - t0
    got = hashlib.sha256(dest.read_bytes()).hexdigest()
    dest.unlink()
    if got != sha:
        raise RuntimeError("downloaded bytes differ from the uploaded file")
    return {
        "bytes": size,
        "upload_s": round(up, 3),
        "download_s": round(down, 3),
        "upload_MBps": round(size / up / 1e6, 2),
        "download_MBps": round(size / down / 1e6, 2),
        "method": "native" if native_up is not None else f"chunked {chunk} B x {window}",
        "sha256_ok": True,
        "retries": RETRIES["n"],
    }


def largefile(
    *,
    series: list[str],
    size: int,
    chunk: int,
    window: int,
    runs: int,
    seed: int,
    out_dir: Path,
    tmp_dir: Path | None,
    timeout: float = 1800.0,
) -> Path:
    out = out_dir / f"largefile-{stamp()}.json"
    meta = {
        "host": host_info(tmp_dir or Path("/tmp")),
        "systems": series_meta(series),
        "args": {
            "size": size,
            "chunk": chunk,
            "window": window,
            "runs": runs,
            "timeout_s": timeout,
        },
    }
    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="rkv-bench-file-", dir=tmp_dir) as d:
        path = Path(d) / "payload.bin"
        sha = make_file(path, size, seed)
        for run in range(1, runs + 1):
            for s in series:
                try:
                    with fresh_cluster(s, tmp_dir) as driver:
                        r = trio.run(_one, driver, path, sha, chunk, window, timeout)
                except Exception as e:  # recorded; the other systems go on
                    r = {"error": describe_error(e)}
                r["run"] = run
                results.setdefault(s, []).append(r)
                print(
                    f"{s:20s} run {run}: upload {r.get('upload_MBps', '-')} MB/s, download "
                    f"{r.get('download_MBps', '-')} MB/s {r.get('error', '')}",
                    flush=True,
                )
                write_json(out, envelope("largefile", meta, results=results))
        os.sync()
    print(f"results: {out}")
    return out
