"""The key-value and file commands: set, get, delete, cas, scan, upload, download.

Owns: their arguments, local checks (a file to upload exists, a download's directory does)
and output (OK lines, values, KEY<TAB>VALUE or JSON). Must not: implement client behaviour
(rkv.client does: retries, leader discovery, chunking, checksums) or import anything heavy at
module level (every `rkv` process loads this module).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from rkv.cli.app import AddrOpt, Exit, app, fail, progress_bar, run_client
from rkv.client import Client


def _text(b: bytes) -> str:
    return b.decode("utf-8", errors="backslashreplace")


@app.command("set")
def set_cmd(
    ctx: typer.Context,
    key: str = typer.Argument(..., help="The key."),
    value: str = typer.Argument(..., help="The value (stored as UTF-8 bytes)."),
    lease: int = typer.Option(
        0, "--lease", min=0, help="Attach KEY to lease ID (deleted with it).", show_default=False
    ),
    ttl: float | None = typer.Option(
        None, "--ttl", min=0.001, help="Grant KEY a lease of its own of SECONDS, then set it."
    ),
    addr: str | None = AddrOpt,
) -> None:
    """Set KEY to VALUE (acknowledged once a majority has it on disk). With --ttl, prints the
    lease granted for it (ID<TAB>TTL) after OK. Exit 7 if --lease names no lease."""
    if lease and ttl is not None:
        fail(Exit.USAGE, "error: --lease and --ttl exclude each other")

    async def go(c: Client) -> tuple[int, float] | None:
        if ttl is None:
            await c.put(key, value, lease=lease)
            return None
        granted = await c.lease_grant(ttl)
        await c.put(key, value, lease=granted.id)
        return granted.id, granted.ttl

    got = run_client(ctx, addr, go)
    print("OK")
    if got is not None:
        print(f"{got[0]}\t{got[1]:g}")


@app.command("get")
def get_cmd(
    ctx: typer.Context,
    key: str = typer.Argument(..., help="The key."),
    stale: bool = typer.Option(
        False, "--stale", help="Read the contacted node's copy (faster, may be behind)."
    ),
    addr: str | None = AddrOpt,
) -> None:
    """Print the value of KEY (its bytes and a newline); exit 1 if there is none."""
    value = run_client(ctx, addr, lambda c: c.get(key, stale=stale))
    if value is None:
        fail(Exit.NOT_FOUND, f"not found: {key}")
    out = sys.stdout.buffer
    out.write(value + b"\n")
    out.flush()


@app.command("delete")
def delete_cmd(
    ctx: typer.Context,
    key: str = typer.Argument(..., help="The key."),
    addr: str | None = AddrOpt,
) -> None:
    """Delete KEY. Exit 1 if it did not exist."""
    existed = run_client(ctx, addr, lambda c: c.delete(key))
    if not existed:
        fail(Exit.NOT_FOUND, f"not found: {key}")
    print("OK")


@app.command("cas")
def cas_cmd(
    ctx: typer.Context,
    key: str = typer.Argument(..., help="The key."),
    new: str = typer.Argument(..., help="The new value."),
    expect: str | None = typer.Option(None, "--expect", help="Swap only if KEY has this value."),
    absent: bool = typer.Option(False, "--absent", help="Swap only if KEY does not exist."),
    addr: str | None = AddrOpt,
) -> None:
    """Set KEY to NEW only if it holds --expect OLD (or is --absent); exit 1 if not."""
    if (expect is None) == (not absent):
        fail(Exit.USAGE, "error: give exactly one of --expect OLD or --absent")
    swapped = run_client(ctx, addr, lambda c: c.cas(key, expect, new))
    if not swapped:
        fail(Exit.NOT_FOUND, f"compare failed: {key} did not hold the expected value")
    print("OK")


@app.command("scan")
def scan_cmd(
    ctx: typer.Context,
    prefix: str = typer.Argument("", help="Key prefix (empty: all keys)."),
    limit: int = typer.Option(1000, "--limit", "-n", min=1, max=10_000, help="Most pairs."),
    as_json: bool = typer.Option(False, "--json", help="A JSON list of {key, value}."),
    stale: bool = typer.Option(False, "--stale", help="Read the contacted node's copy."),
    addr: str | None = AddrOpt,
) -> None:
    """List keys starting with PREFIX with their values (KEY<TAB>VALUE per line)."""
    items = run_client(ctx, addr, lambda c: c.scan(prefix, limit, stale=stale))
    if as_json:
        print(json.dumps([{"key": _text(k), "value": _text(v)} for k, v in items]))
        return
    for k, v in items:
        print(f"{_text(k)}\t{_text(v)}")


@app.command("watch")
def watch_cmd(
    ctx: typer.Context,
    prefix: str = typer.Argument("", help="Watch the keys (and files) starting with PREFIX."),
    start: int | None = typer.Option(
        None, "--from", min=1, help="Start at revision REV (default: from now)."
    ),
    prev: bool = typer.Option(False, "--prev", help="Show each key's value before the change."),
    as_json: bool = typer.Option(
        False,
        "--json",
        help="One JSON object per event: revision, type, key, value, prev_value.",
    ),
    count: int | None = typer.Option(None, "--count", min=1, help="Stop after N events."),
    exact: bool = typer.Option(False, "--exact", help="PREFIX is one key: only its changes."),
    addr: str | None = AddrOpt,
) -> None:
    """Print the changes to keys starting with PREFIX as they happen, in revision order, one
    line each (REV<TAB>TYPE<TAB>KEY<TAB>VALUE, or --json), until interrupted or --count
    events; through any node, going on through another if it fails (nothing missed or
    repeated). Exit 1 if --from is older than the nodes still hold (compacted)."""

    async def watch(c: Client) -> None:
        n = 0
        async for ev in c.watch(prefix, start_revision=start, prev_value=prev, exact=exact):
            if as_json:
                row: dict[str, Any] = {
                    "revision": ev.rev,
                    "type": ev.type,
                    "key": _text(ev.key),
                    "value": None if ev.value is None else _text(ev.value),
                }
                if prev:
                    row["prev_value"] = None if ev.prev is None else _text(ev.prev)
                line = json.dumps(row)
            else:
                fields = [str(ev.rev), ev.type, _text(ev.key), _text(ev.value or b"")]
                if prev:
                    fields.append(_text(ev.prev or b""))
                line = "\t".join(fields)
            print(line, flush=True)
            n += 1
            if count is not None and n >= count:
                return

    run_client(ctx, addr, watch)


@app.command("upload")
def upload_cmd(
    ctx: typer.Context,
    key: str = typer.Argument(..., help="The file's key in the store."),
    path: Path = typer.Argument(..., help="Local file to upload."),  # noqa: B008
    chunk_size: int = typer.Option(
        1 << 20, "--chunk-size", min=1, max=8 << 20, help="Bytes per chunk."
    ),
    addr: str | None = AddrOpt,
) -> None:
    """Upload the file PATH under KEY (atomically: the file appears whole or not at all)."""
    if not path.is_file():
        fail(Exit.USAGE, f"error: no such file: {path}")
    size = path.stat().st_size
    with progress_bar(f"upload {key}", size) as progress:
        info = run_client(
            ctx, addr, lambda c: c.upload(key, path, chunk_size=chunk_size, progress=progress)
        )
    print(f"uploaded {key}: {info['size']} bytes, {info['chunks']} chunks, sha256 {info['sha256']}")


@app.command("download")
def download_cmd(
    ctx: typer.Context,
    key: str = typer.Argument(..., help="The file's key in the store."),
    path: Path = typer.Argument(  # noqa: B008
        ..., help="Where to write the file (replaced atomically)."
    ),
    stale: bool = typer.Option(False, "--stale", help="Read the contacted node's copy."),
    addr: str | None = AddrOpt,
) -> None:
    """Download the file KEY to PATH, verifying its size and SHA-256 (exit 4 on mismatch)."""
    if path.is_dir():
        fail(Exit.USAGE, f"error: {path} is a directory; give a file path")
    if not path.resolve().parent.is_dir():
        fail(Exit.USAGE, f"error: no such directory: {path.parent}")

    async def go(c: Client) -> dict[str, Any]:
        with progress_bar(f"download {key}", None) as progress:
            return await c.download(key, path, stale=stale, progress=progress)

    info = run_client(ctx, addr, go)
    print(f"downloaded {key}: {info['size']} bytes, sha256 {info['sha256']} (verified) -> {path}")


@app.command("txn")
def txn_cmd(
    ctx: typer.Context,
    source: str = typer.Argument(
        "-", help="A file holding the txn as JSON ('-', the default: standard input)."
    ),
    as_json: bool = typer.Option(
        False, "--json", help='The result as JSON: {"succeeded", "revision", "results"}.'
    ),
    addr: str | None = AddrOpt,
) -> None:
    """Run a transaction given as JSON: if every compare holds, its success ops, else its
    failure ops, atomically (README "Transactions" shows the shape). Prints SUCCESS or
    FAILURE and the revision, then a line per op (put: OK; get: KEY<TAB>VALUE, or KEY alone
    if absent; delete, delete_prefix: deleted N; incr, incr_float: the new value; append:
    the new length). Exit 1 if the compares failed (the failure ops ran), 2 for a txn that
    is not valid JSON or does not fit, or whose op failed (nothing applied)."""
    from rkv.txnjson import TxnJsonError, result_to_json, txn_from_text

    try:
        text = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as e:
        fail(Exit.USAGE, f"error: cannot read {source}: {e.strerror or e}")
    try:
        txn = txn_from_text(text)
    except TxnJsonError as e:
        fail(Exit.USAGE, f"error: bad txn: {e}")
    result = run_client(ctx, addr, lambda c: c.txn(txn.compares, txn.success, txn.failure))
    branch = txn.success if result.succeeded else txn.failure
    out = result_to_json(branch, result)
    if as_json:
        print(json.dumps(out))
    else:
        print(f"{'SUCCESS' if result.succeeded else 'FAILURE'} revision {result.revision}")
        for item in out["results"]:
            print(_result_line(item))
    if not result.succeeded:
        raise typer.Exit(int(Exit.NOT_FOUND))


def _result_line(item: dict[str, Any]) -> str:
    op = item["op"]
    key = item.get("key", item.get("key_b64", ""))
    if op == "put":
        return "OK"
    if op == "get":
        if not item["found"]:
            return str(key)
        return f"{key}\t{item.get('value', item.get('value_b64', ''))}"
    if op in ("delete", "delete_prefix"):
        return f"deleted {item['deleted']}"
    if op == "append":
        return str(item["length"])
    return str(item["value"])
