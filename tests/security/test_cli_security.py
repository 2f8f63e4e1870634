"""The CLI with a cluster token: a real `rkv serve --cluster-token` process and client
commands against it (real processes where stderr and the exit code are the point)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import TOKEN, WRONG, free_ports

ROOT = Path(__file__).resolve().parents[2]


def env(**extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k not in ("RKV_ADDR", "RKV_CLUSTER_TOKEN")}
    e["PYTHONPATH"] = str(ROOT)
    e.update(extra)
    return e


def rkv(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rkv", *args],
        cwd=ROOT,
        env=env(**extra),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


@contextlib.contextmanager
def serving(d: Path, *args: str, **extra: str) -> Iterator[str]:
    """A one-node cluster `rkv serve ARGS` in `d` with a cluster token (from `extra`'s
    environment or ARGS), up once a client with the token can write; its address."""
    (port,) = free_ports(1)
    log = (d / "log").open("w")
    serve = ["serve", "--port", str(port), "--data-dir", str(d / "data"), *args]
    proc = subprocess.Popen(
        [sys.executable, "-m", "rkv", *serve],
        cwd=ROOT,
        env=env(**extra),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    addr = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while rkv(
            "--addr", addr, "--timeout", "2", "set", "ready", "1", RKV_CLUSTER_TOKEN=TOKEN
        ).returncode:
            assert proc.poll() is None, (d / "log").read_text()
            assert time.monotonic() < deadline, "node did not come up"
            time.sleep(0.2)
        yield addr
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()
    # The token never reached the node's log (it logs a fingerprint instead).
    text = (d / "log").read_text()
    assert "cluster token on (fingerprint" in text
    assert TOKEN not in text


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A one-node cluster whose token comes from the environment (the recommended way)."""
    with serving(tmp_path_factory.mktemp("cli-node"), RKV_CLUSTER_TOKEN=TOKEN) as addr:
        yield addr


@pytest.mark.parametrize(
    ("args", "extra"),
    [
        pytest.param(("--token", WRONG), {}, id="wrong --token"),
        pytest.param((), {"RKV_CLUSTER_TOKEN": WRONG}, id="wrong env token"),
        pytest.param((), {}, id="no token"),
    ],
)
def test_bad_token_is_one_line_and_exit_6(
    node: str, args: tuple[str, ...], extra: dict[str, str]
) -> None:
    r = rkv("--addr", node, *args, "get", "ready", **extra)
    assert r.returncode == 6, r.stderr
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("rkv: authentication failed:")
    assert "Traceback" not in r.stderr
    assert WRONG not in r.stderr


def test_right_token_works(node: str) -> None:
    r = rkv("--addr", node, "--token", TOKEN, "get", "ready")
    assert (r.returncode, r.stdout) == (0, "1\n"), r.stderr


def test_serve_refuses_a_short_token(tmp_path: Path) -> None:
    r = rkv("serve", "--port", "1", "--data-dir", str(tmp_path), "--cluster-token", "short")
    assert r.returncode == 2
    assert "16..1024" in r.stderr and "Traceback" not in r.stderr


def test_serve_reads_the_token_from_a_file(tmp_path: Path) -> None:
    """--cluster-token-file: the token is in no process list or environment; the node then
    serves only clients that know it."""
    token_file = tmp_path / "token"
    token_file.write_text(f"\n  {TOKEN}\n")  # whitespace around it is ignored
    with serving(tmp_path, "--cluster-token-file", str(token_file)) as addr:
        assert rkv("--addr", addr, "get", "ready").returncode == 6  # no token: refused
        assert rkv("--addr", addr, "--token", WRONG, "get", "ready").returncode == 6
        r = rkv("--addr", addr, "--token", TOKEN, "get", "ready")
        assert (r.returncode, r.stdout) == (0, "1\n"), r.stderr


@pytest.mark.parametrize(
    ("content", "args", "extra", "says"),
    [
        pytest.param("", (), {}, "is empty", id="empty file"),
        pytest.param(None, (), {}, "cannot read --cluster-token-file", id="missing file"),
        pytest.param(
            TOKEN, ("--cluster-token", TOKEN), {}, "give the cluster token once", id="both"
        ),
        pytest.param(
            TOKEN,
            (),
            {"RKV_CLUSTER_TOKEN": TOKEN},
            "give the cluster token once",
            id="env and file",
        ),
    ],
)
def test_serve_token_file_mistakes_are_one_line(
    tmp_path: Path, content: str | None, args: tuple[str, ...], extra: dict[str, str], says: str
) -> None:
    token_file = tmp_path / "token"
    if content is not None:
        token_file.write_text(content)
    r = rkv(
        "serve",
        "--port",
        "1",
        "--data-dir",
        str(tmp_path / "d"),
        "--cluster-token-file",
        str(token_file),
        *args,
        **extra,
    )
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], r.stderr
    assert TOKEN not in r.stderr and "Traceback" not in r.stderr
