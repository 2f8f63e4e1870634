"""Running under systemd (deploy/, docs/operations.md "Running under systemd"): the sd_notify
protocol against a fake NOTIFY_SOCKET (READY=1 only once the ports accept connections,
WATCHDOG=1 pings that stop when the raft loop is stuck, STOPPING=1 on SIGTERM), the unit file's
keys (and `systemd-analyze verify` where it is installed), and the example hosts' options,
checked against `rkv serve`'s own parser."""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import typer.main

import rkv.node.health
from rkv.config import NodeConfig
from rkv.node import HAND_OVER_SECONDS, run_node
from rkv.node.entry import tell_systemd
from rkv.sdnotify import Notifier, watchdog_usec

from .conftest import ROOT, configs, free_ports, rkv_env

DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "rkv.service"
HOSTS = sorted((DEPLOY / "examples").glob("host*.env"))


# -- the fake systemd end ---------------------------------------------------------------------


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    """A bound unix datagram socket (in tmp_path, or a short temporary dir if that path is
    too long for a unix socket): (its address for NOTIFY_SOCKET, the socket)."""
    path = tmp_path / "notify.sock"
    short = None
    if len(str(path)) > 100:
        short = tempfile.mkdtemp(prefix="rkv-sd-")
        path = Path(short) / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    try:
        yield str(path), sock
    finally:
        sock.close()
        if short is not None:
            shutil.rmtree(short, ignore_errors=True)


def receive(sock: socket.socket, timeout: float) -> dict[str, str] | None:
    """The next datagram's KEY=VALUE lines, or None if none came within `timeout`."""
    sock.settimeout(timeout)
    try:
        data = sock.recv(4096)
    except TimeoutError:
        return None
    return dict(line.split("=", 1) for line in data.decode().splitlines())


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


# -- the notifier on its own -------------------------------------------------------------------


def test_without_notify_socket_nothing_is_sent() -> None:
    n = Notifier.from_env({"WATCHDOG_USEC": "400000"})
    assert not n.enabled and n.watchdog_interval is None
    assert not n.ready("x") and not n.watchdog() and not n.stopping()
    assert n.sent == 0 and n.errors == 0


def test_messages_reach_a_path_and_an_abstract_socket(
    notify_socket: tuple[str, socket.socket],
) -> None:
    address, sock = notify_socket
    n = Notifier.from_env({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "400000"})
    assert n.watchdog_interval == pytest.approx(0.2)
    assert n.ready("serving\non two lines")
    assert receive(sock, 5) == {"READY": "1", "STATUS": "serving on two lines"}
    n.close()

    name = f"rkv-test-{os.getpid()}-{time.monotonic_ns()}"
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    abstract.bind("\0" + name)
    try:
        n = Notifier.from_env({"NOTIFY_SOCKET": "@" + name})
        assert n.watchdog_interval is None  # no WATCHDOG_USEC: no pings
        assert n.stopping() and n.stopping_sent
        assert receive(abstract, 5) == {"STOPPING": "1"}
        n.close()
    finally:
        abstract.close()


