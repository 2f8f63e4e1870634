"""The arguments of the Redis TTL options, read as Redis reads them, with Redis' error texts:
SET's options (NX, XX, GET, EX, PX, EXAT, PXAT, KEEPTTL), EXPIRE's conditions (NX, XX, GT,
LT), GETEX's options, and a TTL in milliseconds from seconds, milliseconds or a Unix time.

An absolute time (EXAT, PXAT, EXPIREAT, PEXPIREAT) is converted once into a TTL, with the
wall clock of the node that receives the command (`now_ms`, an argument: this module is
pure); from then on the TTL is a lease's, counted by the cluster (rkv.resp.ttl).

Owns: the parsing. Must not: call the node, or read a clock (the caller passes `now_ms`).
"""

from __future__ import annotations

from dataclasses import dataclass

from rkv.codec import MAX_LEASE_TTL_MS
from rkv.resp.context import CommandError, _int, syntax_error

UNITS = {b"EX": (1000, False), b"PX": (1, False), b"EXAT": (1000, True), b"PXAT": (1, True)}
"""A TTL option: (milliseconds per unit, whether it is a Unix time)."""

KEEP = "keep"
"""SET's KEEPTTL."""


def invalid_expire(name: str) -> CommandError:
    return CommandError(f"ERR invalid expire time in '{name}' command")


def ttl_ms(
    amount: bytes, unit: int, absolute: bool, now_ms: int, name: str, *, positive: bool
) -> int:
    """The TTL in ms of `amount` units (a Unix time if `absolute`), as the node at `now_ms`
    (Unix ms) sees it: <= 0 means already expired. `positive`: an amount <= 0 is Redis'
    "invalid expire time" (SET, GETEX, SETEX), else allowed (EXPIRE deletes the key)."""
    n = _int(amount)
    if positive and n <= 0:
        raise invalid_expire(name)
    if abs(n) > (1 << 62) // unit:
        raise invalid_expire(name)
    ms = n * unit - (now_ms if absolute else 0)
    if ms > MAX_LEASE_TTL_MS:
        raise CommandError(
            f"ERR invalid expire time in '{name}' command (rkv: a TTL is at most "
            f"{MAX_LEASE_TTL_MS // 1000} seconds, the longest lease)"
        )
    return ms


@dataclass(frozen=True, slots=True)
class SetOptions:
    nx: bool = False
    xx: bool = False
    get: bool = False
    ttl: int | str | None = None
    """The TTL in ms (<= 0: an EXAT/PXAT already past), KEEP, or None (the put clears it)."""
    ttl_option: str = ""
    """The option that gave it (EX, PX, EXAT, PXAT, KEEPTTL)."""


def set_options(args: list[bytes], now_ms: int) -> SetOptions:
    """SET key value's options, as Redis parses them (a repeated or clashing option: syntax
    error)."""
    nx = xx = get = False
    ttl: int | str | None = None
    option = ""
    i = 3
    while i < len(args):
        o = args[i].upper()
        if o == b"NX" and not xx:
            nx = True
        elif o == b"XX" and not nx:
            xx = True
        elif o == b"GET":
            get = True
        elif o == b"KEEPTTL" and ttl is None:
            ttl, option = KEEP, "KEEPTTL"
        elif o in UNITS and ttl is None and i + 1 < len(args):
            unit, absolute = UNITS[o]
            ttl = ttl_ms(args[i + 1], unit, absolute, now_ms, "set", positive=True)
            option = o.decode()
            i += 1
        else:
            raise syntax_error()
        i += 1
    return SetOptions(nx, xx, get, ttl, option)


@dataclass(frozen=True, slots=True)
class Condition:
    """EXPIRE's NX (no TTL yet), XX (a TTL), GT (longer than the current one; none counts
    as infinite), LT (shorter)."""

    nx: bool = False
    xx: bool = False
    gt: bool = False
    lt: bool = False

    def holds(self, current_ms: int | None, new_ms: int) -> bool:
        """For a key whose TTL is `current_ms` (None: none) and the TTL asked for."""
        if self.nx and current_ms is not None:
            return False
        if self.xx and current_ms is None:
            return False
        if self.gt and (current_ms is None or new_ms <= current_ms):
            return False
        return not (self.lt and current_ms is not None and new_ms >= current_ms)

    @property
    def reads_ttl(self) -> bool:
        return self.nx or self.xx or self.gt or self.lt


def condition(args: list[bytes]) -> Condition:
    """EXPIRE key n [NX | XX | GT | LT]'s options (args[3:]), with Redis' texts."""
    flags = {b"NX": False, b"XX": False, b"GT": False, b"LT": False}
    for a in args[3:]:
        o = a.upper()
        if o not in flags:
            raise CommandError(f"ERR Unsupported option {a.decode('utf-8', 'replace')}")
        flags[o] = True
    c = Condition(flags[b"NX"], flags[b"XX"], flags[b"GT"], flags[b"LT"])
    if c.nx and (c.xx or c.gt or c.lt):
        raise CommandError("ERR NX and XX, GT or LT options at the same time are not compatible")
    if c.gt and c.lt:
        raise CommandError("ERR GT and LT options at the same time are not compatible")
    return c


PERSIST = "persist"
"""GETEX's PERSIST."""


def getex_option(args: list[bytes], now_ms: int) -> int | str | None:
    """GETEX key [EX n | PX n | EXAT t | PXAT t | PERSIST]: the TTL in ms, PERSIST, or None
    (no option: a GET)."""
    if len(args) == 2:
        return None
    o = args[2].upper()
    if o == b"PERSIST" and len(args) == 3:
        return PERSIST
    if o in UNITS and len(args) == 4:
        unit, absolute = UNITS[o]
        return ttl_ms(args[3], unit, absolute, now_ms, "getex", positive=True)
    raise syntax_error()
