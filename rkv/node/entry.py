"""The process entry: open the store, run a node until a signal, turn how it stopped into the
process exit code (`serve_main`, which `rkv serve` wraps; `run_node` for in-process nodes).

Owns: the store's lifetime (opened before the node, closed after it, even on cancellation),
the repair step that runs once the store is closed, signal handling (SIGTERM hands leadership
over first), telling systemd how the process does (`tell_systemd`: READY, STOPPING, watchdog
pings over rkv.sdnotify), the fault-injection switch of the environment, and the exit codes
(rkv.errors ExitCode). Must not: serve anything itself (rkv.node.server does).
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import trio

from rkv import stagetimes
from rkv.config import NodeConfig
from rkv.errors import ExitCode
from rkv.node.common import Fatal, NodeStartError, one_line
from rkv.node.inbox import log
from rkv.node.server import Node
from rkv.raft.types import ConfState
from rkv.repair import rebuild
from rkv.sdnotify import Notifier
from rkv.store import open_store
from rkv.store.errors import StoreError, StoreFullError, StoreIdentityError

FAULT_INJECTION_ENV = "RKV_FAULT_INJECTION"
HAND_OVER_SECONDS = 1.5
"""How long a stopping leader waits for a follower to take over (rolling restarts)."""
SYSTEMD_STATUS_SECONDS = 5.0
"""Without a watchdog, how often the STATUS= systemd shows (`systemctl status`) is refreshed."""


def _open(cfg: NodeConfig) -> Any:
    try:
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise NodeStartError(
            ExitCode.STORE_ERROR, f"cannot create data dir {cfg.data_dir}: {e.strerror or e}"
        ) from None
    try:
        return open_store(
            str(cfg.data_dir),
            cluster_id=cfg.cluster_id,
            node_id=cfg.id,
            voters=cfg.voters,
            map_size=cfg.map_size,
        )
    except StoreIdentityError as e:
        raise NodeStartError(
            ExitCode.IDENTITY_MISMATCH, f"data dir {cfg.data_dir}: {one_line(str(e))}"
        ) from None
    except StoreFullError as e:
        raise NodeStartError(ExitCode.STORE_FULL, f"data dir {cfg.data_dir}: {e}") from None
    except StoreError as e:
        raise NodeStartError(
            ExitCode.STORE_ERROR, f"data dir {cfg.data_dir}: {one_line(str(e))}"
        ) from None


def _leaf(exc: BaseException, types: tuple[type[BaseException], ...]) -> BaseException | None:
    """The first exception of `types` inside (possibly nested) exception groups."""
    if isinstance(exc, types):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for sub in exc.exceptions:
            found = _leaf(sub, types)
            if found is not None:
                return found
    return None


async def run_node(
    cfg: NodeConfig, *, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run one node until cancelled; `task_status.started(node)` once it is serving.

    Raises NodeStartError (with an exit code and a one-line message) for a port in use, a data
    dir of another cluster or node, a full or unusable store.
    """
    store = _open(cfg)
    repair: tuple[Path, ConfState] | None = None
    try:
        try:
            # reads the log back (the configuration changes up to the applied index)
            node = Node(cfg, store)
        except StoreFullError as e:
            raise NodeStartError(ExitCode.STORE_FULL, one_line(f"store full: {e}")) from None
        except StoreError as e:
            raise NodeStartError(
                ExitCode.STORE_ERROR, one_line(f"store failed, stopping: {e}")
            ) from None
        try:
            await node.run(task_status=task_status)
        except BaseException as exc:
            fatal = _leaf(exc, (Fatal,))
            if isinstance(fatal, Fatal) and fatal.code == ExitCode.REPAIR:
                repair = node.repair  # done below, once the store is closed
            elif isinstance(fatal, Fatal):
                raise NodeStartError(fatal.code, fatal.msg) from None
            if repair is None:
                os_err = _leaf(exc, (OSError,))
                if isinstance(os_err, OSError) and not node.listening:
                    code = (
                        ExitCode.PORT_IN_USE
                        if os_err.errno in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL)
                        # a host that does not resolve cannot be bound either (not a bug)
                        or isinstance(os_err, socket.gaierror)
                        or os_err.errno == socket.EAI_NONAME
                        else ExitCode.ERROR
                    )
                    raise NodeStartError(code, one_line(str(os_err))) from None
                raise
    finally:
        with trio.CancelScope(shield=True):
            # A transaction still running in a worker thread has finished by now: to_thread
            # calls are not abandoned on cancellation.
            store.close()
    if repair is not None:
        aside, conf = repair
        try:
            rebuild(cfg.data_dir, aside, cluster_id=cfg.cluster_id, node_id=cfg.id, conf=conf)
        except (OSError, StoreError) as e:
            raise NodeStartError(ExitCode.STORE_ERROR, f"repair: {one_line(str(e))}") from None
        raise NodeStartError(
            ExitCode.REPAIR,
            f"stopped for repair: the damaged data dir is now {aside}; start the node again "
            "with the same flags: it rebuilds its state from the cluster",
        )


