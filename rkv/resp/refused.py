"""The Redis commands rkv refuses because they need what the state machine does not offer yet
(TTLs, scripts, a few string commands), each with its reason, and the refusal's text.

Owns: that list. Must not: serve a command.
"""

from __future__ import annotations

from rkv.resp.wire import Err

RMW = "it needs an atomic read-modify-write in the state machine"
TTL = "it needs TTLs decided through the log (leases)"
LUA = "it needs scripts run deterministically inside the state machine"

UNSUPPORTED: dict[str, str] = {
    **dict.fromkeys(
        ["getex", "setrange", "getrange", "psetex", "setex"],
        RMW,
    ),
    **dict.fromkeys(
        [
            "expire",
            "pexpire",
            "expireat",
            "pexpireat",
            "ttl",
            "pttl",
            "persist",
            "expiretime",
            "pexpiretime",
        ],
        TTL,
    ),
    **dict.fromkeys(
        ["eval", "evalsha", "eval_ro", "evalsha_ro", "script", "fcall", "function"], LUA
    ),
}
UNSUPPORTED["setex"] = UNSUPPORTED["psetex"] = UNSUPPORTED["getex"] = TTL
UNSUPPORTED["getrange"] = "it is not implemented yet"
UNSUPPORTED["setrange"] = "it needs a setrange op in the state machine's transactions"


def unsupported(name: str) -> Err:
    return Err(f"ERR rkv does not support '{name}' yet: {UNSUPPORTED[name]}")
