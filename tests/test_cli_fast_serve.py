"""`rkv serve`'s fast start (rkv.cli.fastserve: `fast_kwargs`; rkv.cli.serve:
`import_trio_testing_without_pytest`).

The fast parser must call serve_cmd exactly as typer would, or step aside (None) so that
typer parses and reports; and a `python -m rkv serve` process must not load what it skips
(pydantic, pytest). `import rkv` must still give the client API.
"""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

import rkv
from rkv.cli.fastserve import fast_kwargs
from rkv.cli.serve import serve_cmd


def typer_kwargs(args: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """What typer passes to serve_cmd for `rkv serve ARGS` (serve_cmd itself is not run)."""
    seen: list[dict[str, Any]] = []

    @functools.wraps(serve_cmd)
    def probe(**kwargs: Any) -> None:
        seen.append(kwargs)

    app = typer.Typer(add_completion=False)
    app.command("serve")(probe)

    @app.callback()
    def _group() -> None:  # keep "serve" a subcommand, as in rkv.cli.app
        pass

    result = CliRunner().invoke(app, ["serve", *args], env=env)
    assert result.exit_code == 0, result.output
    assert len(seen) == 1
    return seen[0]


AGREE: list[list[str]] = [
    [],
    # what bench/drivers/rkv.py and `rkv cluster` run
    ["--host", "127.0.0.1", "--port", "50051", "--peers", "127.0.0.1:50052,127.0.0.1:50053"],
    ["--port=50052", "--peers=http://a:1,http://b:2", "--data-dir=/tmp/x", "--http-port=0"],
    ["-p", "7000", "-d", "d", "--id", "h:7000", "--cluster-id", "c1", "--http-port", "65535"],
    ["--advertise", "h:1", "--port", "1", "--port", "2"],  # the last one wins
    ["--join", "a:1,b:2", "--learner", "--learner"],
    ["--tls-cert", "c.pem", "--tls-key", "k.pem", "--tls-ca", "ca.pem"],
    ["--snapshot-entries", "1", "--snapshot-bytes", "123456789012"],
    ["--upload-ttl", "0"],
    ["--cluster-token", "0123456789abcdef0", "--peers", ""],
    ["--max-connections", "64", "--max-connections-per-source", "8", "--handshake-timeout", "2"],
    ["--frame-timeout=3", "--min-frame-rate", "0", "--idle-timeout", "60"],
]


@pytest.mark.parametrize("args", AGREE, ids=lambda a: " ".join(a) or "(none)")
def test_fast_parse_agrees_with_typer(args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RKV_CLUSTER_TOKEN", raising=False)
    fast = fast_kwargs(serve_cmd, args)
    assert fast is not None, "the fast path must take this command line"
    assert fast == typer_kwargs(args)


@pytest.mark.parametrize(
    ("env", "args"),
    [
        ({"RKV_CLUSTER_TOKEN": "secret-from-the-env!"}, []),
        ({"RKV_CLUSTER_TOKEN": "secret-from-the-env!"}, ["--cluster-token", "given-on-the-line!"]),
        ({"RKV_CLUSTER_TOKEN": ""}, []),  # empty: not set
    ],
)
def test_fast_parse_reads_the_token_variable_as_typer_does(
    env: dict[str, str], args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    fast = fast_kwargs(serve_cmd, args)
    assert fast is not None
    assert fast == typer_kwargs(args, env)


STEP_ASIDE: list[list[str]] = [
    ["--help"],
    ["-h"],
    ["--port", "5000", "--frobnicate"],
    ["--por", "5000"],  # no abbreviations
    ["--no-learner"],
    ["--learner=1"],
    ["--port"],  # missing value
    ["--port", "-5"],
    ["--port", "0x10"],
    ["--port", "\uff15\uff10\uff10\uff10"],  # non-ASCII digits
    ["--port", " 5000"],
    ["--port="],
    ["--http-port", "65536"],  # out of range
    ["--snapshot-entries", "0"],
    ["--upload-ttl", "-1"],
    ["--upload-ttl", "1.5"],
    ["--handshake-timeout", "0"],
    ["--handshake-timeout", "0.5"],
    ["--max-connections", "0"],
    ["--data-dir", ""],
    ["--peers", "--host"],
    ["extra"],
    ["--", "--port", "1"],
    ["-p5000"],
]


@pytest.mark.parametrize("args", STEP_ASIDE, ids=" ".join)
def test_fast_parse_leaves_anything_else_to_typer(args: list[str]) -> None:
    assert fast_kwargs(serve_cmd, args) is None


def _plain(port: int = typer.Option(1, "--port")) -> None: ...
def _required(port: int = typer.Option(..., "--port")) -> None: ...
def _toggle(on: bool = typer.Option(False, "--on/--off")) -> None: ...
def _checked(p: Path = typer.Option(Path("x"), "--p", exists=True)) -> None: ...  # noqa: B008
def _called(port: int = typer.Option(1, "--port", callback=lambda v: v)) -> None: ...
def _positional(key: str = typer.Argument(...)) -> None: ...
def _float(t: float = typer.Option(1.0, "--t")) -> None: ...


@pytest.mark.parametrize(
    "command",
    [_required, _toggle, _checked, _called, _positional, _float],
    ids=lambda f: f.__name__,
)
def test_fast_parse_steps_aside_for_options_it_does_not_handle(command: Any) -> None:
    assert fast_kwargs(_plain, ["--port", "2"]) == {"port": 2}
    assert fast_kwargs(command, ["--port", "2"]) is None
    assert fast_kwargs(command, []) is None


def test_fast_parse_steps_aside_for_shell_completion(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_RKV_COMPLETE", "complete_bash")
    assert fast_kwargs(serve_cmd, ["--port", "1"]) is None


def test_serve_process_loads_neither_pydantic_nor_pytest(tmp_path: Path) -> None:
    """`rkv serve` up to the node runtime (a data dir that is a file stops it right after
    rkv.node is imported and the store is opened), then the modules it loaded."""
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: print(sorted(m for m in ('pytest', 'pydantic', 'rkv.node', "
        "'trio.testing') if m in sys.modules)))\n"
        "sys.argv = ['rkv', 'serve', '--port', '1', '--data-dir', sys.argv[1]]\n"
        "from rkv.cli import main\n"
        "main()\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(not_a_dir)], capture_output=True, text=True, timeout=60
    )
    assert "cannot create data dir" in r.stderr, r.stderr
    assert r.returncode != 0
    assert r.stdout.strip() == "['rkv.node', 'trio.testing']"


def test_trio_testing_works_and_pytest_stays_importable() -> None:
    code = (
        "import sys, trio\n"
        "from rkv.cli.serve import import_trio_testing_without_pytest\n"
        "import_trio_testing_without_pytest()\n"
        "import trio.testing\n"
        "assert 'pytest' not in sys.modules\n"
        "async def main():\n"
        "    await trio.testing.wait_all_tasks_blocked()\n"
        "trio.run(main)\n"
        "import pytest\n"
        "print(pytest.__name__)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "pytest"


def test_import_rkv_gives_the_client_api_lazily() -> None:
    code = (
        "import sys, rkv\n"
        "assert set(rkv.__all__) <= set(dir(rkv))\n"
        "assert 'rkv.client' not in sys.modules\n"
        "from rkv import connect_sync\n"
        "import rkv.client\n"
        "assert (rkv.connect, rkv.connect_sync, rkv.Client, rkv.SyncClient) == (rkv.client.connect,"
        " connect_sync, rkv.client.Client, rkv.client.SyncClient)\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"
    with pytest.raises(AttributeError):
        _ = rkv.no_such_name  # type: ignore[attr-defined]