def _serving(node: Node) -> str:
    cfg = node.cfg
    extra = "".join(
        f", {name} {port}"
        for name, port in (("http", node.http_port), ("resp", node.resp_port))
        if port is not None
    )
    return f"serving {cfg.id} on {cfg.host}:{node.port}{extra} (cluster {cfg.cluster_id})"


def _role(node: Node) -> str:
    v = node.raft.view
    return (
        f"{v.role.name.lower()}, term {v.term}, leader {v.leader or 'unknown'}, "
        f"applied {v.applied}; {_serving(node)}"
    )


async def tell_systemd(node: Node, notifier: Notifier) -> None:
    """Tell systemd (a `Type=notify` unit) that `node` serves: READY=1 at once (call it once
    the node listens: `run_node` has started), then, if systemd asked for a watchdog
    (WatchdogSec=), WATCHDOG=1 every half its timeout as long as the raft loop is alive, as
    /livez judges it (rkv.node.health.Liveness): a stuck loop stops the pings and systemd
    restarts the process. STATUS= (`systemctl status`) follows the role, term and leader.
    Does nothing without $NOTIFY_SOCKET; never raises for a failed send (rkv.sdnotify)."""
    if not notifier.enabled:
        return
    status = _serving(node)
    notifier.ready(status)
    interval = notifier.watchdog_interval
    probe = node.health.liveness()
    while True:
        await trio.sleep(interval if interval is not None else SYSTEMD_STATUS_SECONDS)
        alive, reason = probe.check()
        now = _role(node) if alive else f"unhealthy: {reason}"
        changed = now != status and not notifier.stopping_sent  # keep "stopping: ..." shown
        if alive and interval is not None:
            notifier.watchdog(now if changed else None)
        elif changed:
            notifier.status(now)
        status = now


async def _cancel_on_signal(signals: Any, scope: trio.CancelScope) -> None:
    await signals.__anext__()
    scope.cancel()


async def _main(cfg: NodeConfig, after_start: Callable[[], Awaitable[None]] | None = None) -> int:
    notifier = Notifier.from_env()
    try:
        return await _serve_until_signal(cfg, notifier, after_start)
    finally:
        notifier.close()


async def _serve_until_signal(
    cfg: NodeConfig,
    notifier: Notifier,
    after_start: Callable[[], Awaitable[None]] | None = None,
) -> int:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            stopped: list[int] = []
            running: list[Node] = []

            async def watch() -> None:
                async for sig in signals:
                    log.info("%s: %s received, shutting down", cfg.id, signal.Signals(sig).name)
                    stopped.append(sig)
                    notifier.stopping(f"stopping: {signal.Signals(sig).name} received")
                    if sig == signal.SIGTERM and running:
                        # Rolling restarts: hand leadership over first (bounded); a second
                        # signal stops at once.
                        with trio.move_on_after(HAND_OVER_SECONDS + 0.5):
                            async with trio.open_nursery() as inner:
                                inner.start_soon(_cancel_on_signal, signals, inner.cancel_scope)
                                await running[0].hand_over(HAND_OVER_SECONDS)
                                inner.cancel_scope.cancel()
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(watch)
            running.append(await nursery.start(run_node, cfg))
            nursery.start_soon(tell_systemd, running[0], notifier)
            if after_start is not None:
                nursery.start_soon(after_start)
    return ExitCode.OK


def serve_main(cfg: NodeConfig, after_start: Callable[[], Awaitable[None]] | None = None) -> int:
    """Run a node in this process until SIGINT/SIGTERM; returns the process exit code.

    `after_start` runs beside the node once it serves (`rkv serve --join` promotes the new
    node with it); it must handle its own errors.

    Errors that stop the node are printed as one line on stderr (see ExitCode).
    RKV_FAULT_INJECTION=1 in the environment enables the partition hooks (`{"t": "fault"}`
    requests); it is read here, once, and never on by default.
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
    if os.environ.get(FAULT_INJECTION_ENV) == "1":
        cfg = replace(cfg, fault_injection=True)
        log.warning("%s: fault injection enabled (%s=1): testing only", cfg.id, FAULT_INJECTION_ENV)
    clock = stagetimes.enable_from_env(cfg.id)
    try:
        return int(trio.run(_main, cfg, after_start))
    except BaseException as exc:
        err = _leaf(exc, (NodeStartError,))
        if isinstance(err, NodeStartError):
            print(f"rkv serve: error: {err.msg}", file=sys.stderr)
            return int(err.code)
        if _leaf(exc, (KeyboardInterrupt,)) is not None:
            return int(ExitCode.OK)
        log.exception("rkv serve: unexpected error")
        print(f"rkv serve: error: {one_line(f'{type(exc).__name__}: {exc}')}", file=sys.stderr)
        return int(ExitCode.ERROR)
    finally:
        if clock is not None:
            try:
                clock.dump()
            except OSError as e:
                log.warning("%s: stage times not written: %s", cfg.id, e)
