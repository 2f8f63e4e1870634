"""The RESP command table: each command's name, arity, flags and handler (rkv.resp.commands,
rmw, keyscan, multi), and `COMMAND` (which describes the table). The commands rkv refuses
are rkv.resp.refused's.

Owns: the table. Must not: read or write sockets (rkv.resp.server) or parse
bytes (rkv.resp.wire).
"""

from __future__ import annotations

from rkv.resp.commands import (
    cmd_auth,
    cmd_client,
    cmd_config,
    cmd_dbsize,
    cmd_del,
    cmd_echo,
    cmd_exists,
    cmd_get,
    cmd_hello,
    cmd_info,
    cmd_mget,
    cmd_ping,
    cmd_quit,
    cmd_select,
    cmd_setnx,
    cmd_strlen,
    cmd_type,
)
from rkv.resp.context import (
    Command,
    CommandError,
    Context,
    Handler,
    _arg_text,
)
from rkv.resp.keyscan import cmd_keys, cmd_scan
from rkv.resp.multi import cmd_discard, cmd_exec, cmd_multi, cmd_unwatch, cmd_watch
from rkv.resp.rmw import (
    cmd_append,
    cmd_decr,
    cmd_decrby,
    cmd_getdel,
    cmd_getset,
    cmd_incr,
    cmd_incrby,
    cmd_incrbyfloat,
    cmd_mset,
    cmd_msetnx,
    cmd_set,
)
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


# -- the table --------------------------------------------------------------------------------


def _c(
    name: str,
    arity: int,
    flags: str,
    keys: tuple[int, int, int],
    handler: Handler,
    group: str,
    summary: str,
) -> Command:
    return Command(name, arity, tuple(flags.split()), *keys, handler, group, summary)


