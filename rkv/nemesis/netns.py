"""Linux network namespaces for `rkv nemesis --netns`: every node in its own namespace with its
own address, partitions and slow links made in the kernel (no fault hooks in the node).

Owns, for one run (every name starts with the run's prefix `rkvn<pid>-<seq>`):
- a hub namespace `<prefix>-hub` holding a bridge `br0` (10.77.K.2/24);
- a veth from the root namespace into the bridge (`<prefix>r`, 10.77.K.1/24): the harness's
  clients, so client traffic has its own source address and is never cut or slowed;
- one namespace `<prefix>-n<i>` per node with a veth `eth0` into the bridge (10.77.K.11+i/24).
  Its local-table rule is moved from priority 0 to LOCAL_PRIORITY, so that cut rules at
  CUT_PRIORITY are consulted before a packet is delivered locally;
- one-way cuts src -> dst: a `blackhole` rule in dst's namespace for packets from src's
  address arriving on eth0, so src's packets to dst vanish silently and dst's packets to src
  still arrive (TCP to or from src then stalls both ways, as on a real one-way failure);
- slow links src -> dst: src's route to dst goes via the hub, whose policy routing (table
  SLOW_TABLE for packets arriving on br0) sends it through the delay line
  (rkv.nemesis.delayline, a TUN device in the hub) and then on to dst;
- removing all of it: `close()` (also run at interpreter exit), and `remove_stale()` for the
  leftovers of crashed runs (a prefix whose pid is no longer alive).
K (the subnet) is chosen under a file lock among those no root-namespace address uses.

Must not: touch a namespace, link, rule or route it did not create; use addresses outside
10.77.0.0/16; give any namespace a route beyond its /24 (nothing can leave the namespaces,
and nothing is sent to the host's networks); start rkv nodes (rkv.nemesis.cluster does, with
the argv prefix from `launcher`); decide which faults to inject (rkv.nemesis.faults).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import itertools
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import rkv

PREFIX = "rkvn"
NODE_PORT = 7000
CUT_PRIORITY = 100
LOCAL_PRIORITY = 1000
SLOW_TABLE = 100
DELAY_DEV = "rkvdelay"
_NAME = re.compile(rf"^({PREFIX}(\d+)-\d+)(-hub|-n\d+|r)$")
_PKG_ROOT = Path(rkv.__file__).resolve().parent.parent
_LOCK_PATH = Path(tempfile.gettempdir()) / "rkv-nemesis-netns.lock"
_seq = itertools.count()
_NO_FILTERS = ("rp_filter", "send_redirects")


class NetnsUnavailable(RuntimeError):
    """This machine cannot run `--netns` (not root, no `ip netns`, no /dev/net/tun)."""


class NetnsError(RuntimeError):
    """An `ip` or `sysctl` command failed."""


def _tool(name: str) -> str | None:
    for path in (shutil.which(name), f"/usr/sbin/{name}", f"/sbin/{name}"):
        if path and os.access(path, os.X_OK):
            return path
    return None


def check_available(slow_links: bool = True) -> None:
    """Raise NetnsUnavailable (one line saying why) unless `--netns` can run here."""
    if not sys.platform.startswith("linux"):
        raise NetnsUnavailable("--netns needs Linux network namespaces")
    if os.geteuid() != 0:
        raise NetnsUnavailable("--netns needs root (it creates network namespaces)")
    for tool in ("ip", "sysctl"):
        if _tool(tool) is None:
            raise NetnsUnavailable(f"--netns needs the `{tool}` command")
    try:
        run_ip(["netns", "list"])
    except NetnsError as e:
        raise NetnsUnavailable(f"--netns: `ip netns` does not work here: {e}") from None
    if slow_links and not os.path.exists("/dev/net/tun"):
        raise NetnsUnavailable("--netns needs /dev/net/tun for slow links (or leave out slow_link)")


def _ip() -> str:
    return _tool("ip") or "ip"


def _run(argv: Sequence[str], stdin: str | None = None, check: bool = True) -> str:
    r = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60, check=False)
    if check and r.returncode != 0:
        raise NetnsError(f"{' '.join(argv[:6])}: {r.stderr.strip()}")
    return r.stdout


def run_ip(args: Sequence[str], ns: str | None = None, check: bool = True) -> str:
    """`ip [-n ns] ARGS`; its stdout (NetnsError if it fails and `check`)."""
    return _run([_ip(), *(["-n", ns] if ns else []), *args], check=check)


def _batch(commands: Sequence[str], ns: str | None = None, force: bool = False) -> None:
    """Several `ip` commands in one process; stops at the first failure unless `force`."""
    if commands:
        opts = [*(["-n", ns] if ns else []), *(["-force"] if force else []), "-batch", "-"]
        _run([_ip(), *opts], "\n".join(commands) + "\n", check=not force)


def _sysctl(ns: str, *settings: str) -> None:
    _run([_ip(), "netns", "exec", ns, _tool("sysctl") or "sysctl", "-qw", *settings])


def in_namespace(ns: str) -> tuple[str, ...]:
    """argv prefix that runs a command in namespace `ns`; the command gets SIGKILL when the
    thread that started it dies (setpriv --pdeathsig), so a crashed harness leaves no node."""
    setpriv = _tool("setpriv")
    die = (setpriv, "--pdeathsig", "KILL") if setpriv else ()
    return (*die, _ip(), "netns", "exec", ns)


def list_netns() -> list[str]:
    return [line.split()[0] for line in run_ip(["netns", "list"]).splitlines() if line.strip()]


def _root_links() -> list[str]:
    out = run_ip(["-o", "link", "show"])
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(prefix: str) -> None:
    """Kill what still runs in the prefix's namespaces, then delete its links and namespaces."""
    spaces = [ns for ns in list_netns() if ns.startswith(prefix + "-")]
    for ns in spaces:
        for pid in run_ip(["netns", "pids", ns], check=False).split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
    if prefix + "r" in _root_links():
        run_ip(["link", "del", prefix + "r"], check=False)
    _batch([f"netns del {ns}" for ns in spaces], force=True)


