"""User mistakes at the command line, for every command: one line on stderr, the documented
exit code, never a traceback. Complements tests/e2e/test_cli.py (which covers the mistakes
that need a running cluster); none of these cases needs one: a mistake must be reported
before anything is contacted (the address given is a closed port)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rkv.cli import Exit, app
from rkv.errors import ExitCode


def closed_addr() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


# (args, exit code, stderr fragment); "{dead}" is a closed port, "{tmp}" the test's tmp dir
# (holding a file "f" and a directory "d").
CASES: list[tuple[list[str], int, str]] = [
    # address forms, on several commands
    (["--addr", "127.0.0.1", "set", "k", "v"], Exit.USAGE, "address"),
    (["--addr", "127.0.0.1:", "get", "k"], Exit.USAGE, "address"),
    (["--addr", ":5000", "delete", "k"], Exit.USAGE, "address"),
    (["--addr", "127.0.0.1:0", "scan"], Exit.USAGE, "port"),
    (["--addr", "127.0.0.1:-1", "status"], Exit.USAGE, "address"),
    (["--addr", "127.0.0.1:port", "status"], Exit.USAGE, "address"),
    (["--addr", "[::1:5000", "get", "k"], Exit.USAGE, "address"),
    (["--addr", "ftp://127.0.0.1:5000", "get", "k"], Exit.USAGE, "address"),
    (["--addr", "127.0.0.1:65536", "cas", "k", "v", "--absent"], Exit.USAGE, "range"),
    (["--timeout", "0", "--addr", "{dead}", "get", "k"], Exit.USAGE, "Invalid value"),
    (["--timeout", "soon", "--addr", "{dead}", "get", "k"], Exit.USAGE, "Invalid value"),
    # missing arguments, every client command
    (["--addr", "{dead}", "set", "k"], Exit.USAGE, "Missing argument"),
    (["--addr", "{dead}", "set"], Exit.USAGE, "Missing argument"),
    (["--addr", "{dead}", "delete"], Exit.USAGE, "Missing argument"),
    (["--addr", "{dead}", "cas", "k"], Exit.USAGE, "Missing argument"),
    (["--addr", "{dead}", "upload", "k"], Exit.USAGE, "Missing argument"),
    (["--addr", "{dead}", "download", "k"], Exit.USAGE, "Missing argument"),
    (["--addr", "{dead}", "backup"], Exit.USAGE, "Missing argument"),
    (["restore"], Exit.USAGE, "Missing argument"),
    (["--addr", "{dead}", "lock", "n"], Exit.USAGE, "Missing argument"),
    (["--addr", "{dead}", "elect"], Exit.USAGE, "Missing argument"),
    # bad option values
    (["--addr", "{dead}", "scan", "--limit", "0"], Exit.USAGE, "Invalid value"),
    (["--addr", "{dead}", "scan", "--limit", "many"], Exit.USAGE, "Invalid value"),
    (["--addr", "{dead}", "status", "--interval", "0"], Exit.USAGE, "Invalid value"),
    (["--addr", "{dead}", "get", "k", "--frobnicate"], Exit.USAGE, "No such option"),
    (["--addr", "{dead}", "lock", "n", "--ttl", "0", "--", "true"], Exit.USAGE, "Invalid value"),
    (
        ["--addr", "{dead}", "lock", "n", "--timeout", "0", "--", "true"],
        Exit.USAGE,
        "Invalid value",
    ),
    (["--addr", "{dead}", "lock", "", "--", "true"], Exit.USAGE, "name must be 1..380 bytes"),
    (["--addr", "{dead}", "elect", "n", "x", "--listen"], Exit.USAGE, "--listen takes no PROPOSAL"),
    (["--addr", "{dead}", "lock", "n", "--", "true"], Exit.UNAVAILABLE, "unavailable"),
    # local files
    (["--addr", "{dead}", "upload", "k", "{tmp}/no-such-file"], Exit.USAGE, "no such file"),
    # (the message says "no such file" for a directory: misleading, but the code is right)
    (["--addr", "{dead}", "upload", "k", "{tmp}/d"], Exit.USAGE, "{tmp}/d"),
    (["--addr", "{dead}", "download", "k", "{tmp}/d"], Exit.USAGE, "directory"),
    (["--addr", "{dead}", "download", "k", "{tmp}/no-dir/x"], Exit.USAGE, "no such directory"),
    (["--addr", "{dead}", "backup", "{tmp}/d"], Exit.USAGE, "directory"),
    (["restore", "{tmp}/no-such-backup", "--data-dir", "{tmp}/new"], Exit.USAGE, "no such file"),
    (["restore", "{tmp}/f", "--check"], Exit.INTEGRITY, "backup"),
    # unknown command, serve and cluster mistakes
    (["frobnicate"], Exit.USAGE, "No such command"),
    (["serve", "--port", "-5"], Exit.USAGE, "port"),
    (["serve", "--peers", "127.0.0.1:1,nope"], Exit.USAGE, "invalid address"),
    (["serve", "--advertise", "0.0.0.0:1"], Exit.USAGE, "wildcard"),
    (["serve", "--data-dir", "{tmp}/f", "--port", "1"], ExitCode.STORE_ERROR, "data dir"),
    (["serve", "--host", "999.1.1.1", "--data-dir", "{tmp}/n"], ExitCode.PORT_IN_USE, "listen"),
    (["cluster", "--nodes", "0"], Exit.USAGE, "Invalid value"),
    (["cluster", "--base-port", "70000"], Exit.USAGE, "Invalid value"),
]


@pytest.mark.parametrize(("args", "code", "fragment"), CASES, ids=lambda v: str(v)[:50])
def test_cli_mistake(tmp_path: Path, args: list[str], code: int, fragment: str) -> None:
    (tmp_path / "f").write_bytes(b"not a backup")
    (tmp_path / "d").mkdir()
    argv = [a.replace("{dead}", closed_addr()).replace("{tmp}", str(tmp_path)) for a in args]
    if argv[0] == "--addr":
        argv = ["--timeout", "2", *argv]  # should never be needed: nothing is contacted
    r = CliRunner().invoke(app, argv)
    out = r.stdout + r.stderr
    assert "Traceback" not in out
    assert r.exit_code == code, (argv, r.exit_code, out)
    assert fragment.replace("{tmp}", str(tmp_path)).lower() in r.stderr.lower(), r.stderr
    if fragment not in ("Missing argument", "No such command", "No such option", "Invalid value"):
        # typer's own usage errors come in a box with a usage line; ours are one line
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_group_without_subcommand_prints_usage(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["--addr", closed_addr(), "leader"])
    assert r.exit_code == Exit.USAGE
    assert "Usage" in r.stdout and "Traceback" not in r.stdout + r.stderr
