"""The cheap closed-loop generator: one process of asyncio Protocols (on uvloop when installed)
that speak a system's wire directly (issue 18, "a fair anchor").

Owns: the generator a driver asks for with ``spec["generator"] == "raw"`` (etcd by default,
rkv as `rkv:raw`): the same closed loop, measurement window, fill and WorkerResult as the trio
worker in bench/loadgen.py, with the per-request path cut to what a closed loop needs. A
response is a `data_received` callback that parses a status and a length (bench/rawwire.py),
notes the latency and writes the next request, pre-built but for its key: no task, no
coroutine, no timer per request (timeouts are one sweep a second), and latencies go to a list
that becomes the histogram after the window. Must not start servers or decide what to compare.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import time
from typing import Any

from bench.loadgen import ERROR_BACKOFF, REQUEST_TIMEOUT, STALL_S, WorkerArgs, key_of
from bench.rawwire import EtcdWire, RkvWire, WireError, b64, parse_http_response, parse_rkv_frame
from bench.stats import Histogram, WorkerResult

FILL_ATTEMPTS = 50
KEY_CACHE_MAX = 1 << 17
"""Key spaces up to this size have their keys (and base64 forms) built once, up front."""


LOOP_ENV = "BENCH_RAWGEN_LOOP"
"""Set to "asyncio" to run the generator on asyncio's own loop even where uvloop is installed
(to measure what uvloop buys, or to check the fallback)."""


def loop_name() -> str:
    """The event loop the generator runs on: "uvloop" when installed, else "asyncio"."""
    if os.environ.get(LOOP_ENV) == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def _new_loop() -> asyncio.AbstractEventLoop:
    if loop_name() == "asyncio":
        return asyncio.new_event_loop()
    import uvloop

    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


class _Failed(Exception):
    """A fill could not write a key (the whole worker fails, like the trio one)."""


class _Gen:
    """One worker process's clients, window and counters."""

    def __init__(self, a: WorkerArgs, loop: asyncio.AbstractEventLoop) -> None:
        self.a = a
        self.loop = loop
        self.system = a.spec["system"]
        if self.system not in ("etcd", "rkv"):
            raise ValueError(f"no raw generator for {self.system!r}")
        self.addrs: list[str] = list(a.spec["addrs"])
        self.fill = a.fill_total > 0
        now_wall, now = time.time(), time.perf_counter()
        self.t_start = now + (a.start_at - now_wall)
        self.win_start = self.t_start + a.warmup
        self.win_end = self.win_start + a.duration
        self.lat: list[float] = []
        self.errors = 0
        self.kinds: dict[str, int] = {}
        self.next_key = a.fill_offset
        self.end_key = a.fill_offset + a.fill_total
        self.cpu: dict[str, float] = {}
        self.stalled = 0
        self.done: asyncio.Future[None] = loop.create_future()
        self.active = 0
        self.stopping = False
        self.clients: list[_Client] = []
        n = a.keys if a.keys > 0 else 0
        self._keys = [key_of(i) for i in range(n)] if 0 < n <= KEY_CACHE_MAX else None
        self._k64 = [b64(k) for k in self._keys] if self._keys is not None else None

    def key(self, i: int) -> bytes:
        return self._keys[i] if self._keys is not None else key_of(i)

    def key64(self, i: int) -> bytes:
        return self._k64[i] if self._k64 is not None else b64(key_of(i))

    def error(self, t0: float, name: str) -> None:
        if self.fill or self.win_start <= t0 <= self.win_end:
            self.errors += 1
            self.kinds[name] = self.kinds.get(name, 0) + 1

    def client_done(self) -> None:
        self.active -= 1
        if self.active == 0 and self.fill and not self.done.done():
            self.done.set_result(None)

    def fail(self, exc: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(exc)

    def sweep(self) -> None:
        """Once a second: a request unanswered for REQUEST_TIMEOUT fails, its connection too."""
        if self.stopping:
            return
        now = time.perf_counter()
        for c in self.clients:
            if c.t0 and now - c.t0 > REQUEST_TIMEOUT:
                t0, c.t0 = c.t0, 0.0
                self.error(t0, "TooSlowError")
                c.drop()
        self.loop.call_later(1.0, self.sweep)

    def window_start(self) -> None:
        self.cpu["start"] = time.process_time()

    def window_end(self) -> None:
        self.cpu["end"] = time.process_time()
        limit = self.win_end - STALL_S
        self.stalled = sum(1 for c in self.clients if c.t0 and c.t0 < limit)
        if not self.done.done():
            self.done.set_result(None)

    def at(self, t: float, fn: Any) -> None:
        self.loop.call_later(max(0.0, t - time.perf_counter()), fn)


class _Client(asyncio.Protocol):
    """One closed-loop client: one connection, one request outstanding."""

    def __init__(self, gen: _Gen, j: int) -> None:
        a = gen.a
        self.gen = gen
        self.rng = random.Random(a.seed * 1_000_003 + a.client_offset + j)
        self.value = self.rng.randbytes(a.value_size)
        self.addr = gen.addrs[(a.client_offset + j) % len(gen.addrs)]
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.t0 = 0.0
        """Start (perf_counter) of the outstanding request; 0.0 when none is."""
        self.fill_key: int | None = None
        self.attempts = 0
        self.finished = False
        self.redirect: str | None = None
        self.etcd: EtcdWire | None = None
        self.rkv: RkvWire | None = None
        if gen.system == "etcd":
            host, port = self.addr.rsplit(":", 1)
            self.etcd = EtcdWire(host, int(port), self.value, len(key_of(0)))
        else:
            self.rkv = RkvWire(self.value)
        self.started = False

    # -- connection ---------------------------------------------------------------------------
    async def connect(self) -> None:
        host, port = self.addr.rsplit(":", 1)
        await self.gen.loop.create_connection(lambda: self, host, int(port))

    def reconnect(self, delay: float) -> None:
        async def go() -> None:
            if delay:
                await asyncio.sleep(delay)
            if self.finished or self.gen.stopping:
                return
            try:
                await self.connect()
            except OSError as e:
                self.failed(time.perf_counter(), type(e).__name__, reconnect=True)

        self.gen.loop.create_task(go())

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.buf.clear()
        if self.started and not self.t0 and not self.finished:
            self.send_next()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.finished or self.gen.stopping:
            return
        if self.redirect is not None:
            self.addr, self.redirect = self.redirect, None
            self.reconnect(0.0)
            return
        if self.t0:
            t0, self.t0 = self.t0, 0.0
            self.failed(t0, type(exc).__name__ if exc else "ConnectionError", reconnect=True)
        else:
            self.reconnect(ERROR_BACKOFF)

    def drop(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # -- the closed loop ----------------------------------------------------------------------
    def begin(self) -> None:
        self.started = True
        if self.transport is not None and not self.t0:
            self.send_next()

    def send_next(self) -> None:
        gen = self.gen
        now = time.perf_counter()
        if gen.fill:
            if self.fill_key is None:
                if gen.next_key >= gen.end_key:
                    self.finish()
                    return
                self.fill_key = gen.next_key
                gen.next_key += 1
                self.attempts = 0
            i = self.fill_key % gen.a.keys if gen.a.keys > 0 else self.fill_key
            put = True
        else:
            if now >= gen.win_end:
                self.finish()
                return
            i = self.rng.randrange(gen.a.keys)
            w = gen.a.workload
            put = w == "put" or (w == "mixed" and self.rng.random() >= gen.a.read_ratio)
        if self.etcd is not None:
            k = gen.key64(i)
            req = self.etcd.put(k) if put else self.etcd.get(k)
        else:
            assert self.rkv is not None
            k = gen.key(i)
            req = self.rkv.put(k) if put else self.rkv.get(k)
        assert self.transport is not None
        self.t0 = now
        self.transport.write(req)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        try:
            if self.etcd is not None:
                r = parse_http_response(buf)
                if r is None:
                    return
                status, _, end = r
                err = None if status == 200 else f"HTTP{status}"
            else:
                f = parse_rkv_frame(buf)
                if f is None:
                    return
                frame, end = f
                err = self._rkv_reply(frame)
        except WireError:
            self.t0, t0 = 0.0, self.t0
            self.gen.error(t0, "WireError")
            self.drop()
            return
        if end == len(buf):
            buf.clear()
        else:  # an answer nobody waits for (none with one request in flight): drop it too
            del buf[:end]
        t0, t1 = self.t0, time.perf_counter()
        self.t0 = 0.0
        if not t0:
            return  # answered after the sweep gave up on it
        if err is not None:
            self.failed(t0, err, reconnect=False)
            return
        gen = self.gen
        if gen.fill:
            gen.lat.append(t1 - t0)
            self.fill_key = None
        elif t0 >= gen.win_start and t1 <= gen.win_end:
            gen.lat.append(t1 - t0)
        if self.redirect is not None:
            self.drop()  # connection_lost connects to the leader
            return
        self.send_next()

    def _rkv_reply(self, frame: dict[str, Any]) -> str | None:
        t = frame.get("t")
        hint = frame.get("leader_addr")
        if t == "ok":
            # A follower forwarded the write and named the leader: go there next time, as
            # rkv's client does (rkv/client.py).
            if isinstance(hint, str) and hint != self.addr and hint in self.gen.addrs:
                self.redirect = hint
            return None
        code = str(frame.get("code", t))
        if code == "not_leader" and isinstance(hint, str) and hint in self.gen.addrs:
            self.redirect = hint
        return code

    def failed(self, t0: float, name: str, *, reconnect: bool) -> None:
        gen = self.gen
        gen.error(t0, name)
        if gen.fill and self.fill_key is not None:
            self.attempts += 1
            if self.attempts >= FILL_ATTEMPTS:
                gen.fail(_Failed(f"key {self.fill_key} could not be written after 50 attempts"))
                return
            delay = min(1.0, ERROR_BACKOFF * 2**self.attempts)
        else:
            delay = ERROR_BACKOFF
        if self.redirect is not None and self.transport is not None:
            self.drop()
        elif reconnect or self.transport is None:
            self.reconnect(delay)
        else:
            gen.loop.call_later(delay, self._resume)

    def _resume(self) -> None:
        if self.finished or self.gen.stopping:
            return
        # Not when a reconnect in the meantime has sent the next request already.
        if self.transport is not None and not self.t0:
            self.send_next()

    def finish(self) -> None:
        if not self.finished:
            self.finished = True
            self.gen.client_done()


async def _main(a: WorkerArgs) -> WorkerResult:
    loop = asyncio.get_running_loop()
    gen = _Gen(a, loop)
    gen.clients = [_Client(gen, j) for j in range(a.clients)]
    gen.active = len(gen.clients)
    await asyncio.gather(*(c.connect() for c in gen.clients))
    try:
        await asyncio.sleep(max(0.0, gen.t_start - time.perf_counter()))
        loop.call_later(1.0, gen.sweep)
        if gen.fill:
            cpu0, t0 = time.process_time(), time.perf_counter()
            for c in gen.clients:
                c.begin()
            try:
                await asyncio.wait_for(gen.done, a.fill_timeout)
            except TimeoutError:
                raise RuntimeError(
                    f"fill not done after {a.fill_timeout:.0f}s "
                    f"({len(gen.lat)} of {a.fill_total} keys)"
                ) from None
            cpu_s, elapsed = time.process_time() - cpu0, time.perf_counter() - t0
            stalled = 0
        else:
            gen.at(gen.win_start, gen.window_start)
            gen.at(gen.win_end, gen.window_end)
            for c in gen.clients:
                c.begin()
            await gen.done
            cpu_s = gen.cpu.get("end", math.nan) - gen.cpu.get("start", math.nan)
            elapsed, stalled = gen.win_end - gen.win_start, gen.stalled
    finally:
        gen.stopping = True
        for c in gen.clients:
            if c.transport is not None:
                c.transport.abort()
    hist = Histogram()
    for s in gen.lat:
        hist.record(round(s * 1e6))
    return WorkerResult(
        ops=hist.count,
        errors=gen.errors,
        elapsed_s=elapsed,
        cpu_s=cpu_s,
        hist=hist,
        error_kinds=gen.kinds,
        stalled_at_end=stalled,
    )


def run_worker(a: WorkerArgs) -> WorkerResult:
    loop = _new_loop()
    try:
        return loop.run_until_complete(_main(a))
    finally:
        # Reconnects still waiting out their backoff when the window closed.
        left = asyncio.all_tasks(loop)
        for t in left:
            t.cancel()
        if left:
            loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
        loop.close()
