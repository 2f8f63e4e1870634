"""rkv.stagetimes: windows, transitions, counts and the dump (issue 18's instrument)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rkv import stagetimes
from rkv.stagetimes import StageClock


def test_marks_outside_a_window_only_count() -> None:
    c = StageClock(node="n")
    c.count("turns")
    c.mark("turn_start")
    assert c.samples == {}
    assert c.counts == {"turns": 1}


def test_a_window_records_each_transition_and_its_total() -> None:
    c = StageClock(node="n")
    c.frame_read()
    c.begin("put")
    c.mark("queued")
    c.count("turns")
    c.mark("turn_start")
    c.mark("answer_written")  # closes a put window
    c.mark("turn_end")  # after the window: not recorded
    assert list(c.samples) == [
        "put: frame_read > queued",
        "put: queued > turn_start",
        "put: turn_start > answer_written",
        "put: total",
    ]
    assert c.kind is None
    assert c.counts == {"frames_in": 1, "windows": 1, "put/windows": 1, "turns": 1, "put/turns": 1}
    total = c.samples["put: total"][0]
    parts = sum(c.samples[k][0] for k in c.samples if k != "put: total")
    assert total == parts


@pytest.mark.parametrize(("kind", "end"), sorted(stagetimes.END_OF.items()))
def test_each_kind_closes_at_its_own_mark(kind: str, end: str) -> None:
    c = StageClock()
    c.begin(kind)
    other = next(e for k, e in stagetimes.END_OF.items() if k != kind)
    c.mark(other)
    assert c.kind == kind
    c.mark(end)
    assert c.kind is None


def test_samples_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stagetimes, "MAX_SAMPLES", 3)
    c = StageClock()
    for _ in range(5):
        c.begin("append")
        c.mark("ack_sent")
    assert len(c.samples["append: frame_read > ack_sent"]) == 3
    assert c.summary()["stages"]["append: frame_read > ack_sent"]["n"] == 5


def test_off_unless_the_environment_names_a_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stagetimes, "clock", None)
    monkeypatch.delenv(stagetimes.ENV, raising=False)
    assert stagetimes.enable_from_env("127.0.0.1:1") is None
    assert stagetimes.clock is None
    monkeypatch.setenv(stagetimes.ENV, str(tmp_path / "st"))
    c = stagetimes.enable_from_env("127.0.0.1:7001")
    assert c is not None and stagetimes.clock is c
    c.begin("put")
    c.mark("answer_written")
    path = c.dump()
    assert path == tmp_path / "st" / "stages-127_0_0_1_7001.json"
    data = json.loads(path.read_text())
    assert data["node"] == "127.0.0.1:7001"
    assert data["stages"]["put: total"]["n"] == 1
    assert data["counts"]["windows"] == 1
