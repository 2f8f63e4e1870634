"""Enforces the layering of ../shared/ARCHITECTURE.md and the purity of rkv/raft.

Layers, outermost first: cli > node | client > replica > net | store > codec > raft.
A module may import only modules of its own layer or below; a module of a subpackage
(rkv/node/handlers.py) has its package's layer ("node"), and relative imports count too.
Inside rkv/node, a room imports only inner rooms (NODE_RANK). rkv/raft imports nothing but
the standard library, and none of the standard library's I/O, clock or thread modules.
`rkv` and `rkv.client` never load the store, the node or `lmdb`, not even indirectly
(checked in a fresh interpreter, so lazy imports and re-exports count too).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "rkv"

# rank: higher may import lower (or equal within the same package)
RANK = {
    "raft": 0,
    "codec": 1,
    "txnjson": 0.6,  # the JSON form of a txn and its result (rkv txn, POST /v1/txn): over txn
    "txn": 0.5,  # transaction values, wire forms and the arithmetic of incr/append: stdlib only
    "protocol": 1.5,  # client requests and replies, defined once: over codec (limits) and errors
    "store": 2,
    "lease": 2.5,  # the pure Lessor (deadlines, what a leader proposes): over codec and store
    "net": 2,
    "sim": 4,  # drives the real core, replica glue and command semantics (store twins) in virtual time
    "replica": 3,
    "config": 3,
    "http": 3,  # the node's health/metrics HTTP server: trio only
    "httpapi": 3,  # the HTTP port (h11): health routes and the JSON API over the dispatcher
    "metrics": 3,  # prometheus collectors fed by the node (duck-typed, no node import)
    "integrity": 3,  # the node's degraded flag: store integrity errors -> client errors, log
    "sdnotify": 3,  # systemd's notify protocol (READY, STOPPING, WATCHDOG): stdlib only
    "repair": 3,  # a damaged data dir moved aside, a new store of the member in its place
    "resp": 3.5,  # the Redis protocol server: over protocol, codec, net (admission), errors
    "forward": 3.5,  # a follower's writes to the leader: rpc client, config, errors
    "compare": 3.5,  # replica comparison: the node's handlers and the leader's alarm
    "scrubber": 3.5,  # the node's background scrub task (over the store's scrub passes)
    "backup_file": 2,  # backup file format, manifest checks, verify, the writer: errors only
    "backup": 3,  # node-side copy and restore over the store's public backup API
    "errors": 0,
    "stagetimes": 0,  # opt-in stage timing of the request path (net and node mark it): stdlib only
    "procs": 0,  # child processes and free ports (rkv cluster, nemesis, bench): stdlib only
    "client": 4,
    "client_leases": 3.9,  # the client's lease calls (rkv.client mixes them in): over protocol
    "client_reads": 3.9,  # the client's scans and record reads (rkv.client mixes them in)
    "recipes": 4.5,  # Lock and Election over the client's leases, txn and watch
    "node": 4,
    "cli": 6,
    "nemesis": 5.5,  # real-process faults; its connection flood comes from rkv.testing
    "testing": 5,  # in-process clusters for tests (imports node)
    "__init__": 5,
    "__main__": 7,
}

FORBIDDEN_IN_RAFT = {
    "trio",
    "lmdb",
    "msgpack",
    "socket",
    "time",
    "threading",
    "asyncio",
    "os",
    "multiprocessing",
    "subprocess",
    "selectors",
    "concurrent",
    "datetime",
    "signal",
}
RANDOM_MODULE_FUNCS = {
    "random",
    "randint",
    "randrange",
    "choice",
    "choices",
    "shuffle",
    "sample",
    "uniform",
    "seed",
    "getrandbits",
    "gauss",
    "expovariate",
    "betavariate",
    "triangular",
    "randbytes",
}


def layer_of(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0].removesuffix(".py")


def rkv_imports(tree: ast.AST, path: Path | None = None) -> list[tuple[int, str]]:
    """(line, absolute module name) of each import; relative imports are resolved against
    `path` (a file under rkv/), so `from . import x` in a subpackage counts too."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
        elif isinstance(node, ast.ImportFrom) and node.level > 0 and path is not None:
            package = ["rkv", *path.relative_to(PKG).with_suffix("").parts[:-1]]
            base = package[: len(package) - (node.level - 1)]
            if node.module:
                out.append((node.lineno, ".".join([*base, node.module])))
            else:
                out += [(node.lineno, ".".join([*base, a.name])) for a in node.names]
    return out


def sources() -> list[Path]:
    return sorted(PKG.rglob("*.py"))


def test_every_module_has_a_known_layer() -> None:
    unknown = {layer_of(p) for p in sources()} - RANK.keys()
    assert not unknown, f"add these to RANK in tests/test_architecture.py: {unknown}"


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_respect_layers(path: Path) -> None:
    me = layer_of(path)
    tree = ast.parse(path.read_text(), str(path))
    bad = []
    for lineno, mod in rkv_imports(tree, path):
        parts = mod.split(".")
        if parts[0] != "rkv" or len(parts) < 2:
            continue
        target = parts[1]
        if target == me:
            continue
        if RANK.get(target, 99) >= RANK[me]:
            bad.append(f"{path.relative_to(ROOT)}:{lineno} imports rkv.{target}")
    assert not bad, "layer violation (see ARCHITECTURE.md): " + "; ".join(bad)


