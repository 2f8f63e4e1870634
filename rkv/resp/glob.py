"""Redis' glob patterns (KEYS, SCAN MATCH, CONFIG GET): a port of stringmatchlen (util.c).

Owns: `match(pattern, text, nocase=False)` with Redis' semantics: `*` any run (also empty),
`?` one byte, `[abc]`, `[^abc]`, `[a-z]` (a reversed range counts as its normal order; an
unclosed `[` takes the rest of the pattern as the class), `\\x` the byte x literally; bytes
throughout (no UTF-8 decoding), and `literal_prefix(pattern)`, the bytes every match starts
with (for a prefix scan). Pure.
"""

from __future__ import annotations


def match(pattern: bytes, text: bytes, nocase: bool = False) -> bool:
    """Whether `text` matches the glob `pattern` (Redis' stringmatchlen)."""
    if nocase:
        pattern, text = pattern.lower(), text.lower()
    return _match(pattern, 0, text, 0, [False], 0)


MAX_NESTING = 200
"""Stars nested deeper than this never match (Redis: 1000; Python's stack is shallower)."""


def _match(p: bytes, pi: int, s: bytes, si: int, skip_longer: list[bool], nesting: int) -> bool:
    if nesting > MAX_NESTING:
        return False
    plen, slen = len(p), len(s)
    if si >= slen:
        return pi >= plen  # as Redis: an empty string matches only the empty pattern
    while pi < plen and si < slen:
        c = p[pi]
        if c == 0x2A:  # '*'
            while pi + 1 < plen and p[pi + 1] == 0x2A:
                pi += 1
            if pi + 1 == plen:
                return True
            while si < slen:
                if _match(p, pi + 1, s, si, skip_longer, nesting + 1):
                    return True
                if skip_longer[0]:
                    return False  # a shorter tail failed: a longer one cannot match
                si += 1
            skip_longer[0] = True
            return False
        if c == 0x3F:  # '?'
            si += 1
        elif c == 0x5B:  # '['
            pi += 1
            negate = pi < plen and p[pi] == 0x5E  # '^'
            if negate:
                pi += 1
            matched = False
            while True:
                if pi >= plen:
                    pi -= 1  # an unclosed class: Redis steps back onto the last byte
                    break
                if p[pi] == 0x5C and pi + 1 < plen:  # '\\'
                    pi += 1
                    if p[pi] == s[si]:
                        matched = True
                elif p[pi] == 0x5D:  # ']'
                    break
                elif pi + 2 < plen and p[pi + 1] == 0x2D:  # 'a-z'
                    lo, hi = p[pi], p[pi + 2]
                    if lo > hi:
                        lo, hi = hi, lo
                    pi += 2
                    if lo <= s[si] <= hi:
                        matched = True
                elif p[pi] == s[si]:
                    matched = True
                pi += 1
            if negate:
                matched = not matched
            if not matched:
                return False
            si += 1
        else:
            if c == 0x5C and pi + 1 < plen:  # '\\': the next byte literally
                pi += 1
                c = p[pi]
            if c != s[si]:
                return False
            si += 1
        pi += 1
        if si >= slen:
            while pi < plen and p[pi] == 0x2A:
                pi += 1
            break
    return pi >= plen and si >= slen


def literal_prefix(pattern: bytes) -> bytes:
    """The bytes every key matching `pattern` starts with (up to its first wildcard)."""
    out = bytearray()
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c in b"*?[":
            break
        if c == 0x5C:
            if i + 1 >= len(pattern):
                break
            i += 1
            c = pattern[i]
        out.append(c)
        i += 1
    return bytes(out)
