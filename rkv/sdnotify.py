"""The systemd notification protocol (sd_notify), spoken by `rkv serve` under a `Type=notify`
unit (deploy/rkv.service, docs/operations.md "Running under systemd").

systemd passes a unix datagram socket in `$NOTIFY_SOCKET` (a path, or an abstract name when
it starts with `@`); each datagram holds newline-separated `KEY=VALUE` lines: `READY=1`,
`STOPPING=1`, `WATCHDOG=1`, `STATUS=...`. `$WATCHDOG_USEC` (for the process `$WATCHDOG_PID`
names, if set) asks for a `WATCHDOG=1` at least that often. No dependency: it is a few lines.

Owns: reading those variables, the socket, sending. Without `$NOTIFY_SOCKET` every call does
nothing. A failed send is logged once (the first) and never raised: systemd's absence or
trouble must never stop a node. Must not: decide when the node is ready, stopping or alive
(rkv.node.entry does, from rkv.node.health's liveness), or import anything of rkv.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger("rkv.sdnotify")


class Notifier:
    """Sends sd_notify messages to one address; inert when `address` is None."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_usec = watchdog_usec
        """The watchdog timeout systemd asked for (microseconds), or None: no pings."""
        self.sent = 0
        self.errors = 0
        self.stopping_sent = False
        """STOPPING=1 was sent: the node is shutting down."""
        self._sock: socket.socket | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        """The notifier systemd asked for through the environment (os.environ by default)."""
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET") or None
        if address is not None and not address.startswith(("/", "@")):
            # vsock: and other transports of newer systemd: not spoken here
            log.warning("NOTIFY_SOCKET=%s: not a unix socket, not notifying systemd", address)
            address = None
        return cls(address, watchdog_usec(env))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings (half the timeout, as sd_watchdog_enabled(3)
        advises), or None when systemd asked for no watchdog."""
        if self.address is None or not self.watchdog_usec:
            return None
        return self.watchdog_usec / 2e6

    def notify(self, *lines: str) -> bool:
        """Send `lines` (each `KEY=VALUE`) as one datagram; True if it was sent."""
        if self.address is None:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)  # never hold up the event loop
            self._sock.sendto("\n".join(lines).encode(), target)
        except OSError as e:
            self.errors += 1
            if self.errors == 1:
                log.warning(
                    "cannot notify systemd at %s (%s: %s); the node goes on (further failures "
                    "are not logged)",
                    self.address,
                    type(e).__name__,
                    e,
                )
            return False
        self.sent += 1
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *_status(status))

    def stopping(self, status: str | None = None) -> bool:
        self.stopping_sent = True
        return self.notify("STOPPING=1", *_status(status))

    def watchdog(self, status: str | None = None) -> bool:
        return self.notify("WATCHDOG=1", *_status(status))

    def status(self, status: str) -> bool:
        return self.notify(*_status(status))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_usec(env: Mapping[str, str]) -> int | None:
    """`$WATCHDOG_USEC` if it is meant for this process (`$WATCHDOG_PID` unset or ours) and
    valid, else None."""
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec if usec > 0 else None


def _status(status: str | None) -> list[str]:
    # one line: a newline would start another KEY=VALUE
    return [] if status is None else ["STATUS=" + " ".join(status.split())]
