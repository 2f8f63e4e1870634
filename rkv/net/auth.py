"""Cluster-token authentication: a mutual HMAC-SHA256 challenge-response on each connection.

Owns: the handshake's frames, the MAC inputs and their checks (pure functions), plus two
small drivers (`client_handshake`, `server_handshake`) that run them over a FramedStream
with a deadline. Must not: send or log the token, compare MACs in variable time, or know
what the connection is used for afterwards (rpc.py and transport.py do).

The exchange (token T, nonces of 32 random bytes, role = the connecting node's id or
"client"):

    client -> {"t": "auth_start", "n": cn, "role": role}     sent at once on connect
    server -> {"t": "challenge", "n": sn}                    sent at once on accept
    client -> {"t": "auth", "mac": HMAC(T, "rkv-auth-v1 client" | sn | cn | role)}
    server -> {"t": "auth_ok", "mac": HMAC(T, "rkv-auth-v1 server" | sn | cn | role)}
              or {"t": "error", "code": "auth_failed", "msg": ...} and close

Both sides contribute a fresh nonce, so neither MAC can be replayed on another connection,
and the two directions use different labels, so the server's proof cannot be reflected back
as a client answer. The client sends `auth_start` before it reads anything: a node without a
token answers it with an `auth_failed` error at once instead of leaving the client waiting.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

import trio

from rkv.net.framing import Frame, FrameError, error_frame
from rkv.net.stream import FramedStream

E_AUTH_FAILED = "auth_failed"
NONCE_BYTES = 32
MAX_ROLE = 256
MAX_AUTH_FRAME = 1024
"""The largest frame a server reads before the proof: the handshake's frames are a few
hundred bytes (a role of MAX_ROLE characters, a nonce, a MAC), so an unauthenticated
connection holds no more than this of a frame."""
CLIENT_ROLE = "client"
_LABEL_CLIENT = b"rkv-auth-v1 client"
_LABEL_SERVER = b"rkv-auth-v1 server"


class AuthFailed(Exception):
    """The other side did not prove it knows the token (or broke the protocol).

    `msg` is one line and never contains the token. `code` is ``auth_failed``, except when
    the server ended the handshake with another error frame (its code, e.g.
    ``too_many_connections`` or ``handshake_timeout``: nothing to do with the token, worth
    retrying)."""

    def __init__(self, msg: str, code: str = E_AUTH_FAILED) -> None:
        super().__init__(msg)
        self.msg = msg
        self.code = code

    @property
    def frame(self) -> Frame:
        return error_frame(self.code, self.msg)


def _key(token: str | bytes) -> bytes:
    key = token.encode() if isinstance(token, str) else bytes(token)
    if not key:
        raise ValueError("the cluster token must not be empty")
    return key


def _mac(token: str | bytes, label: bytes, sn: bytes, cn: bytes, role: str) -> bytes:
    # Every part is length-prefixed so no two different inputs share an encoding.
    msg = bytearray(label)
    for part in (sn, cn, role.encode()):
        msg += len(part).to_bytes(4, "big") + part
    return hmac.new(_key(token), bytes(msg), hashlib.sha256).digest()


def _nonce(frame: Frame, what: str) -> bytes:
    n = frame.get("n")
    if not isinstance(n, bytes) or len(n) != NONCE_BYTES:
        raise AuthFailed(f"malformed {what}: bad nonce")
    return n


def _expect(frame: Frame | None, t: str) -> Frame:
    if frame is None:
        raise AuthFailed(f"connection closed during authentication (expected {t!r})")
    if frame.get("t") == "error":
        code = frame.get("code")
        if code == E_AUTH_FAILED or not isinstance(code, str) or not code:
            raise AuthFailed(str(frame.get("msg") or "authentication failed"))
        raise AuthFailed(str(frame.get("msg") or code), code)
    if frame.get("t") != t:
        raise AuthFailed(f"expected {t!r} during authentication, got {frame.get('t')!r}")
    return frame


# -- pure steps --------------------------------------------------------------------------


def start(role: str = CLIENT_ROLE) -> tuple[Frame, bytes]:
    """Client: the opening frame and the client nonce to keep."""
    if not isinstance(role, str) or not 0 < len(role) <= MAX_ROLE:
        raise ValueError(f"role must be a string of 1..{MAX_ROLE} characters")
    cn = secrets.token_bytes(NONCE_BYTES)
    return {"t": "auth_start", "n": cn, "role": role}, cn


def make_challenge() -> tuple[Frame, bytes]:
    """Server: the challenge frame and the server nonce to keep."""
    sn = secrets.token_bytes(NONCE_BYTES)
    return {"t": "challenge", "n": sn}, sn


def answer(token: str | bytes, challenge: Frame, cn: bytes, role: str) -> tuple[Frame, bytes]:
    """Client: the answer to `challenge` and the server nonce (for `check_proof`)."""
    sn = _nonce(_expect(challenge, "challenge"), "challenge")
    return {"t": "auth", "mac": _mac(token, _LABEL_CLIENT, sn, cn, role)}, sn


def verify(
    token: str | bytes, sn: bytes, start_frame: Frame, answer_frame: Frame
) -> tuple[str, Frame]:
    """Server: check the client's `auth_start` and `auth` frames; return its (authenticated)
    role and the proof frame to send back. Raises AuthFailed."""
    cn = _nonce(_expect(start_frame, "auth_start"), "auth_start")
    role = start_frame.get("role")
    if not isinstance(role, str) or not 0 < len(role) <= MAX_ROLE:
        raise AuthFailed("malformed auth_start: bad role")
    mac = _expect(answer_frame, "auth").get("mac")
    if not isinstance(mac, bytes) or not hmac.compare_digest(
        mac, _mac(token, _LABEL_CLIENT, sn, cn, role)
    ):
        raise AuthFailed("wrong cluster token")
    return role, {"t": "auth_ok", "mac": _mac(token, _LABEL_SERVER, sn, cn, role)}


def check_proof(token: str | bytes, sn: bytes, cn: bytes, role: str, frame: Frame | None) -> None:
    """Client: check the server's `auth_ok`. Raises AuthFailed (also for the server's
    `auth_failed` error frame, with the server's reason)."""
    mac = _expect(frame, "auth_ok").get("mac")
    if not isinstance(mac, bytes) or not hmac.compare_digest(
        mac, _mac(token, _LABEL_SERVER, sn, cn, role)
    ):
        raise AuthFailed("the server did not prove it knows the cluster token")


