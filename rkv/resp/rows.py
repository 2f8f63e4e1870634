"""The RESP command table's rows for the connection, server, transaction and pub/sub commands (and
`row`, how a row is written): name, arity, flags, key positions, handler, group, summary.
rkv.resp.table assembles every room's rows into COMMANDS.

Owns: these rows. Must not: serve a command, read or write sockets, parse bytes.
"""

from __future__ import annotations

from rkv.resp.commands import (
    cmd_auth,
    cmd_client,
    cmd_config,
    cmd_dbsize,
    cmd_echo,
    cmd_hello,
    cmd_info,
    cmd_ping,
    cmd_quit,
    cmd_select,
)
from rkv.resp.context import Command, Handler
from rkv.resp.multi import cmd_discard, cmd_exec, cmd_multi, cmd_unwatch, cmd_watch
from rkv.resp.pubsub import cmd_psubscribe, cmd_punsubscribe, cmd_subscribe, cmd_unsubscribe


def row(
    name: str,
    arity: int,
    flags: str,
    keys: tuple[int, int, int],
    handler: Handler,
    group: str,
    summary: str,
) -> Command:
    return Command(name, arity, tuple(flags.split()), *keys, handler, group, summary)


NOKEY = (0, 0, 0)
ONEKEY = (1, 1, 1)

CONNECTION_ROWS: tuple[Command, ...] = (
    row(
        "ping",
        -1,
        "fast stale",
        NOKEY,
        cmd_ping,
        "connection",
        "Returns the server's liveliness response.",
    ),
    row("echo", 2, "fast", NOKEY, cmd_echo, "connection", "Returns the given string."),
    row(
        "hello",
        -1,
        "noscript loading stale fast no_auth",
        NOKEY,
        cmd_hello,
        "connection",
        "Handshakes with the server.",
    ),
    row(
        "auth",
        -2,
        "noscript loading stale fast no_auth",
        NOKEY,
        cmd_auth,
        "connection",
        "Authenticates the connection.",
    ),
    row(
        "client",
        -2,
        "noscript loading stale",
        NOKEY,
        cmd_client,
        "connection",
        "SETINFO, SETNAME, GETNAME, ID.",
    ),
    row(
        "select",
        2,
        "loading stale fast",
        NOKEY,
        cmd_select,
        "connection",
        "Changes the selected database (only 0).",
    ),
    row(
        "quit",
        -1,
        "noscript loading stale fast no_auth",
        NOKEY,
        cmd_quit,
        "connection",
        "Closes the connection.",
    ),
    row(
        "info",
        -1,
        "loading stale",
        NOKEY,
        cmd_info,
        "server",
        "Returns information about the node.",
    ),
    row(
        "config",
        -2,
        "admin noscript loading stale",
        NOKEY,
        cmd_config,
        "server",
        "CONFIG GET.",
    ),
    row(
        "dbsize",
        1,
        "readonly fast",
        NOKEY,
        cmd_dbsize,
        "server",
        "Returns the number of keys.",
    ),
    row(
        "multi",
        1,
        "noscript loading stale fast",
        NOKEY,
        cmd_multi,
        "transactions",
        "Starts a transaction (EXEC runs it as one rkv txn).",
    ),
    row(
        "exec",
        1,
        "noscript loading stale",
        NOKEY,
        cmd_exec,
        "transactions",
        "Executes the queued commands as one rkv txn.",
    ),
    row(
        "discard",
        1,
        "noscript loading stale fast",
        NOKEY,
        cmd_discard,
        "transactions",
        "Discards a transaction.",
    ),
    row(
        "watch",
        -2,
        "noscript loading stale fast",
        (1, -1, 1),
        cmd_watch,
        "transactions",
        "Watches keys' mod revisions for EXEC.",
    ),
    row(
        "unwatch",
        1,
        "noscript loading stale fast",
        NOKEY,
        cmd_unwatch,
        "transactions",
        "Forgets the watched keys.",
    ),
    row(
        "subscribe",
        -2,
        "pubsub noscript loading stale",
        NOKEY,
        cmd_subscribe,
        "pubsub",
        "Listens for keyspace notifications (__keyspace@0__:key, __keyevent@0__:event).",
    ),
    row(
        "psubscribe",
        -2,
        "pubsub noscript loading stale",
        NOKEY,
        cmd_psubscribe,
        "pubsub",
        "Listens for keyspace notifications on channels matching patterns.",
    ),
    row(
        "unsubscribe",
        -1,
        "pubsub noscript loading stale",
        NOKEY,
        cmd_unsubscribe,
        "pubsub",
        "Stops listening to channels.",
    ),
    row(
        "punsubscribe",
        -1,
        "pubsub noscript loading stale",
        NOKEY,
        cmd_punsubscribe,
        "pubsub",
        "Stops listening to channel patterns.",
    ),
)