_NOKEY = (0, 0, 0)
COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        _c(
            "ping",
            -1,
            "fast stale",
            _NOKEY,
            cmd_ping,
            "connection",
            "Returns the server's liveliness response.",
        ),
        _c("echo", 2, "fast", _NOKEY, cmd_echo, "connection", "Returns the given string."),
        _c(
            "hello",
            -1,
            "noscript loading stale fast no_auth",
            _NOKEY,
            cmd_hello,
            "connection",
            "Handshakes with the server.",
        ),
        _c(
            "auth",
            -2,
            "noscript loading stale fast no_auth",
            _NOKEY,
            cmd_auth,
            "connection",
            "Authenticates the connection.",
        ),
        _c(
            "client",
            -2,
            "noscript loading stale",
            _NOKEY,
            cmd_client,
            "connection",
            "SETINFO, SETNAME, GETNAME, ID.",
        ),
        _c(
            "select",
            2,
            "loading stale fast",
            _NOKEY,
            cmd_select,
            "connection",
            "Changes the selected database (only 0).",
        ),
        _c(
            "quit",
            -1,
            "noscript loading stale fast no_auth",
            _NOKEY,
            cmd_quit,
            "connection",
            "Closes the connection.",
        ),
        _c(
            "info",
            -1,
            "loading stale",
            _NOKEY,
            cmd_info,
            "server",
            "Returns information about the node.",
        ),
        _c(
            "config",
            -2,
            "admin noscript loading stale",
            _NOKEY,
            cmd_config,
            "server",
            "CONFIG GET.",
        ),
        _c(
            "command",
            -1,
            "loading stale",
            _NOKEY,
            cmd_command,
            "server",
            "Returns detailed information about commands.",
        ),
        _c(
            "dbsize",
            1,
            "readonly fast",
            _NOKEY,
            cmd_dbsize,
            "server",
            "Returns the number of keys.",
        ),
        _c(
            "type",
            2,
            "readonly fast",
            (1, 1, 1),
            cmd_type,
            "generic",
            "Determines the type of value stored at a key.",
        ),
        _c(
            "get",
            2,
            "readonly fast",
            (1, 1, 1),
            cmd_get,
            "string",
            "Returns the string value of a key.",
        ),
        _c(
            "set",
            -3,
            "write denyoom",
            (1, 1, 1),
            cmd_set,
            "string",
            "Sets the string value of a key (NX, XX, GET; one txn).",
        ),
        _c(
            "getset",
            3,
            "write denyoom fast",
            (1, 1, 1),
            cmd_getset,
            "string",
            "Returns the previous string value of a key after setting it (one txn).",
        ),
        _c(
            "getdel",
            2,
            "write fast",
            (1, 1, 1),
            cmd_getdel,
            "string",
            "Returns the string value of a key after deleting the key (one txn).",
        ),
        _c(
            "incr",
            2,
            "write denyoom fast",
            (1, 1, 1),
            cmd_incr,
            "string",
            "Increments the integer value of a key by one (in the state machine).",
        ),
        _c(
            "decr",
            2,
            "write denyoom fast",
            (1, 1, 1),
            cmd_decr,
            "string",
            "Decrements the integer value of a key by one (in the state machine).",
        ),
        _c(
            "incrby",
            3,
            "write denyoom fast",
            (1, 1, 1),
            cmd_incrby,
            "string",
            "Increments the integer value of a key by a number (in the state machine).",
        ),
        _c(
            "decrby",
            3,
            "write denyoom fast",
            (1, 1, 1),
            cmd_decrby,
            "string",
            "Decrements a number from the integer value of a key (in the state machine).",
        ),
        _c(
            "incrbyfloat",
            3,
            "write denyoom fast",
            (1, 1, 1),
            cmd_incrbyfloat,
            "string",
            "Increment the floating point value of a key by a number (decimal arithmetic).",
        ),
        _c(
            "append",
            3,
            "write denyoom fast",
            (1, 1, 1),
            cmd_append,
            "string",
            "Appends a string to the value of a key (in the state machine).",
        ),
        _c(
            "mset",
            -3,
            "write denyoom",
            (1, -1, 2),
            cmd_mset,
            "string",
            "Atomically creates or modifies the string values of keys (one txn, 128 keys).",
        ),
        _c(
            "msetnx",
            -3,
            "write denyoom",
            (1, -1, 2),
            cmd_msetnx,
            "string",
            "Sets the values of keys only when none of them exist (one txn, 128 keys).",
        ),
        _c(
            "setnx",
            3,
            "write denyoom fast",
            (1, 1, 1),
            cmd_setnx,
            "string",
            "Set the string value of a key only when the key doesn't exist.",
        ),
        _c(
            "mget",
            -2,
            "readonly fast",
            (1, -1, 1),
            cmd_mget,
            "string",
            "Returns the string values of one or more keys (not one snapshot).",
        ),
        _c(
            "del",
            -2,
            "write",
            (1, -1, 1),
            cmd_del,
            "generic",
            "Deletes one or more keys (several: one txn, 128 keys).",
        ),
        _c(
            "unlink",
            -2,
            "write fast",
            (1, -1, 1),
            cmd_del,
            "generic",
            "Deletes one or more keys (several: one txn, 128 keys).",
        ),
        _c(
            "exists",
            -2,
            "readonly fast",
            (1, -1, 1),
            cmd_exists,
            "generic",
            "Determines whether one or more keys exist (several: one txn, 128 keys).",
        ),
        _c(
            "strlen",
            2,
            "readonly fast",
            (1, 1, 1),
            cmd_strlen,
            "string",
            "Returns the length of a string value.",
        ),
        _c(
            "keys",
            2,
            "readonly",
            _NOKEY,
            cmd_keys,
            "generic",
            "Returns all key names that match a pattern.",
        ),
        _c(
            "scan",
            -2,
            "readonly",
            _NOKEY,
            cmd_scan,
            "generic",
            "Iterates over the key names in key order (real cursors).",
        ),
        _c(
            "multi",
            1,
            "noscript loading stale fast",
            _NOKEY,
            cmd_multi,
            "transactions",
            "Starts a transaction (EXEC runs it as one rkv txn).",
        ),
        _c(
            "exec",
            1,
            "noscript loading stale",
            _NOKEY,
            cmd_exec,
            "transactions",
            "Executes the queued commands as one rkv txn.",
        ),
        _c(
            "discard",
            1,
            "noscript loading stale fast",
            _NOKEY,
            cmd_discard,
            "transactions",
            "Discards a transaction.",
        ),
        _c(
            "watch",
            -2,
            "noscript loading stale fast",
            (1, -1, 1),
            cmd_watch,
            "transactions",
            "Watches keys' mod revisions for EXEC.",
        ),
        _c(
            "unwatch",
            1,
            "noscript loading stale fast",
            _NOKEY,
            cmd_unwatch,
            "transactions",
            "Forgets the watched keys.",
        ),
    )
}

NO_AUTH = frozenset({"auth", "hello", "quit"})
