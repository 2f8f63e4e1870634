"""KEYS and SCAN: the key names, read by linearizable prefix scans of the pattern's literal
prefix (`user:*` scans `user:`), matched with Redis' glob rules (rkv.resp.glob) by one
function for both.

SCAN pages in key order with real cursors (rkv.resp.cursors: a cursor names the last key
returned); each page is ONE read, the node's scan from the key after the cursor's (`after`),
so every key present for the whole scan is returned (exactly once, unless a client retries
a page), however many keys the prefix holds. COUNT is the number of keys examined per page,
as Redis' hint (with MATCH a page may hold fewer, even none; at most MAX_SCAN_LIMIT - 1).
KEYS reads the pattern's literal prefix in pages of MAX_SCAN_LIMIT keys, each from the last
key of the one before (each page at its own revision, like SCAN's), and examines at most
MAX_KEYS keys: past them it replies an error (use SCAN). Never a silently short answer.

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

MAX_KEYS = 100_000
"""The most keys one KEYS examines (its reply is built in memory: up to ~40 MB of names)."""
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


async def _read(ctx: Context, prefix: bytes, limit: int, after: bytes | None) -> list[bytes]:
    """The first `limit` keys under `prefix` after `after` (None: from the prefix's start)."""
    reply = await call(ctx, lambda: ScanRequest(prefix, limit, after=after or None).to_frame())
    return [k for k, _ in reply.get("items") or []]


async def cmd_keys(ctx: Context, args: list[bytes]) -> Reply:
    pattern = args[1]
    prefix = _prefix(pattern)
    keys: list[bytes] = []
    while True:
        page = await _read(ctx, prefix, MAX_SCAN_LIMIT, keys[-1] if keys else None)
        keys += page
        if len(keys) > MAX_KEYS:
            raise CommandError(
                f"ERR rkv keys: more than {MAX_KEYS} keys start with {prefix!r}; "
                "use SCAN, or a pattern with a longer literal prefix"
            )
        if len(page) < MAX_SCAN_LIMIT:
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
    last = b""
    if cursor != 0:
        found = cursors.get(cursor)
        if found is None:
            raise CommandError("ERR invalid cursor")
        last = found.last
    if other_type:  # every rkv value is a string
        return [b"0", []]
    count = min(count, MAX_SCAN_LIMIT - 1)
    # one read: the keys after the cursor's, one more than the page to know if any remain
    after = await _read(ctx, _prefix(pattern), count + 1, last)
    more = len(after) > count
    page = after[:count]
    nxt = cursors.issue(ctx.session.conn_id, Position(page[-1])) if more else 0
    return [str(nxt).encode(), matching(pattern, page)]
