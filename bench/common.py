"""What every benchmark command shares: fresh clusters in temp folders, host facts, JSON out.

Owns: `fresh_cluster` (start a driver's 3 nodes in a new temp folder on a real disk, wait
until it serves, and always stop and delete it), the host/meta block of every results file,
and writing results atomically. Must not measure: each command measures what it is about.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import trio

from bench.drivers import Driver, make_driver
from bench.stats import SCHEMA

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def fs_type(path: Path) -> str:
    """The filesystem type holding `path` (from /proc/mounts), "?" when unknown."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return "?"
    best, kind = "", "?"
    p = str(path.resolve())
    for line in mounts:
        parts = line.split()
        if len(parts) >= 3:
            mnt = parts[1]
            if (p == mnt or p.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                best, kind = mnt, parts[2]
    return kind


def host_info(tmp_dir: Path | None = None) -> dict[str, Any]:
    cpu_model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "loadavg_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if tmp_dir is not None:
        info["data_fs"] = fs_type(tmp_dir)
    return info


def warn_if_tmpfs(tmp_dir: Path) -> None:
    if fs_type(tmp_dir) in ("tmpfs", "ramfs"):
        print(
            f"warning: {tmp_dir} is {fs_type(tmp_dir)}: fsync costs nothing there, so durable "
            "systems look faster than on a disk; pass --tmp-dir on a real disk",
            file=sys.stderr,
        )


@contextlib.contextmanager
def fresh_cluster(
    series: str,
    tmp_dir: Path | None,
    *,
    ready_timeout: float = 60.0,
    keep: bool = False,
    configure: Callable[[Driver], None] | None = None,
) -> Iterator[Driver]:
    """`configure(driver)` runs before the cluster starts (e.g. extra server options)."""
    driver = make_driver(series)
    if configure is not None:
        configure(driver)
    workdir = Path(tempfile.mkdtemp(prefix=f"rkv-bench-{series.replace(':', '-')}-", dir=tmp_dir))
    try:
        driver.start(workdir)
        trio.run(driver.wait_ready, ready_timeout)
        yield driver
    finally:
        driver.stop(remove=not keep)


def envelope(kind: str, meta: dict[str, Any], **body: Any) -> dict[str, Any]:
    return {"schema": SCHEMA, "kind": kind, "meta": meta, **body}


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    os.replace(tmp, path)


def stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def series_meta(series: list[str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for s in series:
        d = make_driver(s)
        try:
            out[d.label] = {
                "version": d.version(),
                "durability": d.durability(),
                "generator": d.generator(),
                "client": d.client(),
            }
        except Exception as e:  # a missing system is reported, not fatal here
            out[d.label] = {"version": f"unavailable: {e}", "durability": "?"}
    return out


def describe_error(e: BaseException) -> str:
    """One line for a results file, looking inside exception groups (trio nurseries)."""
    while isinstance(e, BaseExceptionGroup) and len(e.exceptions) == 1:
        e = e.exceptions[0]
    if isinstance(e, BaseExceptionGroup):
        return "; ".join(describe_error(x) for x in e.exceptions)
    return f"{type(e).__name__}: {e}"
