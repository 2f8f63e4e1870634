"""Shared helpers for the security tests: in-process clusters, free ports, test certificates.

Certificates are made once per session with the `openssl` command line (the `cryptography`
package is not installed): a CA, a node certificate for 127.0.0.1/localhost (used by every
node, as server and as peer client) and a client certificate, all signed by the CA, plus a
second, unrelated CA.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rkv.config import NodeConfig
from rkv.testing import free_ports as free_ports
from rkv.testing import local_configs, running_cluster
from rkv.testing import wait_leader as wait_leader

TOKEN = "correct-horse-battery-staple-0123456789"
WRONG = "incorrect-horse-battery-staple-987654"

cluster = running_cluster  # the name the tests here use


def configs(tmp: Path, n: int = 3, **kw: Any) -> list[NodeConfig]:
    return local_configs(tmp, n, **kw)


@dataclass(frozen=True)
class Certs:
    ca: Path
    node_cert: Path
    node_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _ca(d: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
        "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )  # fmt: skip


def _leaf(d: Path, name: str, ca: str, ext: str) -> None:
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
        cwd=d,
    )  # fmt: skip
    (d / f"{name}.ext").write_text(ext)
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
        cwd=d,
    )  # fmt: skip


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    if shutil.which("openssl") is None:
        pytest.fail("the TLS tests need the openssl command line tool")
    d = tmp_path_factory.mktemp("certs")
    _ca(d, "ca")
    _ca(d, "other-ca")
    # Nodes present this one both as servers and as peer clients (mutual TLS).
    _leaf(
        d,
        "node",
        "ca",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    _leaf(d, "client", "ca", "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")
    return Certs(
        ca=d / "ca.pem",
        node_cert=d / "node.pem",
        node_key=d / "node.key",
        client_cert=d / "client.pem",
        client_key=d / "client.key",
        other_ca=d / "other-ca.pem",
    )
