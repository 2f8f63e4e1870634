"""The replay command (rkv.sim.runner.replay_command) for every combination of the options a
run can have: the table of expected commands, the round trip through both command lines
(`rkv sim` and `python -m rkv.sim` are one command, rkv.sim.cmdline: the same options meaning
the same SimParams), and a failing seed whose printed command, run again, prints the same
report."""

from __future__ import annotations

import io
import re
import shlex
from dataclasses import fields, replace
from typing import Any

import pytest
import typer.core
import typer.main
from typer.testing import CliRunner

from rkv.cli import app
from rkv.raft.log import RaftLog
from rkv.sim.cluster import SimParams
from rkv.sim.cmdline import sim_cmd, standalone
from rkv.sim.command import run_sim_command, sim_params
from rkv.sim.runner import DEFAULT, replay_command

BASE = "rkv sim --seeds 1 --first-seed 7"

TABLE: list[tuple[dict[str, Any], str]] = [
    ({}, f"{BASE} --nodes 3"),
    ({"nodes": 5}, f"{BASE} --nodes 5"),
    ({"ticks": 100}, f"{BASE} --nodes 3 --ticks 100"),
    ({"ticks": DEFAULT.ticks}, f"{BASE} --nodes 3"),
    ({"compact_every": 5}, f"{BASE} --nodes 3 --compact-every 5"),
    ({"membership": True}, f"{BASE} --nodes 3 --membership"),
    ({"ticks": 100, "membership": True}, f"{BASE} --nodes 3 --ticks 100 --membership"),
    ({"compact_every": 4, "membership": True}, f"{BASE} --nodes 3 --compact-every 4 --membership"),
    ({"ticks": 300, "compact_every": 5}, f"{BASE} --nodes 3 --ticks 300 --compact-every 5"),
    (
        {"nodes": 7, "ticks": 150, "compact_every": 3, "membership": True},
        f"{BASE} --nodes 7 --ticks 150 --compact-every 3 --membership",
    ),
    # how much trace is kept does not change the run
    ({"trace_len": 10, "full_trace": True}, f"{BASE} --nodes 3"),
    # what no option sets is named, after a shell comment
    (
        {"clients": 0},
        f"{BASE} --nodes 3  # not exact: also SimParams(clients=0), which no option sets",
    ),
    (
        {"ticks": 150, "max_size_per_msg": 1, "check_durable_sends": False},
        f"{BASE} --nodes 3 --ticks 150  # not exact: also SimParams(max_size_per_msg=1, "
        "check_durable_sends=False), which no option sets",
    ),
]


def _params(**overrides: Any) -> SimParams:
    return replace(DEFAULT, **overrides)


def _same_run(a: SimParams, b: SimParams) -> bool:
    skip = {"trace_len", "full_trace"}
    return all(getattr(a, f.name) == getattr(b, f.name) for f in fields(a) if f.name not in skip)


def _args(command: str) -> list[str]:
    words = shlex.split(command, comments=True)
    assert words[:2] == ["rkv", "sim"]
    return words[2:]


def _cli_sim() -> typer.core.TyperCommand:
    """`rkv sim`, as the rkv app has it."""
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    command = group.commands["sim"]
    assert isinstance(command, typer.core.TyperCommand)
    return command


def _parse(command: typer.core.TyperCommand, args: list[str]) -> dict[str, Any]:
    with command.make_context("sim", list(args)) as ctx:
        return ctx.params


def _parsed_run(p: dict[str, Any]) -> tuple[int, int, SimParams]:
    params = sim_params(
        p["nodes"], ticks=p["ticks"], compact_every=p["compact_every"], membership=p["membership"]
    )
    return p["seeds"], p["first_seed"], params


def _via_module(args: list[str]) -> tuple[int, int, SimParams]:
    return _parsed_run(_parse(standalone(), args))


def _via_cli(args: list[str]) -> tuple[int, int, SimParams]:
    return _parsed_run(_parse(_cli_sim(), args))


@pytest.mark.parametrize(("overrides", "expected"), TABLE)
def test_replay_command_table(overrides: dict[str, Any], expected: str) -> None:
    params = _params(**overrides)
    command = replay_command(7, params)
    assert command == expected
    # both command lines read it back as this very seed and run
    exact = "#" not in command
    for parse in (_via_module, _via_cli):
        seeds, first, parsed = parse(_args(command))
        assert (seeds, first) == (1, 7)
        assert _same_run(parsed, params) == exact, parse.__name__


def _options(command: typer.core.TyperCommand) -> dict[str, tuple[Any, ...]]:
    return {
        param.name or "": (
            *param.opts,
            *param.secondary_opts,
            param.default,
            getattr(param, "hidden", False),
        )
        for param in command.params
        if param.name != "help"
    }


def test_both_command_lines_are_one_command() -> None:
    """`python -m rkv.sim` runs the very function `rkv sim` does, so the options, defaults and
    help cannot drift apart."""
    module, cli = standalone(), _cli_sim()
    assert module.callback is not None and cli.callback is not None
    assert module.callback.__wrapped__ is cli.callback.__wrapped__ is sim_cmd  # type: ignore[attr-defined]
    assert _options(module) == _options(cli)
    assert module.help == cli.help
    assert {"--ticks", "--compact-every", "--membership", "--disk-replace", "--jobs"} <= {
        opt for opts in _options(cli).values() for opt in opts if isinstance(opt, str)
    }


@pytest.mark.parametrize(
    "options",
    [
        ["--ticks", "150"],
        ["--ticks", "150", "--membership"],
        ["--ticks", "150", "--disk-replace"],
        ["--ticks", "150", "--compact-every", "4"],
        ["--nodes", "5", "--ticks", "120", "--compact-every", "3", "--membership"],
    ],
)
def test_a_printed_replay_command_replays_the_failure(
    monkeypatch: pytest.MonkeyPatch, options: list[str]
) -> None:
    monkeypatch.setattr(RaftLog, "is_up_to_date", lambda self, index, term: True)
    a = _parse(standalone(), ["--seeds", "40", *options])
    out = io.StringIO()
    rc = run_sim_command(
        a["seeds"],
        1,
        a["nodes"],
        False,
        ticks=a["ticks"],
        compact_every=a["compact_every"],
        membership=a["membership"],
        disk_replace=a["disk_replace"],
        out=out,
    )
    assert rc == 1
    report = re.search(r"^FAILED seed .*?^  replay: (.*?)$", out.getvalue(), re.M | re.S)
    assert report is not None
    replay = report.group(1)
    for i in range(0, len(options), 2):
        assert " ".join(options[i : i + 2]) in replay
    if "--membership" in options:
        assert replay.endswith(" --membership")
    if "--disk-replace" in options:
        assert replay.endswith(" --disk-replace")
    result = CliRunner().invoke(app, ["sim", *_args(replay)])
    assert result.exit_code == 1, result.output
    assert report.group(0) in result.output