def remove_stale() -> list[str]:
    """Remove the namespaces and links of earlier runs whose process is gone; their prefixes."""
    dead: set[str] = set()
    for name in [*list_netns(), *_root_links()]:
        m = _NAME.match(name)
        if m and not _alive(int(m.group(2))):
            dead.add(m.group(1))
    for prefix in sorted(dead):
        _remove(prefix)
    return sorted(dead)


def leftovers(prefix: str) -> list[str]:
    """Namespaces and root-namespace links of a run (`rkvn<pid>-<seq>`) or of every run of a
    process (`rkvn<pid>-`) that still exist (for tests)."""
    names = [*list_netns(), *_root_links()]
    return [n for n in names if (m := _NAME.match(n)) and prefix in (m[1], f"{PREFIX}{m[2]}-")]


class Network:
    """The namespaces of one run; `Network.create(n)` builds them, `close()` removes them."""

    def __init__(self, n: int, port: int = NODE_PORT, slow_links: bool = True) -> None:
        if not 1 <= n <= 200:
            raise ValueError("a netns cluster has 1..200 nodes")
        self.seq = next(_seq)
        self.prefix = f"{PREFIX}{os.getpid()}-{self.seq}"
        self.hub = f"{self.prefix}-hub"
        self.spaces = [f"{self.prefix}-n{i}" for i in range(n)]
        self.port = port
        self.slow_links = slow_links
        self.subnet = 0
        self._lock = threading.Lock()
        self._drops: dict[str, tuple[frozenset[str], frozenset[str]]] = {}
        self._cuts: set[tuple[str, str]] = set()
        self._slow: set[tuple[str, str]] = set()
        self._delayline: subprocess.Popen[bytes] | None = None
        self._closed = False

    @classmethod
    def create(
        cls, n: int, port: int = NODE_PORT, slow_links: bool = True, log_dir: Path | None = None
    ) -> Network:
        """Build the namespaces (removing stale ones first); on any failure nothing is left."""
        net = cls(n, port, slow_links)
        atexit.register(net.close)
        try:
            net._build(log_dir)
        except BaseException:
            net.close()
            raise
        return net

    # -- addresses ---------------------------------------------------------------------------

    def _host(self, last: int) -> str:
        return f"10.77.{self.subnet}.{last}"

    @property
    def client_ip(self) -> str:
        return self._host(1)

    @property
    def hub_ip(self) -> str:
        return self._host(2)

    @property
    def ips(self) -> list[str]:
        return [self._host(11 + i) for i in range(len(self.spaces))]

    @property
    def addrs(self) -> list[str]:
        return [f"{ip}:{self.port}" for ip in self.ips]

    def _index(self, addr: str) -> int:
        ip = addr.rsplit(":", 1)[0]
        try:
            return self.ips.index(ip)
        except ValueError:
            raise ValueError(f"{addr} is not a node of {self.prefix}") from None

    def namespace(self, addr: str) -> str:
        return self.spaces[self._index(addr)]

    def launcher(self, addr: str) -> tuple[str, ...]:
        """argv prefix that runs a command in the node's namespace."""
        return in_namespace(self.namespace(addr))

    # -- building ----------------------------------------------------------------------------

    def _build(self, log_dir: Path | None) -> None:
        with _LOCK_PATH.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            remove_stale()
            in_use = run_ip(["-4", "addr"]) + run_ip(["-4", "route"])
            used = {int(k) for k in re.findall(r"\b10\.77\.(\d+)\.", in_use)}
            free = [k for k in range(1, 255) if k not in used]
            if not free:
                raise NetnsError("no free 10.77.K.0/24 subnet")
            self.subnet = free[(os.getpid() + self.seq) % len(free)]
            root = self.prefix + "r"
            _batch(
                [
                    f"netns add {self.hub}",
                    *(f"netns add {ns}" for ns in self.spaces),
                    f"link add {root} type veth peer name root netns {self.hub}",
                    f"addr add {self.client_ip}/24 dev {root}",
                    f"link set {root} up",
                ]
            )
        # The hub forwards slow links' packets, also those coming back out of the TUN device.
        conf = [f"net.ipv4.conf.{d}.{k}=0" for d in ("all", "default") for k in _NO_FILTERS]
        _sysctl(self.hub, "net.ipv4.ip_forward=1", *conf)
        hub = [
            "link set lo up",
            "link add br0 type bridge",
            "link set br0 up",
            f"addr add {self.hub_ip}/24 dev br0",
            "link set root master br0",
            "link set root up",
            f"rule add iif br0 priority {CUT_PRIORITY} table {SLOW_TABLE}",
        ]
        for i, ns in enumerate(self.spaces):
            hub += [
                f"link add n{i} type veth peer name eth0 netns {ns}",
                f"link set n{i} master br0",
                f"link set n{i} up",
            ]
        _batch(hub, self.hub)
        for ns, ip in zip(self.spaces, self.ips, strict=True):
            _batch(
                [
                    "link set lo up",
                    f"addr add {ip}/24 dev eth0",
                    "link set eth0 up",
                    f"rule add priority {LOCAL_PRIORITY} table local",
                    "rule del priority 0",
                ],
                ns,
            )
        if self.slow_links:
            self._start_delayline(log_dir)

    def _start_delayline(self, log_dir: Path | None) -> None:
        env = {**os.environ, "PYTHONPATH": str(_PKG_ROOT)}
        log = (log_dir / "delayline.log").open("ab") if log_dir else subprocess.DEVNULL
        try:
            argv = [*in_namespace(self.hub), sys.executable, "-m", "rkv.nemesis.delayline"]
            self._delayline = subprocess.Popen(
                [*argv, DELAY_DEV],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=env,
            )
        finally:
            if not isinstance(log, int):
                log.close()
        assert self._delayline.stdout is not None
        ready, _, _ = select.select([self._delayline.stdout], [], [], 30.0)
        if not ready or self._delayline.stdout.readline().strip() != b"ready":
            raise NetnsError("the delay line did not start (see delayline.log)")
        _batch(
            [f"link set {DELAY_DEV} up", f"route add default dev {DELAY_DEV} table {SLOW_TABLE}"],
            self.hub,
        )

    # -- faults ------------------------------------------------------------------------------

    def set_drops(self, addr: str, drop_to: Sequence[str], drop_from: Sequence[str]) -> None:
        """What node `addr` loses: its packets to `drop_to` and those from `drop_from` (this
        replaces what was set for `addr` before; the cuts in force are the union over nodes)."""
        for a in (addr, *drop_to, *drop_from):
            self._index(a)
        with self._lock:
            self._drops[addr] = (frozenset(drop_to), frozenset(drop_from))
            self._sync_cuts()

    def set_slow(self, links: Iterable[tuple[str, str]], delay: float) -> None:
        """Delay every packet from src to dst by `delay` seconds, for each (src, dst) given;
        this replaces the slow links in force (an empty list restores them all)."""
        want = {(self.ips[self._index(s)], self.ips[self._index(d)]) for s, d in links}
        if any(s == d for s, d in want):
            raise ValueError("a slow link needs two different nodes")
        if want and self._delayline is None:
            raise NetnsError("this network was built without slow links")
        with self._lock:
            if self._delayline is not None and self._delayline.stdin is not None and want:
                self._delayline.stdin.write(f"delay {max(0.0, delay):.6f}\n".encode())
                self._delayline.stdin.flush()
            per_ns: dict[str, list[str]] = defaultdict(list)
            for s, d in self._slow - want:
                per_ns[self._ns_of_ip(s)].append(f"route del {d}/32")
            for s, d in want - self._slow:
                per_ns[self._ns_of_ip(s)].append(f"route replace {d}/32 via {self.hub_ip} dev eth0")
            for ns, commands in per_ns.items():
                _batch(commands, ns)
            self._slow = want

    def heal(self) -> None:
        """Remove every cut and slow link."""
        self.set_slow([], 0.0)
        with self._lock:
            self._drops.clear()
            self._sync_cuts()

    def cuts(self) -> set[tuple[str, str]]:
        """The one-way cuts in force, as (src ip, dst ip)."""
        with self._lock:
            return set(self._cuts)

    def _ns_of_ip(self, ip: str) -> str:
        return self.spaces[self.ips.index(ip)]

    def _sync_cuts(self) -> None:
        ip = {a: self.ips[self._index(a)] for a in self.addrs}
        want: set[tuple[str, str]] = set()
        for x, (to, frm) in self._drops.items():
            want |= {(ip[x], ip[t]) for t in to if t != x}
            want |= {(ip[f], ip[x]) for f in frm if f != x}
        per_ns: dict[str, list[str]] = defaultdict(list)
        rule = f"iif eth0 priority {CUT_PRIORITY} blackhole"
        for s, d in self._cuts - want:
            per_ns[self._ns_of_ip(d)].append(f"rule del from {s} {rule}")
        for s, d in want - self._cuts:
            per_ns[self._ns_of_ip(d)].append(f"rule add from {s} {rule}")
        for ns, commands in per_ns.items():
            _batch(commands, ns)
        self._cuts = want

    # -- teardown ----------------------------------------------------------------------------

    def close(self) -> None:
        """Remove everything this network created (idempotent; safe at any point of create)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        atexit.unregister(self.close)
        proc = self._delayline
        if proc is not None:
            with contextlib.suppress(OSError):
                if proc.stdin is not None:
                    proc.stdin.close()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        _remove(self.prefix)

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
