"""Semaphore acquire + release round trip on each store, beside the store's
own client doing one write, measured in the same run.

    python benchmarks/semaphore_bench.py [--stores sqlite,postgres,etcd,spanner] [--count 300]

A real node (tcp on loopback) holds and frees one slot of a semaphore of
limit 1, uncontended: an acquire is one conditional write of the slot's
lease (the limit record is read once per node and name), a release one more
write. The baseline is one plain write through the store's own client, with
the same worker-thread hop where the backend has one:
sqlite3 (BEGIN IMMEDIATE, upsert, COMMIT, synchronous=FULL as the lock uses),
psycopg (one autocommit upsert), etcd's JSON gateway over httpx (one put),
google-cloud-spanner (one read-write transaction with one upsert).
postgres, etcd and the Spanner emulator are throwaway local servers started
here (postgres runs with fsync off). Each cycle does the baseline write and
then the semaphore round trip, so both see the same load. Bounded: at most --count cycles and
--seconds per store.
"""

from __future__ import annotations

import argparse
import base64
import sqlite3
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

from hedgeplug import open_node
from hedgeplug.state import close_semaphores, semaphore
from hedgeplug.testing.timing import Stopwatch, measure, report

Write = Callable[[], Awaitable[None]]


def node_config(lock: dict[str, Any]) -> dict[str, Any]:
    return {
        "node": {"id": "bench", "cluster": f"sembench-{uuid.uuid4().hex[:6]}", "stop_timeout": "2s"},
        "lock": {**lock, "ttl": "10s"},
        "transport": {"use": "tcp", "bind": "127.0.0.1:0"},
        "membership": {"use": "heartbeat", "interval": "1s"},
    }


@asynccontextmanager
async def sqlite_store(folder: Path) -> AsyncIterator[tuple[dict[str, Any], Write]]:
    path = folder / "bench.sqlite"
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS baseline (k TEXT PRIMARY KEY, v INTEGER)")
    limiter = anyio.CapacityLimiter(1)

    def write() -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO baseline VALUES ('k', 1) ON CONFLICT (k) DO UPDATE SET v = v + 1")
        conn.execute("COMMIT")

    async def one_write() -> None:
        await anyio.to_thread.run_sync(write, limiter=limiter)

    try:
        yield {"use": "sqlite", "path": str(path)}, one_write
    finally:
        conn.close()


@asynccontextmanager
async def postgres_store(folder: Path) -> AsyncIterator[tuple[dict[str, Any], Write]]:
    import psycopg

    from hedgeplug_postgres.testing import start_postgres

    server = start_postgres()
    try:
        conn = psycopg.connect(server.dsn, autocommit=True)
        conn.execute("CREATE TABLE IF NOT EXISTS baseline (k TEXT PRIMARY KEY, v BIGINT)")
        limiter = anyio.CapacityLimiter(1)

        async def one_write() -> None:
            await anyio.to_thread.run_sync(
                lambda: conn.execute(
                    "INSERT INTO baseline VALUES ('k', 1) ON CONFLICT (k) DO UPDATE SET v = baseline.v + 1"
                ),
                limiter=limiter,
            )

        try:
            yield {"use": "postgres", "dsn": server.dsn}, one_write
        finally:
            conn.close()
    finally:
        server.cleanup()


@asynccontextmanager
async def etcd_store(folder: Path) -> AsyncIterator[tuple[dict[str, Any], Write]]:
    import httpx

    from hedgeplug_etcd.testing import start_etcd

    server = start_etcd()
    try:
        endpoint = server.endpoints[0]
        async with httpx.AsyncClient(base_url=endpoint, timeout=5.0) as client:
            body = {"key": base64.b64encode(b"baseline").decode(), "value": base64.b64encode(b"1").decode()}

            async def one_write() -> None:
                (await client.post("/v3/kv/put", json=body)).raise_for_status()

            yield {"use": "etcd", "endpoints": [endpoint], "prefix": f"bench-{uuid.uuid4().hex}/"}, one_write
    finally:
        server.cleanup()


@asynccontextmanager
async def spanner_store(folder: Path) -> AsyncIterator[tuple[dict[str, Any], Write]]:
    from hedgeplug_spanner.emulator import create_emulator_database
    from hedgeplug_spanner.store import SpannerStore
    from hedgeplug_spanner.testing import start_spanner_emulator

    server = start_spanner_emulator()
    try:
        database = f"bench{uuid.uuid4().hex[:12]}"
        create_emulator_database(server.host, "hedgeplug-bench", "bench", database)
        store = SpannerStore("hedgeplug-bench", "bench", database, emulator_host=server.host, timeout=10.0)

        def write(db: Any) -> None:
            db.run_in_transaction(lambda t: t.insert_or_update(
                "hedgeplug_rows", columns=("lock_name", "row_key", "value", "version"),
                values=[("baseline", "k", base64.b64encode(b"1"), 1)],
            ))

        async def one_write() -> None:
            await store.run("baseline write", write)

        yield {"use": "spanner", "project": "hedgeplug-bench", "instance": "bench", "database": database,
               "emulator_host": server.host}, one_write
    finally:
        server.cleanup()


STORES = {"sqlite": sqlite_store, "postgres": postgres_store, "etcd": etcd_store, "spanner": spanner_store}


async def bench(name: str, count: int, seconds: float) -> None:
    with tempfile.TemporaryDirectory(prefix="hedgeplug-sembench-") as tmp:
        async with STORES[name](Path(tmp)) as (lock, one_write):
            async with open_node(node_config(lock)) as node:
                sem = semaphore(node, "bench", 1)

                # Interleaved, so both see the same machine load and store state.
                async def cycle(watch: Stopwatch) -> None:
                    with watch.timing("write"):
                        await one_write()
                    with watch.timing("round"):
                        with watch.timing("acquire"):
                            permit = await sem.acquire(timeout=10)
                        with watch.timing("release"):
                            await permit.release()

                try:
                    timed = await measure(cycle, count=count, seconds=seconds)
                    base = timed.get("write", [])
                finally:
                    with anyio.CancelScope(shield=True):
                        await close_semaphores(node)
        print(f"{name}: semaphore of limit 1, uncontended (ms; 'write' is the store's own client)")
        report("write", base)
        report("acquire", timed.get("acquire", []), base)
        report("release", timed.get("release", []), base)
        report("acq+rel", timed.get("round", []), base)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", default="sqlite,postgres,etcd,spanner")
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--backend", choices=["trio", "asyncio"], default="trio")
    args = parser.parse_args()
    count = max(1, min(args.count, 10_000))
    seconds = max(1.0, min(args.seconds, 300.0))
    for name in args.stores.split(","):
        if name not in STORES:
            parser.error(f"unknown store {name!r}; choose from {', '.join(STORES)}")
        anyio.run(bench, name, count, seconds, backend=args.backend)


if __name__ == "__main__":
    main()
