"""`python -m rkv.nemesis.delayline DEV`: a user-space delay line on a TUN device, for the slow
links of `rkv nemesis --netns` (the kernel here has no sch_netem).

Runs inside the hub namespace of rkv.nemesis.netns, which routes the packets of every slow
link into the TUN device DEV. This process reads each IP packet from DEV, holds it for the
current delay, and writes it back unchanged, in arrival order; the hub's kernel then forwards
it to its destination.

Owns: the TUN device DEV (created by this process, so it disappears when the process exits),
the FIFO of held packets (at most MAX_HELD; a packet arriving at a full FIFO is dropped, like
a full router queue) and the delay. Control: "delay SECONDS" lines on stdin; EOF on stdin
ends the process. It prints one line, "ready", on stdout once DEV exists, and nothing else
there. Must not: change, reorder, create or route packets (rkv.nemesis.netns decides which
packets come here, and the hub's routing table where they go next).
"""

from __future__ import annotations

import collections
import fcntl
import os
import selectors
import struct
import sys
import time
from collections.abc import Sequence

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
MAX_HELD = 20_000
"""Packets held at once (at 5,000 packets/s and 1 s of delay the FIFO holds 5,000)."""


def open_tun(name: str) -> int:
    """A new TUN device `name` in this process's network namespace (non-blocking fd)."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


class DelayLine:
    """The FIFO: `receive` stamps each packet with its release time, `due` hands back those
    whose time has come. Release times never decrease, so the order is kept even when the
    delay is lowered while packets are held."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.held: collections.deque[tuple[float, bytes]] = collections.deque()
        self.dropped = 0
        self.passed = 0

    def receive(self, packet: bytes, now: float) -> None:
        if len(self.held) >= MAX_HELD:
            self.dropped += 1
            return
        release = now + self.delay
        if self.held:
            release = max(release, self.held[-1][0])
        self.held.append((release, packet))

    def due(self, now: float) -> list[bytes]:
        out = []
        while self.held and self.held[0][0] <= now:
            out.append(self.held.popleft()[1])
        self.passed += len(out)
        return out

    def timeout(self, now: float) -> float | None:
        return max(0.0, self.held[0][0] - now) if self.held else None


def serve(fd: int, control: int, line: DelayLine) -> None:
    """Pass packets until `control` (stdin) reaches EOF."""
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    sel.register(control, selectors.EVENT_READ)
    pending = b""
    while True:
        for key, _ in sel.select(line.timeout(time.monotonic())):
            if key.fd == fd:
                for _ in range(256):
                    try:
                        packet = os.read(fd, 65536)
                    except BlockingIOError:
                        break
                    line.receive(packet, time.monotonic())
            else:
                data = os.read(control, 4096)
                if not data:
                    return
                pending += data
                *lines, pending = pending.split(b"\n")
                for text in lines:
                    words = text.split()
                    if len(words) == 2 and words[0] == b"delay":
                        line.delay = max(0.0, float(words[1]))
        for packet in line.due(time.monotonic()):
            try:
                os.write(fd, packet)
            except OSError:
                line.dropped += 1


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m rkv.nemesis.delayline DEV", file=sys.stderr)
        return 2
    fd = open_tun(args[0])
    print("ready", flush=True)
    line = DelayLine()
    try:
        serve(fd, sys.stdin.fileno(), line)
    finally:
        os.close(fd)
        print(
            f"delayline {args[0]}: {line.passed} packets passed, {line.dropped} dropped",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
