"""rkv.resp.glob: Redis' stringmatchlen semantics, against a regular-expression model for
the patterns a regex expresses the same way, and Redis' own corner cases by table."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rkv.resp.glob import literal_prefix, match


def as_regex(pattern: bytes) -> re.Pattern[bytes]:
    out = b""
    for c in pattern:
        ch = bytes([c])
        out += b".*" if ch == b"*" else b"." if ch == b"?" else re.escape(ch)
    return re.compile(out, re.DOTALL)


alphabet = st.sampled_from([b"a", b"b", b":", b"*", b"?"])
texts = st.lists(st.sampled_from([b"a", b"b", b":", b"*"]), min_size=1, max_size=10).map(b"".join)
patterns = st.lists(alphabet, max_size=8).map(b"".join)


@settings(max_examples=500, deadline=None)
@given(patterns, texts)
def test_star_and_question_mark_as_a_regex_would(pattern: bytes, text: bytes) -> None:
    assert match(pattern, text) == bool(as_regex(pattern).fullmatch(text))


@settings(max_examples=200, deadline=None)
@given(patterns, texts)
def test_every_match_starts_with_the_literal_prefix(pattern: bytes, text: bytes) -> None:
    if match(pattern, text):
        assert text.startswith(literal_prefix(pattern))


@pytest.mark.parametrize(
    ("pattern", "text", "matches"),
    [
        (b"h?llo", b"hello", True),
        (b"h*llo", b"heeeello", True),
        (b"h[ae]llo", b"hallo", True),
        (b"h[ae]llo", b"hillo", False),
        (b"h[^e]llo", b"hallo", True),
        (b"h[^e]llo", b"hello", False),
        (b"h[a-b]llo", b"hbllo", True),
        (b"h[b-a]llo", b"hallo", True),  # a reversed range counts
        (b"h\\*llo", b"h*llo", True),
        (b"h\\*llo", b"hello", False),
        (b"[\\]]", b"]", True),
        (b"[abc", b"c", True),  # an unclosed class takes the rest
        (b"*", b"", False),  # as Redis: nothing matches an empty string but ""
        (b"", b"", True),
        (b"a*a*a*a*a*a*a*a*a*a*a*b", b"a" * 200, False),  # no exponential backtracking
    ],
)
def test_redis_cases(pattern: bytes, text: bytes, matches: bool) -> None:
    assert match(pattern, text) is matches


def test_nocase() -> None:
    assert match(b"SAVE", b"save", nocase=True)
    assert not match(b"SAVE", b"save")


@pytest.mark.parametrize(
    ("pattern", "prefix"),
    [(b"user:*", b"user:"), (b"*", b""), (b"a\\*b*", b"a*b"), (b"ab?c", b"ab"), (b"x[ab]", b"x")],
)
def test_literal_prefix(pattern: bytes, prefix: bytes) -> None:
    assert literal_prefix(pattern) == prefix
