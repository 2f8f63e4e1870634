"""The recipes for blocking code: `rkv.SyncLock` and `rkv.SyncElection` over a SyncClient.

Owns: `SyncLock` and `SyncElection`, `with` forms of rkv.Lock and rkv.Election for code
without trio, and `_Host`, what they share: the async recipe itself runs on the SyncClient's
trio thread (SyncClient._start), in one task that enters its `async with` (the lease is
granted and kept alive there by rkv.recipes.session, as for the async recipe), runs the
calls sent to it inside the block one at a time (an election's campaign, proclaim, resign),
and leaves the block when the `with` ends (the lease revoked: its keys go). The body of the
`with` runs in the caller's thread, which trio cannot cancel: if the lease or the key is lost
meanwhile, the async block ends with rkv.LockLost, `lost` holds it, `check()` raises it, a
call in flight or made after raises it, and the `with` raises it on exit (unless the body
raised an error of its own). Writes that must not outlive the lock should be guarded by the
fencing token or `is_owner()` (a txn compare), as with the async lock.
Must not: re-implement the recipes (rkv.recipes.lock, election, session do the work), hold a
task past the `with` (or past SyncClient.close), print, or use the node runtime.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, suppress
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import trio

from rkv.client import Cmp, SyncClient
from rkv.client_reads import as_bytes
from rkv.errors import LockLost, Timeout
from rkv.recipes.election import Election
from rkv.recipes.lock import Lock
from rkv.recipes.queue import MAX_WAITERS
from rkv.txn import Compare


@dataclass(slots=True)
class _Call:
    """A call run inside the held block: `fn`, then its value or error, and `done`."""

    fn: Callable[[], Awaitable[Any]]
    done: trio.Event = field(default_factory=trio.Event)
    ran: bool = False
    value: Any = None
    error: Exception | None = None


class _Host:
    """One task on a SyncClient's loop holding `async with cm`: it runs the calls sent to it
    inside the block and leaves the block when asked, or when the block ends by itself
    (`error`: LockLost, or what leaving the block raised). Made and used on the loop."""

    def __init__(self, cm: AbstractAsyncContextManager[Any], what: str) -> None:
        self.cm = cm
        self.what = what
        self.error: Exception | None = None
        self.finished = trio.Event()
        self.leave = trio.Event()
        self.scope = trio.CancelScope()
        # unbuffered: a call is either taken by the host (which then sets its `done`) or
        # its send fails once the host has finished (the receiver closed)
        self._send, self._recv = trio.open_memory_channel[_Call](0)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        started = False
        try:
            with self.scope:
                async with self.cm:
                    started = True
                    task_status.started()
                    await self._calls()
        except Exception as exc:  # after `started` an error would end the client's loop
            if not started:
                raise
            self.error = exc
        finally:
            self._recv.close()
            self.finished.set()

    async def _calls(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._stop_on_leave, nursery.cancel_scope)
            async for call in self._recv:
                try:
                    call.value = await call.fn()
                    call.ran = True
                except Exception as exc:
                    call.error = exc
                finally:
                    call.done.set()

    async def _stop_on_leave(self, scope: trio.CancelScope) -> None:
        await self.leave.wait()
        scope.cancel()

    def _ended(self) -> Exception:
        return self.error or RuntimeError(f"{self.what} is no longer held")

    async def ask(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        """Run `fn` inside the block: its value or error; the block's error (LockLost) if
        the block ends first or meanwhile."""
        if self.finished.is_set() or self.leave.is_set():
            raise self._ended()
        call = _Call(fn)
        try:
            await self._send.send(call)
        except trio.BrokenResourceError:
            raise self._ended() from None
        await call.done.wait()
        if call.error is not None:
            raise call.error
        if not call.ran:  # cancelled: the block ended under it
            await self.finished.wait()
            raise self._ended()
        return call.value

    async def cancel(self) -> None:
        """Give up: a waiting `async with` withdraws, a held block is released."""
        self.scope.cancel()

    async def release(self) -> Exception | None:
        """Leave the block (the lease revoked); the error it ended with, if any."""
        self.leave.set()
        await self.finished.wait()
        return self.error


class _Held:
    """`with obj:` hosts `obj._cm()` on the SyncClient's loop (one `with` at a time)."""

    _sync: SyncClient
    _host: _Host | None = None

    def _cm(self) -> AbstractAsyncContextManager[Any]:
        raise NotImplementedError

    def _entered(self) -> _Host:
        if self._host is None:
            raise RuntimeError(f"{self!r}: use it inside `with`")
        return self._host

    @property
    def lost(self) -> LockLost | None:
        """The LockLost the held block ended with while the `with` still runs (else None)."""
        host = self._host
        return host.error if host is not None and isinstance(host.error, LockLost) else None

    def check(self) -> None:
        """Raise the LockLost if the lease or the key was lost meanwhile."""
        lost = self.lost
        if lost is not None:
            raise lost

    def __enter__(self) -> Self:
        if self._host is not None:
            raise RuntimeError(f"{self!r} is already entered")

        async def start() -> _Host:  # made on the loop (its channel and events are trio's)
            return _Host(self._cm(), repr(self))

        host = self._sync._run(start)
        try:
            self._sync._start(host.serve)
        except BaseException:  # KeyboardInterrupt while waiting: the task must not go on
            with suppress(RuntimeError):  # the client closed: so did the task
                self._sync._run(host.cancel)
            raise
        self._host = host
        self._acquired()
        return self

    def _acquired(self) -> None:
        pass

    def _released(self) -> None:
        pass

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        host, self._host = self._host, None
        assert host is not None
        error = self._sync._run(host.release)
        self._released()
        if error is not None and exc is None:
            raise error


