"""Acquire and renew latency of the Spanner backend against the Cloud Spanner
emulator, beside a baseline: a `SELECT 1` snapshot read through the same store.

    python plugins/hedgeplug-spanner/benchmarks/latency.py [--iterations 200] [--emulator HOST:PORT]

Without --emulator (or HEDGEPLUG_TEST_SPANNER_EMULATOR_HOST) it starts a
throwaway emulator and creates a database with the hedgeplug tables. One
acquire and one renew are each one read-write transaction (read, decide,
write with a commit timestamp). The emulator is in-process C++ with no
replication, so these figures show the client's overhead, not real Spanner's
commit latency (tens of milliseconds across zones). Prints p50/p99/max in ms.
"""

from __future__ import annotations

import argparse
import os
import uuid
from typing import Any

import anyio
from hedgeplug.testing.timing import Stopwatch, measure, report

from hedgeplug_spanner import SpannerLock, SpannerStore
from hedgeplug_spanner.emulator import create_emulator_database
from hedgeplug_spanner.testing import SPANNER_EMULATOR_HOST_ENV, start_spanner_emulator

PROJECT = "hedgeplug-bench"
SECONDS = 120.0  # the whole run's bound


def _select_one(database: Any) -> Any:
    with database.snapshot() as snapshot:
        return list(snapshot.execute_sql("SELECT 1"))


async def run(host: str, database: str, iterations: int) -> None:
    store = SpannerStore(PROJECT, "bench", database, emulator_host=host, timeout=10.0)
    lock = SpannerLock(store, f"bench-{uuid.uuid4().hex}")

    async def baseline(watch: Stopwatch) -> None:
        with watch.timing("select 1"):
            await store.run("SELECT 1", _select_one)

    async def cycle(watch: Stopwatch) -> None:
        with watch.timing("acquire"):
            lease = await lock.acquire("bench", "addr", 5.0)
        assert lease is not None
        with watch.timing("renew"):
            renewed = await lock.renew(lease, 5.0)
        assert renewed is not None
        await lock.release(lease)

    try:
        base = (await measure(baseline, count=iterations, seconds=SECONDS / 4))["select 1"]
        timed = await measure(cycle, count=iterations, seconds=SECONDS)
    finally:
        await lock.aclose()
    report("select 1", base)
    report("acquire", timed.get("acquire", []), base)
    report("renew", timed.get("renew", []), base)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--emulator", default=os.environ.get(SPANNER_EMULATOR_HOST_ENV, ""))
    args = parser.parse_args()
    iterations = max(1, min(args.iterations, 10_000))  # bounded run
    server = None
    host = args.emulator
    if not host:
        server = start_spanner_emulator()
        host = server.host
    try:
        database = f"bench{uuid.uuid4().hex[:16]}"
        create_emulator_database(host, PROJECT, "bench", database)
        print(f"spanner emulator {host}, {iterations} iterations")
        anyio.run(run, host, database, iterations, backend="trio")
    finally:
        if server is not None:
            server.cleanup()


if __name__ == "__main__":
    main()
