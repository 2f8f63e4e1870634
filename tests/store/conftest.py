"""Fixtures for the store tests: one harness per store kind, so the conformance suite runs
unchanged against the LMDB store and the in-memory twin."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import Harness, Store


@pytest.fixture(params=["lmdb", "memory"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    h = Harness(request.param, tmp_path / "node")
    yield h
    h.close_all()


@pytest.fixture
def store(harness: Harness) -> Store:
    return harness.open()