class SyncLock(_Held):
    """rkv.Lock for blocking code: ``with rkv.SyncLock(db, name, ttl=10) as lock:`` waits
    for the lock (rkv.Timeout after `timeout` seconds), holds it (its lease renewed on the
    client's loop) and releases it when the block ends, an error included. `revision` is the
    fencing token; `lost`/`check()` tell whether it was lost meanwhile, and the `with`
    raises rkv.LockLost at its end if so. Arguments as rkv.Lock's."""

    def __init__(
        self,
        client: SyncClient,
        name: str | bytes,
        ttl: float = 60.0,
        *,
        timeout: float | None = None,
        max_waiters: int = MAX_WAITERS,
        value: bytes = b"",
    ) -> None:
        self._sync = client
        self.lock = Lock(
            client._client, name, ttl, timeout=timeout, max_waiters=max_waiters, value=value
        )
        """The async lock this runs."""
        self.key: bytes | None = None
        """The lock's key while the `with` runs."""
        self.revision: int | None = None
        """The fencing token (the key's create revision) while the `with` runs."""
        self.lease_id: int | None = None
        """The lock's lease while the `with` runs."""

    def _cm(self) -> AbstractAsyncContextManager[Any]:
        return self.lock

    def _acquired(self) -> None:
        self.key, self.revision, self.lease_id = (
            self.lock.key,
            self.lock.revision,
            self.lock.lease_id,
        )

    def _released(self) -> None:
        self.key = self.revision = self.lease_id = None

    def is_owner(self) -> Compare:
        """A txn compare that holds only while the lock is held (see rkv.Lock.is_owner); it
        stays false once the lock was lost, even while the `with` still runs."""
        if self.key is None or self.revision is None:
            raise RuntimeError("the lock is not held")
        return Cmp.create_revision(self.key, "==", self.revision)

    def __repr__(self) -> str:
        return f"SyncLock({self.lock.name!r})"


class SyncElection(_Held):
    """rkv.Election for blocking code. ``with rkv.SyncElection(db, name, ttl=10) as e:``
    holds the candidate's lease; inside it `campaign(value)` blocks until leader (rkv.Timeout
    after `timeout` seconds, the candidacy withdrawn), `proclaim` and `resign` as the async
    ones. `leader()` and `observe()` (a blocking iterator) need no `with`. Losing the lease
    or the leader's key: `lost`, `check()`, and rkv.LockLost from the next call and from the
    `with`'s end. Arguments as rkv.Election's."""

    def __init__(
        self,
        client: SyncClient,
        name: str | bytes,
        ttl: float = 60.0,
        *,
        max_waiters: int = MAX_WAITERS,
    ) -> None:
        self._sync = client
        self.election = Election(client._client, name, ttl, max_waiters=max_waiters)
        """The async election this runs."""

    def _cm(self) -> AbstractAsyncContextManager[Any]:
        return self.election

    @property
    def revision(self) -> int | None:
        """The fencing token while leader (None otherwise)."""
        return self.election.revision

    @property
    def key(self) -> bytes | None:
        """This candidate's key while leader (None otherwise)."""
        return self.election.key

    def campaign(self, value: bytes | str, *, timeout: float | None = None) -> int:
        """Join the candidates and return once leader: the fencing token. rkv.Timeout after
        `timeout` seconds (None: no limit), the candidacy withdrawn."""
        if timeout is not None and not timeout > 0:
            raise ValueError(f"a campaign timeout must be positive seconds, got {timeout!r}")
        v = as_bytes(value, "value")
        host = self._entered()

        async def campaign() -> int:
            with trio.move_on_after(timeout if timeout is not None else float("inf")) as scope:
                return await self.election.campaign(v)
            assert scope.cancelled_caught
            raise Timeout(f"{self!r}: not leader within {timeout:g} s")

        r: int = self._sync._run(host.ask, campaign)
        return r

    def proclaim(self, value: bytes | str) -> None:
        """Set the leader's value while still leader (rkv.LockLost if not)."""
        v = as_bytes(value, "value")
        host = self._entered()
        self._sync._run(host.ask, lambda: self.election.proclaim(v))

    def resign(self) -> None:
        """Stop leading (nothing if not leading); `campaign` may be called again."""
        host = self._entered()
        self._sync._run(host.ask, self.election.resign)

    def leader(self) -> tuple[bytes, int] | None:
        """The current leader's (value, fencing token), or None."""
        r: tuple[bytes, int] | None = self._sync._run(self.election.leader)
        return r

    def observe(self) -> Iterator[tuple[bytes, int]]:
        """The leader, then each change of leader or of its value (see Election.observe), as
        a blocking iterator; leaving the loop ends the watch."""
        return self._sync._watch_steps(self.election.observe())

    def __repr__(self) -> str:
        return f"SyncElection({self.election.name!r})"
