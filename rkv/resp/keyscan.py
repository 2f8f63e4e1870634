"""KEYS and SCAN: the key names, read by linearizable prefix scans of the pattern's literal
prefix (`user:*` scans `user:`), matched with Redis' glob rules (rkv.resp.glob) by one
function for both.

SCAN pages in key order with real cursors (rkv.resp.cursors: a cursor names the last key
returned); each page reads the keys after it, so every key present for the whole scan is
returned (exactly once, unless a client retries a page). COUNT is the number of keys of the
prefix examined per page, as Redis' hint (with MATCH a page may hold fewer, even none).
The node's scan starts at its prefix and has no resume point, so each page reads the prefix
from its start: KEYS and SCAN serve at most MAX_SCAN_LIMIT (10,000) keys under one literal
prefix and reply with an error past that, never a silently short answer.

Owns: these two handlers. Must not: name the commands (rkv.resp.table), read or write
sockets or parse bytes.
"""

from __future__ import annotations

from rkv.codec import MAX_KEY_LEN
from rkv.protocol import MAX_SCAN_LIMIT, ScanRequest
from rkv.resp import glob
from rkv.resp.context import CommandError, Context, _int, call, syntax_error
from rkv.resp.cursors import Position
from rkv.resp.wire import Reply

DEFAULT_COUNT = 10
"""SCAN's COUNT when none is given (Redis' default)."""


def _prefix(pattern: bytes) -> bytes:
    return glob.literal_prefix(pattern)[:MAX_KEY_LEN]


def matching(pattern: bytes, keys: list[bytes]) -> list[bytes]:
    """The keys that match `pattern` (KEYS and SCAN MATCH)."""
    prefix = _prefix(pattern)
    if pattern == b"*" or pattern == prefix + b"*":
        return [k for k in keys if k.startswith(prefix)]
    return [k for k in keys if glob.match(pattern, k)]


async def _read(ctx: Context, prefix: bytes, limit: int) -> list[bytes]:
    reply = await call(ctx, lambda: ScanRequest(prefix, limit).to_frame())
    return [k for k, _ in reply.get("items") or []]


def _too_many(what: str, prefix: bytes) -> CommandError:
    return CommandError(
        f"ERR rkv {what}: more than {MAX_SCAN_LIMIT} keys start with {prefix!r}; rkv's scan "
        "cannot resume yet: use a pattern with a longer literal prefix"
    )


async def cmd_keys(ctx: Context, args: list[bytes]) -> Reply:
    pattern = args[1]
    prefix = _prefix(pattern)
    keys = await _read(ctx, prefix, MAX_SCAN_LIMIT)
    if len(keys) >= MAX_SCAN_LIMIT:
        raise _too_many("keys", prefix)
    return matching(pattern, keys)


def _cursor(a: bytes) -> int:
    if not a.isdigit() or len(a) > 20 or int(a) >= 1 << 64:
        raise CommandError("ERR invalid cursor")
    return int(a)


async def cmd_scan(ctx: Context, args: list[bytes]) -> Reply:
    """SCAN cursor [MATCH pattern] [COUNT n] [TYPE type]."""
    cursor = _cursor(args[1])
    pattern, count, other_type = b"*", DEFAULT_COUNT, False
    i = 2
    while i < len(args):
        opt = args[i].upper()
        if i + 1 >= len(args):
            raise syntax_error()
        if opt == b"MATCH":
            pattern = args[i + 1]
        elif opt == b"COUNT":
            count = _int(args[i + 1])
            if count < 1:
                raise syntax_error()
        elif opt == b"TYPE":
            other_type = args[i + 1].lower() != b"string"
        else:
            raise syntax_error()
        i += 2
    cursors = ctx.session.settings.cursors
    pos = Position(b"", 0)
    if cursor != 0:
        found = cursors.get(cursor)
        if found is None:
            raise CommandError("ERR invalid cursor")
        pos = found
    if other_type:  # every rkv value is a string
        return [b"0", []]
    count = min(count, MAX_SCAN_LIMIT - 1)
    prefix = _prefix(pattern)
    limit = min(MAX_SCAN_LIMIT, pos.examined + count + 1)
    while True:
        keys = await _read(ctx, prefix, limit)
        full = len(keys) >= limit
        start = next((n for n, k in enumerate(keys) if k > pos.last), len(keys))
        after = keys[start:]
        if len(after) > count or not full:
            break
        if limit >= MAX_SCAN_LIMIT:
            if not after:
                raise _too_many("scan", prefix)
            break  # what can be read: the next page fails if it is past the bound
        limit = min(MAX_SCAN_LIMIT, 2 * limit + count)
    page = after[:count]
    if not full and len(after) <= count:
        nxt = 0
    else:
        nxt = cursors.issue(ctx.session.conn_id, Position(page[-1], start + len(page)))
    return [str(nxt).encode(), matching(pattern, page)]
