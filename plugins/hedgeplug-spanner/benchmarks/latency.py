"""Acquire and renew latency of the Spanner backend against the Cloud Spanner emulator.

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
import statistics
import uuid

import anyio
from hedgeplug.testing import servers

from hedgeplug_spanner import SpannerLock, SpannerStore
from hedgeplug_spanner.emulator import create_emulator_database

PROJECT = "hedgeplug-bench"


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report(name: str, samples: list[float]) -> None:
    ms = [s * 1000 for s in samples]
    print(f"{name:8} n={len(ms):4}  p50={percentile(ms, 0.5):6.2f} ms  "
          f"p99={percentile(ms, 0.99):6.2f} ms  max={max(ms):6.2f} ms  "
          f"mean={statistics.fmean(ms):6.2f} ms")


async def measure(host: str, database: str, iterations: int) -> None:
    store = SpannerStore(PROJECT, "bench", database, emulator_host=host, timeout=10.0)
    lock = SpannerLock(store, f"bench-{uuid.uuid4().hex}")
    acquires: list[float] = []
    renews: list[float] = []
    try:
        for _ in range(5):  # warm up sessions and channels
            lease = await lock.acquire("bench", "addr", 5.0)
            assert lease is not None
            await lock.release(lease)
        for _ in range(iterations):
            started = anyio.current_time()
            lease = await lock.acquire("bench", "addr", 5.0)
            acquires.append(anyio.current_time() - started)
            assert lease is not None
            started = anyio.current_time()
            renewed = await lock.renew(lease, 5.0)
            renews.append(anyio.current_time() - started)
            assert renewed is not None
            await lock.release(lease)
    finally:
        await lock.aclose()
    report("acquire", acquires)
    report("renew", renews)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--emulator",
                        default=os.environ.get(servers.SPANNER_EMULATOR_HOST_ENV, ""))
    args = parser.parse_args()
    iterations = max(1, min(args.iterations, 10_000))  # bounded run
    server = None
    host = args.emulator
    if not host:
        server = servers.start_spanner_emulator()
        host = server.host
    try:
        database = f"bench{uuid.uuid4().hex[:16]}"
        create_emulator_database(host, PROJECT, "bench", database)
        print(f"spanner emulator {host}, {iterations} iterations")
        anyio.run(measure, host, database, iterations, backend="trio")
    finally:
        if server is not None:
            server.cleanup()


if __name__ == "__main__":
    main()
