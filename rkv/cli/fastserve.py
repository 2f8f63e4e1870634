"""The fast argument parser of `rkv serve`: the keyword arguments typer would call a command
with, found without typer (see `fast_kwargs` for why), or None to leave the command line to
typer.

Owns: reading a typer command's options from its signature and parsing plain ones. Must not:
define options (the command's signature is their one definition: rkv.cli.serve), report
errors (anything it is not sure of goes to typer, which reports), or let typer parse (that
loads pydantic: the cost this parser saves).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_type_hints

import typer.models

_NO_VALUE = object()


@dataclass(frozen=True, slots=True)
class _FastOption:
    dest: str
    kind: type
    """int, str, Path or bool (a flag)."""
    default: Any
    envvar: str | None
    lo: float | None
    hi: float | None

    def convert(self, text: str) -> Any:
        """The value typer would produce from `text`, or _NO_VALUE where it might differ."""
        if text.startswith("-"):
            return _NO_VALUE  # typer's business: a missing value, a negative number
        if self.kind is str:
            return text
        if self.kind is Path:
            return Path(text) if text else _NO_VALUE
        if not (text.isascii() and text.isdigit()):
            return _NO_VALUE
        value = int(text)
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            return _NO_VALUE
        return value


def _fast_options(command: Callable[..., Any]) -> dict[str, _FastOption] | None:
    """Option name -> spec for each option of a typer command, read from its signature (the
    one definition of the options); None if it uses what `fast_kwargs` does not handle."""
    hints = get_type_hints(command)
    by_name: dict[str, _FastOption] = {}
    for name, param in inspect.signature(command).parameters.items():
        info = param.default
        if not isinstance(info, typer.models.OptionInfo):
            return None
        kinds = [t for t in get_args(hints[name]) or (hints[name],) if t is not type(None)]
        plain = (
            info.callback is None
            and info.parser is None
            and info.default_factory is None
            and info.default is not ...  # a required option
            and not info.is_eager
            and not info.clamp
            and not info.exists
            and not info.resolve_path
            and info.path_type is None
            and not info.count
            and not info.prompt
            and getattr(info, "flag_value", None) is None  # older typers only
        )
        if len(kinds) != 1 or kinds[0] not in (int, str, Path, bool) or not plain:
            return None
        envvar = info.envvar if isinstance(info.envvar, str) or info.envvar is None else None
        if info.envvar is not None and envvar is None:
            return None
        spec = _FastOption(name, kinds[0], info.default, envvar, info.min, info.max)
        decls = list(info.param_decls or ()) or ["--" + name.replace("_", "-")]
        for decl in decls:
            if "/" in decl or not decl.startswith("-"):
                return None
            by_name[decl] = spec
    return by_name


def fast_kwargs(command: Callable[..., Any], args: list[str]) -> dict[str, Any] | None:
    """The keyword arguments typer would call `command` with for `args`, found without typer,
    or None when `args` hold anything but plain options of `command` (help, an unknown
    option, an out-of-range or odd value, ...): typer then parses them and reports the errors.

    Why: this typer builds a pydantic validator for every parameter of the command it runs
    (importing pydantic), about 0.14 s of CPU that `rkv serve` pays at every start; three
    nodes restarting at once on two cores wait for it (docs/bench.md, restart to serving).
    """
    if any(k.endswith("_COMPLETE") and k.startswith("_") for k in os.environ):
        return None  # shell completion is typer's
    options = _fast_options(command)
    if options is None:
        return None
    given: dict[str, Any] = {}
    i = 0
    while i < len(args):
        token = args[i]
        name, eq, text = token.partition("=") if token.startswith("--") else (token, "", "")
        spec = options.get(name)
        if spec is None:
            return None
        i += 1
        if spec.kind is bool:
            if eq:
                return None
            given[spec.dest] = True
            continue
        if not eq:
            if i == len(args):
                return None
            text = args[i]
            i += 1
        value = spec.convert(text)
        if value is _NO_VALUE:
            return None
        given[spec.dest] = value
    out: dict[str, Any] = {}
    for spec in options.values():
        if spec.dest in given:
            out[spec.dest] = given[spec.dest]
        elif spec.envvar is not None and os.environ.get(spec.envvar):
            value = spec.convert(os.environ[spec.envvar])
            if value is _NO_VALUE:
                return None
            out[spec.dest] = value
        else:
            out[spec.dest] = spec.default
    return out
