"""The wire frames of the client's most frequent requests, built without their dataclasses.

Owns: `put_frame` and `get_frame`, which return exactly what
``PutRequest(...).to_frame()`` and ``GetRequest(...).to_frame()`` return. Building a frozen
request and checking its fields costs more than the rest of the client's side of a small put
(issue 18), so when every field is plainly valid the frame is written directly; anything
else goes through the request class, which raises what it raises. Must not: know a field
rule the request classes do not (they stay the one definition; tests compare the two).
"""

from __future__ import annotations

from rkv.codec import MAX_ID_LEN, MAX_KEY_LEN, MAX_LEASE_ID, MAX_U64, MAX_VALUE_LEN
from rkv.protocol.fields import Frame
from rkv.protocol.requests import GetRequest, PutRequest


def put_frame(key: bytes, value: bytes, client_id: bytes, seq: int, lease: int = 0) -> Frame:
    """``PutRequest(key, value, client_id=client_id, seq=seq, lease=lease).to_frame()``."""
    if (
        type(key) is bytes
        and 0 < len(key) <= MAX_KEY_LEN
        and type(value) is bytes
        and len(value) <= MAX_VALUE_LEN
        and type(client_id) is bytes
        and len(client_id) <= MAX_ID_LEN
        and type(seq) is int
        and 0 < seq <= MAX_U64
        and type(lease) is int
        and 0 <= lease <= MAX_LEASE_ID
    ):
        frame: Frame = {"t": PutRequest.T, "k": key, "val": value, "c": client_id, "s": seq}
        if lease:
            frame["lease"] = lease
        return frame
    return PutRequest(key, value, client_id=client_id, seq=seq, lease=lease).to_frame()


def get_frame(key: bytes, stale: bool = False) -> Frame:
    """``GetRequest(key, stale=stale).to_frame()``."""
    if type(key) is bytes and 0 < len(key) <= MAX_KEY_LEN and type(stale) is bool:
        return {"t": GetRequest.T, "k": key, "stale": stale}
    return GetRequest(key, stale=stale).to_frame()
