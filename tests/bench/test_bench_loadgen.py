"""bench/loadgen.py's closed loop: a request past REQUEST_TIMEOUT is cancelled by the sweep
and counted as an error, and its client carries on (no cancel scope per request)."""

from __future__ import annotations

import time

import pytest
import trio
import trio.testing

from bench import loadgen
from bench.loadgen import WorkerArgs, _closed_loop


class HangsOnce:
    """A KV client whose `hang_at`-th put never answers; every other put takes 1 ms."""

    def __init__(self, hang_at: int) -> None:
        self.calls = 0
        self.hang_at = hang_at

    async def put(self, key: bytes, value: bytes) -> None:
        self.calls += 1
        if self.calls == self.hang_at:
            await trio.sleep_forever()
        await trio.sleep(0.001)


def args(clients: int, duration: float) -> WorkerArgs:
    return WorkerArgs(
        spec={},
        clients=clients,
        client_offset=0,
        workload="put",
        value_size=10,
        keys=10,
        duration=duration,
        warmup=0.0,
        start_at=time.time(),
        seed=1,
    )


async def test_a_hung_request_is_cancelled_counted_and_its_client_goes_on(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loadgen, "REQUEST_TIMEOUT", 2.0)
    hung, fine = HangsOnce(hang_at=3), HangsOnce(hang_at=0)
    with trio.fail_after(60):
        res = await _closed_loop(args(2, 10.0), [hung, fine])
    assert res.errors == 1
    assert res.error_kinds == {"TooSlowError": 1}
    # The hung client lost about REQUEST_TIMEOUT (+ up to one sweep) and then went on.
    assert 0 < fine.calls - hung.calls <= (2.0 + loadgen.SWEEP_S + 0.1) / 0.001
    assert hung.calls > 3 + 5000
    assert res.stalled_at_end == 0


async def test_the_worker_ends_with_its_window(autojump_clock: trio.testing.MockClock) -> None:
    t0 = trio.current_time()
    res = await _closed_loop(args(3, 2.0), [HangsOnce(0) for _ in range(3)])
    assert res.errors == 0
    assert trio.current_time() - t0 < 2.0 + 0.1  # the sweep does not hold it
