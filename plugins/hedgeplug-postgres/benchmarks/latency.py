"""Acquire, renew and current latency of the postgres lock backend, through its
async API (worker-thread hop included), against a local server, beside a
baseline: `select 1` on a plain connection through the same kind of worker hop.

    python benchmarks/latency.py [--dsn DSN] [--count 1000]

Without --dsn (or HEDGEPLUG_TEST_POSTGRES_DSN) a throwaway server is started on
a free loopback port with hedgeplug_postgres.testing (note: that server runs
with fsync and synchronous_commit off, so commits do not wait for the disk;
a production server with durable commits adds its fsync time to every write).
Bounded: at most --count of each operation and --seconds in all.
"""

from __future__ import annotations

import argparse
import os
import uuid

import anyio
import psycopg
from hedgeplug.testing.timing import Stopwatch, measure, report

from hedgeplug_postgres import PostgresLock, PostgresOptions
from hedgeplug_postgres.testing import POSTGRES_DSN_ENV, start_postgres


async def run(dsn: str, count: int, seconds: float, backend: str) -> None:
    lock = PostgresLock(PostgresOptions(dsn=dsn), f"bench-{uuid.uuid4().hex[:8]}")
    plain = await anyio.to_thread.run_sync(lambda: psycopg.connect(dsn, autocommit=True))

    async def baseline(watch: Stopwatch) -> None:
        with watch.timing("select 1"):
            await anyio.to_thread.run_sync(lambda: plain.execute("select 1").fetchone())

    async def cycle(watch: Stopwatch) -> None:
        with watch.timing("acquire"):
            lease = await lock.acquire("bench", "127.0.0.1:1", 10.0)
        assert lease is not None
        with watch.timing("renew"):
            renewed = await lock.renew(lease, 10.0)
        assert renewed is not None
        with watch.timing("current"):
            await lock.current()
        await lock.release(lease)

    try:
        base = (await measure(baseline, count=count, seconds=seconds / 4))["select 1"]
        timed = await measure(cycle, count=count, seconds=seconds)
    finally:
        await lock.aclose()
        plain.close()
    print(f"postgres lock latency ({backend}, {dsn.split('@')[-1]}):")
    report("select 1", base)
    for name in ("acquire", "renew", "current"):
        report(name, timed.get(name, []), base)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default=os.environ.get(POSTGRES_DSN_ENV, ""))
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--backend", choices=["trio", "asyncio"], default="trio")
    args = parser.parse_args()
    count = max(1, min(args.count, 100_000))  # bounded run
    server = None
    dsn = args.dsn
    if not dsn:
        server = start_postgres()
        dsn = server.dsn
    try:
        anyio.run(run, dsn, count, args.seconds, args.backend, backend=args.backend)
    finally:
        if server is not None:
            server.cleanup()


if __name__ == "__main__":
    main()
