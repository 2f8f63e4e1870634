from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

from .fake import FakeCluster


@pytest.fixture
async def cluster(nursery: trio.Nursery) -> AsyncIterator[FakeCluster]:
    c = FakeCluster(3)
    await nursery.start(c.run)
    yield c
