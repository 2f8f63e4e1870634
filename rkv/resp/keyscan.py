"""KEYS and SCAN: the key names, read by linearizable prefix scans of the pattern's literal
prefix (`user:*` scans `user:`), matched with Redis' glob rules (rkv.resp.glob) by one
function for both.

SCAN pages in key order with real cursors (rkv.resp.cursors: a cursor names the last key
returned); each page reads the keys after it, so every key present for the whole scan is
returned (exactly once, unless a client retries a page). COUNT is the number of keys
examined per page, as Redis' hint (with MATCH a page may hold fewer, even none). The node's
scan starts at a prefix and has no start key, so a page reads under prefixes of its
cursor's key, narrowest first (`_keys_after`): the keys near the cursor, not the whole
prefix from its start; past a prefix with MAX_SCAN_LIMIT (10,000) keys before the cursor
it reads the sibling prefixes instead (at most MAX_SIBLING_READS a page, then an error).
KEYS reads at most MAX_SCAN_LIMIT keys under the pattern's literal prefix and replies with
an error past that. Never a silently short answer.

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
    last = b""
    if cursor != 0:
        found = cursors.get(cursor)
        if found is None:
            raise CommandError("ERR invalid cursor")
        last = found.last
    if other_type:  # every rkv value is a string
        return [b"0", []]
    count = min(count, MAX_SCAN_LIMIT - 1)
    after, more = await _keys_after(ctx, _prefix(pattern), last, count)
    page = after[:count]
    nxt = cursors.issue(ctx.session.conn_id, Position(page[-1])) if more else 0
    return [str(nxt).encode(), matching(pattern, page)]


def _levels(prefix: bytes, last: bytes) -> list[bytes]:
    """The prefixes to read the keys after `last` from, narrowest first: prefixes of `last`
    down to `prefix`, one byte shorter each for the first four, then halving what is left
    beyond `prefix`, so a page reads the neighbourhood of the cursor rather than the whole
    prefix from its start, in a few reads."""
    out = []
    if last.startswith(prefix):
        i = len(last) - 1
        while i > len(prefix):
            out.append(last[:i])
            i = i - 1 if len(out) < 4 else len(prefix) + (i - len(prefix)) // 2
    return [*out, prefix]


FIRST_READ = 256
"""The fewest keys a page's first read of a level asks for (a read barrier costs more than
a few hundred keys; the limit doubles from there)."""
MAX_SIBLING_READS = 1024
"""The most reads of one SCAN page that walks sibling prefixes (`_siblings`)."""


async def _keys_after(
    ctx: Context, prefix: bytes, last: bytes, count: int
) -> tuple[list[bytes], bool]:
    """The first keys after `last` under `prefix` in key order (at least `count` + 1 when
    there are that many), and whether the scan goes on after the first `count` of them.

    The keys after `last` under a prefix Q of `last` come before every other key after
    `last`, so the first ones found under the narrowest Q holding more than `count` of them
    are the answer; a Q read whole (fewer keys than the limit) with fewer sends the search
    one level wider. A Q with more than MAX_SCAN_LIMIT keys up to `last` cannot be read
    past them: then the keys after the narrower level come from its sibling prefixes."""
    whole = last
    found: list[bytes] | None = None
    for q in _levels(prefix, last):
        limit = min(MAX_SCAN_LIMIT, max(2 * count + 2, FIRST_READ))
        while True:
            keys = await _read(ctx, q, limit)
            full = len(keys) >= limit
            after = [k for k in keys if k > last]
            if len(after) > count:
                return after, True
            if not full or limit >= MAX_SCAN_LIMIT:
                break
            limit = min(MAX_SCAN_LIMIT, 2 * limit)
        if full:  # more than MAX_SCAN_LIMIT keys of q come before `last`
            if not last.startswith(prefix):  # (MATCH changed) every key of q is before it
                return [], False
            return await _siblings(ctx, prefix, last, count, whole, found)
        whole, found = q, after  # all of q is read: one level wider
    return after, False


async def _siblings(
    ctx: Context, prefix: bytes, last: bytes, count: int, whole: bytes, found: list[bytes] | None
) -> tuple[list[bytes], bool]:
    """The keys after `last` under `prefix`: `found`, those under `whole` (a prefix of
    `last` read whole; None: not read yet), then those under each prefix `last[:j] + c`
    for c after `last[j]`, j from `len(whole) - 1` down to `len(prefix)` (every key there
    is after `last`: no read returns a key before the cursor)."""
    reads = 0
    if found is None:  # the keys that extend `last`
        found = [k for k in await _read(ctx, last, count + 2) if k > last]
        reads += 1
    out = list(found)
    for j in range(len(whole) - 1, len(prefix) - 1, -1):
        for c in range(last[j] + 1, 256):
            if len(out) > count:
                return out, True
            if reads >= MAX_SIBLING_READS:
                if out:
                    return out, True
                raise _too_many("scan", prefix)
            reads += 1
            out += await _read(ctx, last[:j] + bytes([c]), count + 1 - len(out))
    return out, len(out) > count
