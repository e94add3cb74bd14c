"""Acquire and renew latency of the postgres lock backend, through its async API
(worker-thread hop included), against a local server.

    python benchmarks/latency.py [--dsn DSN] [--count 1000]

Without --dsn (or HEDGEPLUG_TEST_POSTGRES_DSN) a throwaway server is started on
a free loopback port with hedgeplug.testing.servers (note: that server runs
with fsync and synchronous_commit off, so commits do not wait for the disk;
a production server with durable commits adds its fsync time to every write).
Bounded: at most --count of each operation and --seconds in all.
"""

from __future__ import annotations

import argparse
import os
import statistics
import uuid

import anyio

from hedgeplug_postgres import PostgresLock, PostgresOptions


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _report(name: str, samples: list[float]) -> None:
    ms = [s * 1000 for s in samples]
    print(
        f"{name:<8} n={len(ms):<5} p50={_percentile(ms, 0.50):6.3f} ms  "
        f"p99={_percentile(ms, 0.99):6.3f} ms  max={max(ms):6.3f} ms  "
        f"mean={statistics.fmean(ms):6.3f} ms"
    )


async def measure(dsn: str, count: int, seconds: float, backend: str) -> None:
    lock = PostgresLock(PostgresOptions(dsn=dsn), f"bench-{uuid.uuid4().hex[:8]}")
    acquires: list[float] = []
    renews: list[float] = []
    currents: list[float] = []
    try:
        await lock.current()  # connect and create the tables outside the measurement
        with anyio.move_on_after(seconds):
            for _ in range(count):
                started = anyio.current_time()
                lease = await lock.acquire("bench", "127.0.0.1:1", 10.0)
                acquires.append(anyio.current_time() - started)
                assert lease is not None
                started = anyio.current_time()
                renewed = await lock.renew(lease, 10.0)
                renews.append(anyio.current_time() - started)
                assert renewed is not None
                started = anyio.current_time()
                await lock.current()
                currents.append(anyio.current_time() - started)
                await lock.release(lease)
    finally:
        await lock.aclose()
    print(f"postgres lock latency ({backend}, {dsn.split('@')[-1]}):")
    _report("acquire", acquires)
    _report("renew", renews)
    _report("current", currents)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default=os.environ.get("HEDGEPLUG_TEST_POSTGRES_DSN", ""))
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--backend", choices=["trio", "asyncio"], default="trio")
    args = parser.parse_args()
    server = None
    dsn = args.dsn
    if not dsn:
        from hedgeplug.testing.servers import start_postgres

        server = start_postgres()
        dsn = server.dsn
    try:
        anyio.run(measure, dsn, args.count, args.seconds, args.backend, backend=args.backend)
    finally:
        if server is not None:
            server.cleanup()


if __name__ == "__main__":
    main()