# The rooms of the node package (rkv/node), innermost first: a room may import only rooms of a
# lower rank, so the raft loop knows no handler, the handlers know no raft loop (they are built
# from what they talk to, fakes in tests/node/test_handlers.py), and only the server (and the
# process entry above it) sees them all.
NODE_RANK = {
    "inbox": 0,  # Waiter, the loop's inputs, RaftView
    "common": 1,  # errors, field primitives, store_io
    "outbox": 1,  # commit notices held until superseded or the next tick
    "ready": 2,  # one Ready
    "watch": 1.5,  # the watch hub: applied changes for the watch polls (no other room)
    "handlers": 2,  # client requests: talk to the raft loop through a protocol only
    "raft_loop": 3,
    "leases": 3,  # the Lessor driven after each turn, and the lease requests (over handlers)
    "peers": 3,
    "snapshots": 4,
    "housekeeping": 4,
    "health": 4,
    "admin": 5,
    "dispatch": 5,
    "front_doors": 5.5,  # the HTTP API and RESP servers wired to the dispatcher
    "server": 6,
    "entry": 7,
    "__init__": 8,
}
NODE_SOURCES = sorted((PKG / "node").glob("*.py"))


def test_every_node_room_has_a_rank() -> None:
    assert NODE_SOURCES, "rkv/node is a package"
    unknown = {p.stem for p in NODE_SOURCES} - NODE_RANK.keys()
    assert not unknown, f"add these to NODE_RANK in tests/test_architecture.py: {unknown}"
    assert {layer_of(p) for p in NODE_SOURCES} == {"node"}  # ranked as rkv.node as a whole


def node_room_violations(path: Path, tree: ast.AST) -> list[str]:
    me = NODE_RANK[path.stem]
    bad = []
    for lineno, mod in rkv_imports(tree, path):
        parts = mod.split(".")
        if parts[:2] != ["rkv", "node"]:
            continue
        target = parts[2] if len(parts) > 2 else "__init__"
        if NODE_RANK.get(target, 99) >= me:
            bad.append(f"{path.name}:{lineno} imports {mod}")
    return bad


@pytest.mark.parametrize("path", NODE_SOURCES, ids=lambda p: p.name)
def test_node_rooms_import_only_inner_rooms(path: Path) -> None:
    bad = node_room_violations(path, ast.parse(path.read_text(), str(path)))
    assert not bad, "node room layering (see NODE_RANK): " + "; ".join(bad)


def test_node_room_check_has_teeth() -> None:
    """Absolute and relative imports of an outer room are both flagged, in a subpackage too."""
    src = "from rkv.node.server import Node\nfrom . import raft_loop\nfrom .inbox import Waiter\n"
    bad = node_room_violations(PKG / "node" / "handlers.py", ast.parse(src))
    assert [b.split(" imports ")[1] for b in bad] == ["rkv.node.server", "rkv.node.raft_loop"]
    up = rkv_imports(
        ast.parse("from .. import cli\nfrom ..raft import core\n"), PKG / "node" / "x.py"
    )
    assert [m for _, m in up] == ["rkv.cli", "rkv.raft"]


RAFT_SOURCES = sorted((PKG / "raft").rglob("*.py"))


@pytest.mark.parametrize("path", RAFT_SOURCES, ids=lambda p: p.name)
def test_raft_core_is_pure(path: Path) -> None:
    tree = ast.parse(path.read_text(), str(path))
    bad = []
    for lineno, mod in rkv_imports(tree, path):
        top = mod.split(".")[0]
        if top in FORBIDDEN_IN_RAFT:
            bad.append(f"{path.name}:{lineno} imports {mod}")
        if top == "rkv" and not mod.startswith("rkv.raft"):
            bad.append(f"{path.name}:{lineno} imports {mod} (raft imports only rkv.raft)")
    for node in ast.walk(tree):
        # random.choice(...) and friends use hidden global state: only an injected
        # random.Random instance is allowed
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "random"
            and node.attr in RANDOM_MODULE_FUNCS
        ):
            bad.append(f"{path.name}:{node.lineno} uses random.{node.attr}")
        if isinstance(node, ast.ImportFrom) and node.module == "random":
            names = {a.name for a in node.names} & RANDOM_MODULE_FUNCS
            if names:
                bad.append(f"{path.name}:{node.lineno} imports {names} from random")
    assert not bad, "rkv/raft must stay pure: " + "; ".join(bad)


def test_purity_check_has_teeth(tmp_path: Path) -> None:
    """The purity scan must flag what it claims to flag."""
    src = "import time\nimport random\nx = random.choice([1])\nfrom os import path\n"
    tree = ast.parse(src)
    mods = {m.split(".")[0] for _, m in rkv_imports(tree)}
    assert mods & FORBIDDEN_IN_RAFT == {"time", "os"}
    attrs = [n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)]
    assert "choice" in attrs and "choice" in RANDOM_MODULE_FUNCS


# What a client-side import must never load, even indirectly.
CLIENT_FORBIDDEN = ("lmdb", "rkv.store", "rkv.node", "rkv.backup")


def loaded_modules(module: str) -> set[str]:
    """The modules a fresh interpreter holds after `import <module>`."""
    code = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out))


def forbidden_in(mods: set[str]) -> list[str]:
    return sorted(m for m in mods if any(m == f or m.startswith(f + ".") for f in CLIENT_FORBIDDEN))


@pytest.mark.parametrize("module", ["rkv", "rkv.client"])
def test_client_imports_stay_off_the_store(module: str) -> None:
    mods = loaded_modules(module)
    assert module in mods  # the probe really imported it
    bad = forbidden_in(mods)
    assert not bad, f"import {module} loads {bad} (see ARCHITECTURE.md: client never loads them)"


def test_transitive_import_check_has_teeth() -> None:
    """The probe sees indirect imports: rkv.backup loads lmdb through rkv.store."""
    assert set(forbidden_in(loaded_modules("rkv.backup"))) >= {"lmdb", "rkv.backup", "rkv.store"}
