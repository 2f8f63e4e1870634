"""Membership changes on real `rkv serve` processes: grow 3 -> 5 with `serve --join` while a
client writes, shrink back to 3 by removing the leader and a follower (they stop themselves,
exit code 14), and every acknowledged write is on every remaining member. Plus the CLI's
refusals."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import trio

import rkv
from rkv.errors import ExitCode, RkvError
from rkv.net.stream import open_framed

from .conftest import Proc, ProcCluster, cli, free_ports


class Writer(threading.Thread):
    """Writes k0, k1, ... until stopped; remembers which writes were acknowledged."""

    def __init__(self, addrs: list[str]) -> None:
        super().__init__(daemon=True)
        self.addrs = addrs
        self.acked: dict[str, str] = {}
        self.failed = 0
        self.stop = threading.Event()

    def run(self) -> None:
        with rkv.connect_sync(self.addrs, timeout=20) as c:
            n = 0
            while not self.stop.is_set():
                key, value = f"k{n}", f"v{n}"
                try:
                    c.put(key, value)
                    self.acked[key] = value
                except RkvError:
                    self.failed += 1  # may or may not have taken effect: not counted
                n += 1


def _members(addrs: list[str]) -> dict[str, Any]:
    with rkv.connect_sync(addrs, timeout=30) as c:
        return c.members()


def _wait(pred: Any, what: str, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = pred()
        except RkvError as e:
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout}s (last: {last})")


async def _hello_refusal(addr: str, cluster: str, node: str) -> str | None:
    host, port = addr.rsplit(":", 1)
    fs = await open_framed(host, int(port))
    async with fs:
        await fs.send({"t": "hello", "cluster": cluster, "node": node})
        with trio.fail_after(10):
            answer = await fs.receive()
    return None if answer is None else answer.get("code")


def test_grow_to_five_and_shrink_to_three_while_writing(tmp_path: Path) -> None:
    c = ProcCluster(tmp_path, 3)
    c.start()
    extra: dict[str, Proc] = {}
    try:
        c.wait_leader(timeout=60)
        writer = Writer(c.addrs)
        writer.start()
        for port in free_ports(2):
            a = f"127.0.0.1:{port}"
            extra[a] = Proc(
                ["--port", str(port), "--join", c.addr, "--data-dir", str(tmp_path / str(port))],
                tmp_path / f"{port}.log",
            )
            extra[a].start()
        everyone = [*c.addrs, *extra]

        def five_voters() -> dict[str, Any] | None:
            m = _members(c.addrs)
            return m if len(m["voters"]) == 5 else None

        conf = _wait(five_voters, "both joiners promoted")
        assert sorted(conf["voters"]) == sorted(everyone) and conf["learners"] == []

        # shrink: the leader first, then one of the joiners
        leader = conf["leader"]
        with rkv.connect_sync(everyone, timeout=30) as admin:
            admin.remove_member(leader)
            gone = next(iter(extra))
            conf = admin.remove_member(gone)
        remaining = [a for a in everyone if a not in (leader, gone)]
        assert sorted(conf["voters"]) == sorted(remaining)
        procs = {**c.nodes, **extra}
        for a in (leader, gone):
            # a removed node stops itself once it applied its removal
            p = procs[a].proc
            assert p is not None
            assert p.wait(timeout=30) == ExitCode.REMOVED, procs[a].log()
        _wait(lambda: _members(remaining)["leader"] in remaining, "a leader among the three")
        # the members saw the leader leave: a connection claiming to be it is refused
        assert (
            trio.run(_hello_refusal, remaining[0], str(conf["cluster"]), leader) == "removed_node"
        )
        time.sleep(0.5)
        writer.stop.set()
        writer.join(timeout=60)
        assert len(writer.acked) > 20, (len(writer.acked), writer.failed)

        # every acknowledged write is readable, and replicated to each remaining member
        with rkv.connect_sync(remaining, timeout=30) as r:
            r.put("last", "write")
            for key, value in writer.acked.items():
                assert r.get(key) == value.encode(), key
        for a in remaining:
            with rkv.connect_sync([a], timeout=30) as one:
                _wait(lambda one=one: one.get("last", stale=True) == b"write", f"{a} caught up")
                sample = list(writer.acked.items())[:: max(1, len(writer.acked) // 50)]
                for key, value in sample:
                    assert one.get(key, stale=True) == value.encode(), (a, key)
    finally:
        c.stop_all()
        for p in extra.values():
            p.stop()


def test_member_commands_and_refusals(tmp_path: Path) -> None:
    c = ProcCluster(tmp_path, 3)
    c.start()
    try:
        leader = c.wait_leader(timeout=60)
        r = cli("--addr", c.addr, "member", "list")
        assert r.exit_code == 0, r.output
        assert r.output.count("voter") == 3 and f"{leader}  voter (leader)" in r.output
        port = free_ports(1)[0]
        new = f"127.0.0.1:{port}"
        # a learner that never starts: it stays a learner, and promotion times out
        r = cli("--addr", c.addr, "member", "add", new, "--learner")
        assert r.exit_code == 0, r.output
        assert f"{new}  learner" in r.output
        r = cli("--addr", c.addr, "member", "promote", new, "--timeout", "3")
        assert r.exit_code == 3 and "member promote did not succeed" in r.output, r.output
        # refusals with the documented exit codes, one line each
        for args, code, text in [
            (("member", "remove", "127.0.0.1:1"), 1, "not a member"),
            (("member", "add", "not an address"), 2, "address"),
            (("member", "add", c.addrs[0]), 0, "voter"),  # already a voter: nothing to do
            (("member", "promote", c.addrs[0]), 0, "voter"),
        ]:
            r = cli("--addr", c.addr, *args)
            assert r.exit_code == code, (args, r.output)
            assert text in r.output and "Traceback" not in r.output, (args, r.output)
        r = cli("--addr", c.addr, "member", "remove", new)
        assert r.exit_code == 0 and new not in r.output, r.output
        for args in (
            ("serve", "--join", c.addr, "--peers", c.addr),
            ("serve", "--learner"),
        ):
            r = cli(*args)
            assert r.exit_code == 2 and "serve: error" in r.output, (args, r.output)
        # a voter whose data dir is gone (a replaced disk) must not rejoin as if it had one
        voter_port = c.addrs[1].rsplit(":", 1)[1]
        empty = tmp_path / "replaced-disk"
        r = cli("serve", "--port", voter_port, "--join", c.addr, "--data-dir", str(empty))
        assert r.exit_code == ExitCode.MEMBER_EXISTS, r.output
        assert "member remove" in r.output and "Traceback" not in r.output, r.output
        assert not (empty / "data.mdb").exists()
    finally:
        c.stop_all()