def test_watchdog_usec_is_only_for_the_process_watchdog_pid_names() -> None:
    assert watchdog_usec({"WATCHDOG_USEC": "30000000"}) == 30_000_000
    assert watchdog_usec({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())})
    assert watchdog_usec({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_usec({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_usec({"WATCHDOG_USEC": "0"}) is None
    assert Notifier.from_env({"NOTIFY_SOCKET": "vsock:2:1234"}).enabled is False


def test_a_failed_send_is_logged_once_and_never_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    n = Notifier(str(tmp_path / "nobody-listens.sock"), 400_000)
    with caplog.at_level(logging.WARNING, logger="rkv.sdnotify"):
        assert not n.ready()
        assert not n.watchdog()
        assert not n.watchdog()
    assert n.errors == 3 and n.sent == 0
    warnings = [r for r in caplog.records if "cannot notify systemd" in r.getMessage()]
    assert len(warnings) == 1


# -- a real `rkv serve` process ----------------------------------------------------------------


@pytest.mark.e2e
def test_rkv_serve_notifies_ready_watchdog_and_stopping(
    tmp_path: Path, notify_socket: tuple[str, socket.socket]
) -> None:
    address, sock = notify_socket
    port, http_port = free_ports(2)
    env = rkv_env(NOTIFY_SOCKET=address, WATCHDOG_USEC="400000")
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "rkv", "serve", "--port", str(port)),
                *("--http-port", str(http_port), "--data-dir", str(tmp_path / "data")),
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        first = receive(sock, 60)
        assert first is not None, log_path.read_text()
        # READY=1 is the first message, and by then both ports accept connections
        assert first.get("READY") == "1", first
        assert accepts(port) and accepts(http_port)
        assert f"127.0.0.1:{port}" in first["STATUS"] and f"http {http_port}" in first["STATUS"]

        # WATCHDOG=1 every ~0.2 s (WATCHDOG_USEC / 2); generous bounds for a busy machine
        pings: list[float] = []
        statuses = []
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            msg = receive(sock, 2.0)
            assert msg is not None, "no watchdog ping for 2 s"
            assert msg.get("WATCHDOG") == "1", msg
            pings.append(time.monotonic())
            statuses += [msg["STATUS"]] if "STATUS" in msg else []
        assert 4 <= len(pings) <= 20, pings
        # the role shows in STATUS= once the one-node cluster has elected itself
        assert any(s.startswith("leader, term ") for s in statuses), statuses

        proc.send_signal(signal.SIGTERM)
        msg = receive(sock, 10)
        while msg is not None and "WATCHDOG" in msg and "STOPPING" not in msg:
            msg = receive(sock, 10)
        assert msg is not None and msg.get("STOPPING") == "1", msg
        assert msg["STATUS"] == "stopping: SIGTERM received"
        assert proc.wait(timeout=30) == 0, log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- the watchdog follows liveness (in process) ------------------------------------------------


async def test_watchdog_pings_stop_when_the_raft_loop_is_stuck(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rkv.node.health, "LIVENESS_STALL", 0.3)
    name = f"rkv-test-{os.getpid()}-{time.monotonic_ns()}"
    systemd = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    await systemd.bind("\0" + name)

    async def next_message(timeout: float) -> dict[str, str] | None:
        with trio.move_on_after(timeout):
            data = await systemd.recv(4096)
            return dict(line.split("=", 1) for line in data.decode().splitlines())
        return None

    notifier = Notifier.from_env({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "400000"})
    cfg = configs(tmp_path, 1)[0]
    try:
        async with trio.open_nursery() as nursery:
            node = await nursery.start(run_node, cfg)
            nursery.start_soon(tell_systemd, node, notifier)
            msg = await next_message(10)
            assert msg is not None and msg["READY"] == "1"
            pings = 0
            while pings < 3:
                msg = await next_message(5)
                assert msg is not None and msg.get("WATCHDOG") == "1", msg
                pings += 1

            stuck = trio.Event()

            async def hang() -> None:  # a Ready whose fsync never returns
                stuck.set()
                await trio.sleep_forever()

            monkeypatch.setattr(node.raft.ready, "handle", hang)
            monkeypatch.setattr(node.replica, "has_ready", lambda: True)
            with trio.fail_after(5):
                await stuck.wait()
            # at most a few more pings (the stall is noticed after 0.3 s), then only the
            # unhealthy STATUS=, and no ping for well over the 0.4 s watchdog timeout
            unhealthy = None
            late_pings = 0
            with trio.move_on_after(3.0):
                while unhealthy is None:
                    msg = await next_message(3.0)
                    if msg is not None and "WATCHDOG" in msg:
                        late_pings += 1
                    elif msg is not None:
                        unhealthy = msg
            assert unhealthy is not None, "no unhealthy STATUS="
            assert late_pings <= 5
            assert unhealthy["STATUS"].startswith("unhealthy: raft loop stalled for "), unhealthy
            quiet_until = trio.current_time() + 1.5
            while trio.current_time() < quiet_until:
                msg = await next_message(quiet_until - trio.current_time())
                assert msg is None or "WATCHDOG" not in msg, msg
            nursery.cancel_scope.cancel()
    finally:
        notifier.close()
        systemd.close()


# -- the unit file -----------------------------------------------------------------------------


def unit_entries(text: str) -> dict[str, list[tuple[str, str]]]:
    """section -> [(key, value)] of a systemd unit file (keys may repeat; \\ continues a
    line)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for raw in text.replace("\\\n", " ").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"{line!r} outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"not KEY=VALUE: {line!r}"
        current.append((key.strip(), value.strip()))
    return sections


def one(entries: list[tuple[str, str]], key: str) -> str:
    values = [v for k, v in entries if k == key]
    assert len(values) == 1, f"{key}: {values}"
    return values[0]


def seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+)(s|min)?", value)
    assert m, value
    return int(m[1]) * (60 if m[2] == "min" else 1)


def env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of an EnvironmentFile (values may be double-quoted)."""
    out = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        out[key.strip()] = value
    return out


def test_the_unit_file_has_the_keys_the_recipe_relies_on() -> None:
    unit = unit_entries(UNIT.read_text())
    svc = unit["Service"]
    assert one(svc, "Type") == "notify" and one(svc, "NotifyAccess") == "main"
    # a stuck loop (LIVENESS_STALL) stops the pings well before systemd's timeout
    assert seconds(one(svc, "WatchdogSec")) >= 2 * rkv.node.health.LIVENESS_STALL
    # a stopping leader hands over first, then the node closes: well within the stop timeout
    assert seconds(one(svc, "TimeoutStopSec")) >= 10 * HAND_OVER_SECONDS
    assert one(svc, "User") not in ("", "root") and one(svc, "Restart") == "on-failure"
    assert int(one(svc, "LimitNOFILE")) >= 4096
    assert one(svc, "ProtectSystem") == "strict" and one(svc, "NoNewPrivileges") == "yes"
    assert one(svc, "ReadWritePaths") == "/var/lib/rkv"
    assert "/etc/rkv/rkv.env" in [v for k, v in svc if k == "EnvironmentFile"]
    exec_start = one(svc, "ExecStart").split()
    assert exec_start[0].endswith("/rkv") and exec_start[1] == "serve"
    assert exec_start[-1] == "$RKV_OPTS"
    # no secret in the unit: the token is a credential systemd hands over as a file
    assert one(svc, "LoadCredential") == "cluster-token:/etc/rkv/cluster-token"
    assert exec_start[2:4] == ["--cluster-token-file", "%d/cluster-token"]
    assert "--cluster-token " not in UNIT.read_text()
    assert not [v for k, v in svc if k == "Environment" and "RKV_CLUSTER_TOKEN" in v]
    # exit codes a restart cannot fix are not restarted; a repair (18) is
    prevent = one(svc, "RestartPreventExitStatus").split()
    assert "2" in prevent and "18" not in prevent
    assert unit["Install"] == [("WantedBy", "multi-user.target")]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    # verify wants ExecStart's program to exist: point it at this venv's interpreter
    text = UNIT.read_text().replace("/opt/rkv/bin/rkv serve", f"{sys.executable} -m rkv serve")
    unit = tmp_path / "rkv.service"
    unit.write_text(text)
    r = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 0, r.stderr
    assert "Unknown key" not in r.stderr and "ignoring" not in r.stderr, r.stderr


# -- the three hosts' options ------------------------------------------------------------------


def serve_command() -> Any:
    """`rkv serve`'s click command (typer's own copy of click: duck-typed)."""
    from rkv.cli import app

    return typer.main.get_command(app).commands["serve"]  # type: ignore[attr-defined]


def test_the_example_hosts_use_only_real_serve_options_and_form_one_cluster() -> None:
    assert len(HOSTS) == 3
    command = serve_command()
    exec_args = one(unit_entries(UNIT.read_text())["Service"], "ExecStart").split()[2:-1]
    cluster_ids = set()
    ids = []
    for host in HOSTS:
        env = env_file(host)
        assert set(env) == {"RKV_OPTS"}, host
        args = exec_args + env["RKV_OPTS"].split()  # systemd splits an unquoted $VAR so
        # rkv serve's own parser: an unknown option or a bad value raises here
        ctx = command.make_context("serve", list(args), resilient_parsing=False)
        p = ctx.params
        assert p["cluster_token"] is None, f"{host}: the token is a credential, not an option"
        assert p["cluster_token_file"] == Path("%d/cluster-token")  # from the unit
        assert p["host"] == "0.0.0.0" and p["http_port"] and p["resp_port"]
        assert p["tls_cert"] and p["tls_key"] and p["tls_ca"]
        data_dir = Path(p["data_dir"])
        # inside ReadWritePaths, one level down: a repair renames it to a sibling
        assert data_dir.parent == Path("/var/lib/rkv"), data_dir
        cfg = NodeConfig.create(
            (p["host"], p["port"]),
            [x for x in p["peers"].split(",") if x],
            advertise=p["node_id"],
            data_dir=data_dir,
            http_port=p["http_port"],
            resp_port=p["resp_port"],
            tls_cert=p["tls_cert"],
            tls_key=p["tls_key"],
            tls_ca=p["tls_ca"],
        )
        assert len(cfg.voters) == 3 and cfg.id in cfg.voters
        cluster_ids.add(cfg.cluster_id)
        ids.append(cfg.id)
    assert len(set(ids)) == 3 and len(cluster_ids) == 1  # three members, one cluster