# -- drivers -----------------------------------------------------------------------------


async def _receive(fs: FramedStream) -> Frame | None:
    try:
        return await fs.receive()
    except FrameError as exc:
        raise AuthFailed(f"garbage during authentication: {exc}") from None


async def client_handshake(
    fs: FramedStream, token: str | bytes, role: str = CLIENT_ROLE, timeout: float = 5.0
) -> None:
    """Prove we know `token` and check that the server does. Raises AuthFailed, TooSlowError
    after `timeout`, or the stream's errors (BrokenResourceError, OSError) on a lost link."""
    with trio.fail_after(timeout):
        hello, cn = start(role)
        await fs.send(hello)
        reply, sn = answer(token, _expect(await _receive(fs), "challenge"), cn, role)
        await fs.send(reply)
        check_proof(token, sn, cn, role, await _receive(fs))


async def server_handshake(
    fs: FramedStream, token: str | bytes, timeout: float = 10.0
) -> tuple[str | None, Frame | None]:
    """Run the server side; returns (role, None) on success, (None, error frame) to send as
    the connection's last word, or (None, None) when the link closed or broke meanwhile."""
    challenge, sn = make_challenge()
    try:
        with trio.fail_after(timeout):
            await fs.send(challenge)
            first = await _receive(fs)
            if first is None:
                return None, None
            if first.get("t") != "auth_start":
                raise AuthFailed("this node requires a cluster token (--token / RKV_CLUSTER_TOKEN)")
            second = await _receive(fs)
            if second is None:
                return None, None
            role, proof = verify(token, sn, first, second)
            await fs.send(proof)
            return role, None
    except AuthFailed as exc:
        return None, exc.frame
    except trio.TooSlowError:
        return None, error_frame(E_AUTH_FAILED, f"no authentication within {timeout} seconds")
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        return None, None


def token_fingerprint(token: str | bytes) -> str:
    """A short, non-reversible tag of the token for logs ("which token is this node using?")."""
    return hashlib.sha256(b"rkv-token-fingerprint" + _key(token)).hexdigest()[:8]


__all__ = [
    "CLIENT_ROLE",
    "E_AUTH_FAILED",
    "MAX_AUTH_FRAME",
    "AuthFailed",
    "answer",
    "check_proof",
    "client_handshake",
    "make_challenge",
    "server_handshake",
    "start",
    "token_fingerprint",
    "verify",
]
