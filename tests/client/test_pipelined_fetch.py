"""The one pipelined chunk fetch behind downloads and backups (rkv.client._fetch_pipelined):
chunks come out in order, at most PIPELINE reads are in flight, and the first error is
raised as itself, not as an ExceptionGroup."""

from __future__ import annotations

import random

import pytest
import trio

from rkv.client import PIPELINE, _fetch_pipelined
from rkv.errors import IntegrityError


async def test_in_order_and_bounded() -> None:
    rng = random.Random(7)
    inflight = peak = 0
    got: list[bytes] = []

    async def read(n: int) -> bytes:
        nonlocal inflight, peak
        inflight += 1
        peak = max(peak, inflight)
        await trio.sleep(rng.random() / 1000)  # finish out of order
        inflight -= 1
        return b"%d" % n

    async def consume(data: bytes) -> None:
        got.append(data)
        await trio.sleep(0)

    await _fetch_pipelined(range(0, 50 * 3, 3), read, consume)
    assert got == [b"%d" % n for n in range(0, 150, 3)]
    assert 1 < peak <= PIPELINE


@pytest.mark.parametrize("where", ["read", "consume"])
async def test_first_error_is_raised_as_itself(where: str) -> None:
    async def read(n: int) -> bytes:
        if where == "read" and n == 5:
            raise IntegrityError("chunk 5 has no data")
        await trio.sleep(0)
        return b"x"

    consumed = 0

    async def consume(data: bytes) -> None:
        nonlocal consumed
        consumed += 1
        if where == "consume" and consumed == 3:
            raise IntegrityError("too many bytes")

    with pytest.raises(IntegrityError):
        await _fetch_pipelined(range(100), read, consume)
    assert consumed < 100
