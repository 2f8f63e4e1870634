"""The Redis commands rkv refuses because they need what the state machine does not offer yet
(scripts, a few string commands, PUBLISH), each with its reason, and the refusal's text.

Owns: that list. Must not: serve a command.
"""

from __future__ import annotations

from rkv.resp.wire import Err

LUA = "it needs scripts run deterministically inside the state machine"

UNSUPPORTED: dict[str, str] = {
    **dict.fromkeys(
        ["eval", "evalsha", "eval_ro", "evalsha_ro", "script", "fcall", "function"], LUA
    ),
    "getrange": "it is not implemented yet",
    "setrange": "it needs a setrange op in the state machine's transactions",
    "publish": "rkv's channels are its keyspace notifications only (SUBSCRIBE __keyspace@0__:*)",
}


def unsupported(name: str) -> Err:
    return Err(f"ERR rkv does not support '{name}' yet: {UNSUPPORTED[name]}")
