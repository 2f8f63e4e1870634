"""One PySyncObj node with a tiny TCP front-end, run as `python -m bench.pso_server ...`.

Owns: the replicated key-value consumer (put and get both go through the Raft log, so get is
linearizable; `sget` reads local state), the PySyncObj configurations the benchmark compares,
and the front-end protocol: 4-byte big-endian length + msgpack [op, key, value] requests,
answered in order with msgpack [ok, value_or_error]. Must not add durability: PySyncObj never
fsyncs, and the benchmark reports it as it is.
"""

from __future__ import annotations

import argparse
import asyncio
import struct
from pathlib import Path
from typing import Any

import msgpack
from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, SyncObjConsumer, replicated

MAX_FRAME = 64 << 20
CONFIGS = ("default", "nobatch", "journal")


class ReplKV(SyncObjConsumer):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.data: dict[bytes, bytes] = {}

    @replicated  # type: ignore[untyped-decorator]
    def put(self, key: bytes, value: bytes) -> None:
        self.data[key] = value

    @replicated  # type: ignore[untyped-decorator]
    def lget(self, key: bytes) -> bytes | None:
        return self.data.get(key)


def make_conf(config: str, data_dir: Path) -> SyncObjConf:
    if config == "default":
        return SyncObjConf()  # as shipped: in-memory journal, batched append entries
    if config == "nobatch":
        # Fastest for a closed loop: append entries go out per command instead of per tick.
        return SyncObjConf(appendEntriesUseBatch=False)
    if config == "journal":
        # Survives a restart (mmap journal + dump file), still without fsync.
        data_dir.mkdir(parents=True, exist_ok=True)
        return SyncObjConf(
            journalFile=str(data_dir / "journal.bin"), fullDumpFile=str(data_dir / "dump.bin")
        )
    raise ValueError(f"unknown config {config!r}")


class FrontEnd:
    def __init__(self, sync: SyncObj, kv: ReplKV, loop: asyncio.AbstractEventLoop) -> None:
        self.sync = sync
        self.kv = kv
        self.loop = loop

    def _call(self, method: Any, *args: Any) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = self.loop.create_future()

        def done(result: Any, err: int) -> None:  # runs on PySyncObj's thread
            def settle() -> None:
                if not fut.done():
                    fut.set_result((result, err))

            self.loop.call_soon_threadsafe(settle)

        method(*args, callback=done)
        return fut

    async def handle(self, op: str, key: bytes, value: bytes | None) -> list[Any]:
        if op == "put":
            _, err = await self._call(self.kv.put, key, value)
        elif op == "get":
            res, err = await self._call(self.kv.lget, key)
            if err == FAIL_REASON.SUCCESS:
                return [True, res]
        elif op == "sget":
            return [True, self.kv.data.get(key)]
        elif op == "status":
            st = self.sync.getStatus()
            leader = st.get("leader")
            return [
                True,
                {
                    "self": str(st["self"]),
                    "leader": None if leader is None else str(leader),
                    "state": st["state"],
                },
            ]
        else:
            return [False, f"bad op {op!r}"]
        if err == FAIL_REASON.SUCCESS:
            return [True, None]
        return [False, f"fail_reason_{err}"]

    async def serve_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readexactly(4)
                (n,) = struct.unpack(">I", head)
                if n > MAX_FRAME:
                    break
                op, key, value = msgpack.unpackb(await reader.readexactly(n), raw=False)
                reply = msgpack.packb(await self.handle(op, key, value), use_bin_type=True)
                writer.write(struct.pack(">I", len(reply)) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def amain(args: argparse.Namespace) -> None:
    kv = ReplKV()
    conf = make_conf(args.config, Path(args.data_dir))
    sync = SyncObj(args.self_addr, [p for p in args.partners.split(",") if p], conf, consumers=[kv])
    front = FrontEnd(sync, kv, asyncio.get_running_loop())
    server = await asyncio.start_server(front.serve_conn, "127.0.0.1", args.front_port)
    async with server:
        await server.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--self-addr", required=True)
    ap.add_argument("--partners", required=True)
    ap.add_argument("--front-port", type=int, required=True)
    ap.add_argument("--config", choices=CONFIGS, default="default")
    ap.add_argument("--data-dir", required=True)
    asyncio.run(amain(ap.parse_args()))


if __name__ == "__main__":
    main()
