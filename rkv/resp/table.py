"""The RESP command table: every room's rows assembled (rkv.resp.rows: connection, server,
transactions; rkv.resp.datarows: data and TTL commands; each row a command's name, arity,
flags and handler), and `COMMAND` (which describes the table). The commands rkv refuses are
rkv.resp.refused's.

Owns: the table. Must not: read or write sockets (rkv.resp.server) or parse
bytes (rkv.resp.wire).
"""

from __future__ import annotations

from rkv.resp.context import Command, CommandError, Context, _arg_text
from rkv.resp.datarows import DATA_ROWS
from rkv.resp.rows import CONNECTION_ROWS, NOKEY, row
from rkv.resp.wire import Reply, RSet, Simple


async def cmd_command(ctx: Context, args: list[bytes]) -> Reply:
    if len(args) == 1:
        return [_command_info(c) for c in COMMANDS.values()]
    sub = args[1].upper()
    if sub == b"COUNT":
        return len(COMMANDS)
    if sub == b"INFO":
        asked = [n.decode("latin-1").lower() for n in args[2:]] or list(COMMANDS)
        return [_command_info(COMMANDS[n]) if n in COMMANDS else None for n in asked]
    if sub == b"DOCS":
        names = [n.decode("latin-1").lower() for n in args[2:]] or list(COMMANDS)
        docs: dict[Reply, Reply] = {}
        for n in names:
            c = COMMANDS.get(n)
            if c is not None:
                docs[c.name] = {"summary": c.summary, "since": "1.0.0", "group": c.group}
        return docs
    if sub == b"LIST":
        return [c.name for c in COMMANDS.values()]
    raise CommandError(f"ERR unknown subcommand '{_arg_text(args[1])}'. Try COMMAND HELP.")


def _command_info(c: Command) -> Reply:
    return [
        c.name,
        c.arity,
        RSet(tuple(Simple(f) for f in c.flags)),
        c.first_key,
        c.last_key,
        c.step,
        RSet(()),
        RSet(()),
        [],
        [],
    ]


COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        *CONNECTION_ROWS,
        row(
            "command",
            -1,
            "loading stale",
            NOKEY,
            cmd_command,
            "server",
            "Returns detailed information about commands.",
        ),
        *DATA_ROWS,
    )
}

NO_AUTH = frozenset({"auth", "hello", "quit"})
