"""rkv.net.auth's pure steps: a correct exchange passes both ways; anything else fails."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rkv.net import auth
from rkv.net.auth import AuthFailed

T = "a-cluster-token-of-decent-length"


def exchange(client_token: str, server_token: str, role: str = "client") -> str:
    """Run the four steps; returns the role the server authenticated."""
    start, cn = auth.start(role)
    challenge, sn = auth.make_challenge()
    reply, sn_seen = auth.answer(client_token, challenge, cn, role)
    assert sn_seen == sn
    got_role, proof = auth.verify(server_token, sn, start, reply)
    auth.check_proof(client_token, sn, cn, role, proof)
    return got_role


def test_correct_token_passes_and_names_the_role() -> None:
    assert exchange(T, T, "127.0.0.1:7001") == "127.0.0.1:7001"


@given(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40))
def test_any_different_token_fails(a: str, b: str) -> None:
    if a == b:
        assert exchange(a, b) == "client"
    else:
        with pytest.raises(AuthFailed, match="wrong cluster token"):
            exchange(a, b)


def test_nonces_are_fresh() -> None:
    assert auth.make_challenge()[1] != auth.make_challenge()[1]
    assert auth.start()[1] != auth.start()[1]


def _steps(role: str = "client") -> tuple[dict, bytes, dict, bytes, dict]:  # type: ignore[type-arg]
    start, cn = auth.start(role)
    challenge, sn = auth.make_challenge()
    reply, _ = auth.answer(T, challenge, cn, role)
    return start, cn, challenge, sn, reply


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda s, r: ({**s, "role": "127.0.0.1:9999"}, r), id="role swapped"),
        pytest.param(lambda s, r: ({**s, "n": bytes(32)}, r), id="client nonce swapped"),
        pytest.param(lambda s, r: ({**s, "n": b"short"}, r), id="short nonce"),
        pytest.param(lambda s, r: (s, {**r, "mac": r["mac"][:-1] + b"\0"}), id="mac flipped"),
        pytest.param(lambda s, r: (s, {"t": "auth"}), id="mac missing"),
        pytest.param(lambda s, r: (s, {**r, "t": "get"}), id="not an auth frame"),
        pytest.param(lambda s, r: ({**s, "role": ""}, r), id="empty role"),
    ],
)
def test_server_refuses_tampered_answers(tamper) -> None:  # type: ignore[no-untyped-def]
    start, _cn, _ch, sn, reply = _steps()
    s2, r2 = tamper(start, reply)
    with pytest.raises(AuthFailed):
        auth.verify(T, sn, s2, r2)


def test_answer_replayed_on_another_connection_fails() -> None:
    start, _cn, _ch, _sn, reply = _steps()
    _, other_sn = auth.make_challenge()
    with pytest.raises(AuthFailed):
        auth.verify(T, other_sn, start, reply)


def test_client_refuses_a_server_without_the_token_or_a_reflected_mac() -> None:
    start, cn, _ch, sn, reply = _steps()
    _, fake_proof = auth.verify(T, sn, start, reply)
    with pytest.raises(AuthFailed, match="did not prove"):
        auth.check_proof(T, sn, cn, "client", {**fake_proof, "mac": bytes(32)})
    # The client's own MAC sent back as a proof: different labels, so it does not pass.
    with pytest.raises(AuthFailed, match="did not prove"):
        auth.check_proof(T, sn, cn, "client", {"t": "auth_ok", "mac": reply["mac"]})
    # The server's refusal surfaces with its reason.
    with pytest.raises(AuthFailed, match="nope"):
        auth.check_proof(T, sn, cn, "client", {"t": "error", "code": "auth_failed", "msg": "nope"})


def test_frames_never_contain_the_token() -> None:
    start, _cn, challenge, sn, reply = _steps()
    _, proof = auth.verify(T, sn, start, reply)
    for frame in (start, challenge, reply, proof):
        for v in frame.values():
            assert T.encode() not in (v if isinstance(v, bytes) else str(v).encode())
