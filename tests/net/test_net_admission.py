"""rkv.net.admission: the limits and the choice of the connection to shed, without sockets.

Each scenario is a script of steps on one `Admission` (inside trio: shedding cancels a
scope); an `admit` step says what must happen to the newcomer ("ok" or "refused <reason>")
and which connections it sheds (with the reason). The rpc tests (test_net_rpc.py) and the cluster tests (tests/security) check the
same rules over real connections.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
import trio

from rkv.net.admission import (
    CLIENT,
    E_TOO_MANY_CONNECTIONS,
    HANDSHAKING,
    PEER,
    R_SOURCE,
    R_TOTAL,
    Admission,
    Refused,
    Ticket,
    source_of,
)

A, B = "10.0.0.1", "10.0.0.2"


@dataclass
class Admit:
    name: str
    host: str = A
    expect: str = "ok"
    sheds: dict[str, str] = field(default_factory=dict)


@dataclass
class Step:
    op: str  # established | peer | peer_auth | served | release
    name: str


SCENARIOS: list[tuple[str, int, int, list[Admit | Step]]] = [
    # (name, max_connections, max_per_source, steps)
    (
        "at the cap the oldest handshaking connection gives way",
        3,
        10,
        [Admit("a"), Admit("b"), Admit("c"), Admit("d", sheds={"a": R_TOTAL})],
    ),
    (
        "still handshaking goes before a client that completed no request",
        3,
        10,
        [
            Admit("a"),
            Step("established", "a"),
            Admit("b"),
            Admit("c"),
            Admit("d", sheds={"b": R_TOTAL}),
            Admit("e", sheds={"c": R_TOTAL}),
            Admit("f", sheds={"d": R_TOTAL}),
        ],
    ),
    (
        "a client with no request gives way when nobody is handshaking",
        2,
        10,
        [
            Admit("a"),
            Step("established", "a"),
            Admit("b"),
            Step("served", "b"),
            Admit("c", sheds={"a": R_TOTAL}),
        ],
    ),
    (
        "peer links and clients that completed a request are never shed",
        3,
        10,
        [
            Admit("a"),
            Step("served", "a"),
            Admit("b"),
            Step("peer", "b"),
            Admit("c"),
            Step("established", "c"),
            Step("served", "c"),
            Admit("d", expect="refused max_connections"),
            Admit("e", host=B, expect="refused max_connections"),
        ],
    ),
    (
        "the per-source limit sheds within that source, not elsewhere",
        10,
        2,
        [
            Admit("a"),
            Admit("b", host=B),
            Admit("c"),
            Admit("d", sheds={"a": R_SOURCE}),
            Admit("e", host=B),
        ],
    ),
    (
        "the per-source limit refuses when that source has nothing to shed",
        10,
        2,
        [
            Admit("a"),
            Step("served", "a"),
            Admit("b"),
            Step("served", "b"),
            Admit("c", expect="refused per_source"),
            Admit("d", host=B),
            Step("release", "a"),
            Admit("e"),
        ],
    ),
    (
        "peer links that proved the token leave their source's count; others do not",
        10,
        2,
        [
            Admit("a"),
            Step("peer_auth", "a"),
            Admit("b"),
            Step("peer", "b"),
            Admit("c"),
            Step("served", "c"),
            Admit("d", expect="refused per_source"),
            Step("release", "b"),
            Admit("e"),
        ],
    ),
    (
        "both limits: the source's own connection gives way first",
        3,
        2,
        [
            Admit("a", host=B),
            Admit("b"),
            Admit("c"),
            Admit("d", sheds={"b": R_SOURCE}),
        ],
    ),
    (
        "an IPv6 /64 is one source",
        10,
        1,
        [
            Admit("a", host="2001:db8::1"),
            Step("served", "a"),
            Admit("b", host="2001:db8::ffff:1", expect="refused per_source"),
            Admit("c", host="2001:db8:0:1::1"),
        ],
    ),
]


@pytest.mark.parametrize(
    ("case", "max_connections", "per_source", "steps"), SCENARIOS, ids=[s[0] for s in SCENARIOS]
)
async def test_admission_scenarios(
    case: str, max_connections: int, per_source: int, steps: list[Admit | Step]
) -> None:
    # No handshake deadline may pass meanwhile: a scope past its deadline counts as cancelled.
    adm = Admission(max_connections, per_source, handshake_timeout=3600.0)
    held: dict[str, Ticket] = {}
    now = trio.current_time()
    for step in steps:
        now += 0.001
        if isinstance(step, Step):
            t = held[step.name]
            if step.op == "established":
                adm.established(t)
            elif step.op in ("peer", "peer_auth"):
                adm.peer(t, authenticated=step.op == "peer_auth")
            elif step.op == "served":
                adm.established(t)
                adm.served(t)
            else:
                adm.release(t)
                del held[step.name]
            continue
        before = {n: t.scope.cancel_called for n, t in held.items()}
        try:
            held[step.name] = adm.admit(step.host, now)
            outcome = "ok"
        except Refused as exc:
            outcome = f"refused {exc.reason}"
            assert exc.frame["code"] == E_TOO_MANY_CONNECTIONS
            assert exc.frame["reason"] == exc.reason
        assert outcome == step.expect, (case, step)
        shed = {}
        for n, was in before.items():
            t = held[n]
            if t.scope.cancel_called and not was:
                assert t.goodbye is not None and t.goodbye["code"] == E_TOO_MANY_CONNECTIONS
                shed[n] = t.goodbye["reason"]
                assert "completed no request" in t.goodbye["msg"]
                del held[n]
        assert shed == step.sheds, (case, step)
    # The books balance: every state count matches the connections still held.
    assert adm.total == len(held)
    for state in (HANDSHAKING, CLIENT, PEER):
        assert adm.stats.states[state] == sum(t.state == state for t in held.values()), state
    want_shed = sum(len(s.sheds) for s in steps if isinstance(s, Admit))
    assert sum(adm.stats.shed.values()) == want_shed
    want_refused = sum(1 for s in steps if isinstance(s, Admit) and s.expect != "ok")
    assert sum(adm.stats.refused.values()) == want_refused


async def test_handshake_deadline_is_on_the_scope_until_established() -> None:
    adm = Admission(10, 10, handshake_timeout=2.5)
    t = adm.admit(A, 1000.0)
    assert t.scope.deadline == 1002.5
    adm.established(t)
    assert t.scope.deadline == math.inf
    adm.timed_out(adm.admit(A, 1001.0))
    assert adm.stats.handshake_timeouts == 1


async def test_release_is_idempotent_and_forgets_the_source() -> None:
    adm = Admission(10, 10, handshake_timeout=1.0)
    t = adm.admit(A, 0.0)
    assert adm.source_count(A) == 1
    adm.release(t)
    adm.release(t)
    assert adm.total == 0 and adm.source_count(A) == 0
    assert adm.statistics()["sources"] == 0
    assert adm.stats.states == {HANDSHAKING: 0, CLIENT: 0, PEER: 0}


@pytest.mark.parametrize(
    ("host", "source"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("::ffff:10.1.2.3", "10.1.2.3"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("?", "?"),
    ],
)
def test_source_of(host: str, source: str) -> None:
    assert source_of(host) == source


@pytest.mark.parametrize(
    ("args", "match"),
    [((0, 10, 1.0), "max_connections"), ((10, 0, 1.0), "max_per_source"), ((10, 10, 0), "> 0")],
)
def test_bad_limits_are_local_errors(args: tuple[int, int, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Admission(*args)
