"""`rkv nemesis --netns`: nodes in their own network namespaces, faults made in the kernel.

The plumbing (rkv.nemesis.netns): namespaces reach each other and the harness; a one-way cut
drops exactly one direction (silently: a TCP connect times out instead of being refused);
a slow link delays exactly one direction; heal restores; nothing is left after close(), an
exception, or a crashed run (removed by the next run). Then a real cluster: a kernel
partition moves leadership while the nodes refuse fault requests (no hooks), and a bounded
`python -m rkv.nemesis --netns` run is clean. Without root or `ip netns` these tests FAIL
(they do not skip): CI runs as root.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from rkv.nemesis import NETNS_FAULT_KINDS
from rkv.nemesis.cluster import RPC_ERRORS, ProcessCluster, rpc_call
from rkv.nemesis.netns import (
    NetnsUnavailable,
    Network,
    check_available,
    leftovers,
    list_netns,
    remove_stale,
)
from rkv.net.rpc import RemoteError

ROOT = Path(__file__).resolve().parents[2]
PROBE = str(Path(__file__).with_name("netns_probe.py"))
CID = b"nemesis-netns-01"


@pytest.fixture(autouse=True, scope="module")
def _needs_netns() -> None:
    try:
        check_available()
    except NetnsUnavailable as e:
        pytest.fail(f"{e}: tests/nemesis/test_netns.py needs root and `ip netns` (no skip)")


@pytest.fixture(scope="module")
def net() -> Iterator[Network]:
    with Network.create(3) as network:
        yield network
    assert leftovers(network.prefix) == []


def probe(net: Network, i: int, *args: str) -> str:
    argv = [*net.launcher(net.addrs[i]), sys.executable, PROBE, *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout


def udp(net: Network, src: int, dst: int) -> float | None:
    """One-way lag of a datagram from node src to node dst, None if none arrived."""
    recv = subprocess.Popen(
        [*net.launcher(net.addrs[dst]), sys.executable, PROBE, "udp-recv", net.ips[dst], "2.5"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert recv.stdout is not None
    assert recv.stdout.readline().strip() == "bound"
    probe(net, src, "udp-send", net.ips[dst])
    out = recv.communicate(timeout=30)[0].split()
    return None if out == ["nothing"] else float(out[1])


def tcp(net: Network, src: int, dst: int) -> str:
    """Connect from node src to a closed port of node dst: refused (reachable) or timeout."""
    return probe(net, src, "tcp", net.ips[dst], "9", "1.0").strip()


def harness_tcp(net: Network, dst: int) -> str:
    try:
        socket.create_connection((net.ips[dst], 9), timeout=1.0).close()
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "timeout"
    return "connected"


def reachable(lag: float | None) -> bool:
    """Arrived without the delay of a slow link (the probes' scheduling on a busy machine
    adds milliseconds, a slow link in these tests 500)."""
    return lag is not None and lag < 0.3


def test_namespaces_talk_and_a_one_way_cut_drops_one_direction(net: Network) -> None:
    assert len(set(net.ips)) == 3 and all(ip.startswith("10.77.") for ip in net.ips)
    assert sorted(ns for ns in list_netns() if ns.startswith(net.prefix)) == sorted(
        [net.hub, *net.spaces]
    )
    for src, dst in ((0, 1), (1, 0), (1, 2)):
        assert reachable(udp(net, src, dst)), (src, dst)
    assert tcp(net, 0, 1) == "refused"
    assert harness_tcp(net, 1) == "refused"

    a0, a1 = net.addrs[0], net.addrs[1]
    net.set_drops(a0, [a1], [])  # node 0 loses its packets to node 1
    assert net.cuts() == {(net.ips[0], net.ips[1])}
    assert udp(net, 0, 1) is None
    assert reachable(udp(net, 1, 0))
    assert reachable(udp(net, 0, 2)) and reachable(udp(net, 2, 1))
    assert tcp(net, 0, 1) == "timeout"  # silently dropped, not refused or an error
    assert harness_tcp(net, 1) == "refused"  # the harness's clients are never cut
    assert harness_tcp(net, 0) == "refused"

    net.heal()
    assert net.cuts() == set()
    assert reachable(udp(net, 0, 1))
    assert tcp(net, 0, 1) == "refused"

    net.set_drops(a1, [], [a0])  # the same cut, set on the receiving side
    assert net.cuts() == {(net.ips[0], net.ips[1])}
    assert udp(net, 0, 1) is None and reachable(udp(net, 1, 0))
    net.set_drops(a0, [a1], [a1])  # and a symmetric one on top: the union is in force
    assert udp(net, 1, 0) is None
    net.set_drops(a0, [], [])
    assert net.cuts() == {(net.ips[0], net.ips[1])}  # node 1's drop_from is still set
    net.heal()
    assert reachable(udp(net, 0, 1)) and reachable(udp(net, 1, 0))


def test_a_slow_link_delays_one_direction(net: Network) -> None:
    net.set_slow([(net.addrs[0], net.addrs[1])], 0.5)
    lag = udp(net, 0, 1)
    assert lag is not None and 0.48 <= lag < 2.0, lag
    assert reachable(udp(net, 1, 0))
    assert reachable(udp(net, 2, 1))
    net.heal()
    assert reachable(udp(net, 0, 1))


def test_cleanup_after_an_exception_and_after_a_crashed_run() -> None:
    prefix = ""
    with pytest.raises(RuntimeError, match="boom"), Network.create(2, slow_links=False) as n:
        prefix = n.prefix
        assert leftovers(prefix)
        raise RuntimeError("boom")
    assert leftovers(prefix) == []

    # A run killed with SIGKILL: its namespaces stay, with a process running inside one.
    crashed = textwrap.dedent(
        """
        import os, signal, subprocess
        from rkv.nemesis.netns import Network
        n = Network.create(2)
        subprocess.Popen(["ip", "netns", "exec", n.spaces[0], "sleep", "120"],
                         start_new_session=True, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
        print(n.prefix, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", crashed], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    prefix = out.stdout.strip()
    assert prefix and len(leftovers(prefix)) == 4, out.stderr  # hub, 2 nodes, root link
    pids = subprocess.run(
        ["ip", "netns", "pids", f"{prefix}-n0"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert pids
    assert prefix in remove_stale()
    assert leftovers(prefix) == []
    deadline = time.monotonic() + 10
    while any(_running(pid) for pid in pids):  # killed, then reaped by init
        assert time.monotonic() < deadline, pids
        time.sleep(0.05)


def _running(pid: str) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_without_root_netns_exits_3_with_one_line() -> None:
    out = subprocess.run(
        [
            *("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"),
            *(sys.executable, "-m", "rkv.nemesis", "--netns", "--duration", "5"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 3, out
    assert out.stderr.strip().splitlines() == [
        "rkv nemesis: --netns needs root (it creates network namespaces)"
    ]


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 1)])
def test_ctrl_c_and_sigterm_stop_the_nodes_and_remove_the_namespaces(
    tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    work = tmp_path / "w"
    proc = subprocess.Popen(
        [*(sys.executable, "-m", "rkv.nemesis", "--netns"), "--workdir", str(work)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # SIGINT's default action even when the suite runs in the background of a shell,
        # which starts everything with SIGINT ignored (and Python keeps it so)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 60
        while not any("now leader" in log.read_text() for log in work.glob("10.77.*.log")):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(2.0)  # under load and faults
        assert len(leftovers(f"rkvn{proc.pid}-")) == 5  # hub, 3 nodes, root link
    finally:
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert leftovers(f"rkvn{proc.pid}-") == []
    assert _processes_mentioning(str(work)) == []


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


async def _role(addr: str) -> tuple[str, int]:
    try:
        st = await rpc_call(addr, {"t": "status"}, timeout=1.0)
    except RPC_ERRORS:
        return "unreachable", -1
    return str(st.get("role")), int(st.get("term") or 0)


async def test_a_kernel_partition_moves_leadership_without_fault_hooks(tmp_path: Path) -> None:
    network = Network.create(3, slow_links=False)
    try:
        async with ProcessCluster(tmp_path, 3, network=network) as cluster:
            with trio.fail_after(30):
                while (old := await cluster.leader()) is None:
                    await trio.sleep(0.1)
            term0 = (await _role(old))[1]
            # No hooks: the nodes refuse fault requests.
            with pytest.raises(RemoteError) as info:
                await rpc_call(old, {"t": "fault", "drop_to": [], "drop_from": []})
            assert info.value.code == "bad_request"
            others = [a for a in cluster.addrs if a != old]
            await cluster.set_fault(old, others, others)
            with trio.fail_after(15):
                while True:  # statuses reach the harness: client traffic is never cut
                    roles = {a: await _role(a) for a in others}
                    new = [a for a, (r, t) in roles.items() if r == "leader" and t > term0]
                    if new and (await _role(old))[0] != "leader":
                        break
                    await trio.sleep(0.1)
            put = {"t": "put", "c": CID, "s": 1, "k": b"k", "val": b"v"}
            with pytest.raises(RemoteError) as info:
                await rpc_call(old, put, timeout=3.0)  # cut off: cannot commit
            assert info.value.code in ("not_leader", "unavailable", "timeout")
            await rpc_call(new[0], {**put, "s": 2}, timeout=5.0)
            await cluster.heal()
            with trio.fail_after(15):
                while True:
                    got = await rpc_call(old, {"t": "get", "k": b"k", "stale": True})
                    if got.get("val") == b"v" and (await _role(old))[0] == "follower":
                        break
                    await trio.sleep(0.1)
        for log in tmp_path.glob("*.log"):
            assert "fault injection enabled" not in log.read_text()
    finally:
        network.close()
    assert leftovers(network.prefix) == []


@pytest.mark.e2e
def test_python_m_rkv_nemesis_netns_run_is_clean(tmp_path: Path) -> None:
    work = tmp_path / "w"
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "rkv.nemesis", "--netns", "--json", "--keep"),
            *("--duration", "40", "--nodes", "3", "--min-rounds", "1", "--seed", "2027"),
            *("--hold", "1,2", "--quiet", "0.3,1", "--workdir", str(work)),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stdout + stderr
    lines = stdout.strip().splitlines()
    assert len(lines) == 1
    data = json.loads(lines[0])
    assert data["verdict"] == "clean" and data["netns"] is True
    assert data["violations"] == 0 and data["lost_acknowledged_writes"] == 0
    assert data["crashes"] == 0 and data["replica_problems"] == []
    for kind in NETNS_FAULT_KINDS:
        assert data["faults"].get(kind, 0) > 0, data["faults"]
    for kind in ("get", "put", "cas", "delete"):
        assert data["operations"][kind].get("ok", 0) > 0, data["operations"]
    logs = list(work.glob("10.77.*.log"))
    assert len(logs) == 3
    for log in logs:
        assert "fault injection enabled" not in log.read_text()
    assert "packets passed" in (work / "delayline.log").read_text()
    assert leftovers(f"rkvn{proc.pid}-") == []
