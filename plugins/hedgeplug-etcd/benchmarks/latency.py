"""Acquire and renew latency of the etcd backend against a real etcd on loopback.

    python plugins/hedgeplug-etcd/benchmarks/latency.py [--iterations 200] [--endpoints URL,...]

Without --endpoints (or HEDGEPLUG_TEST_ETCD_ENDPOINTS) it starts a throwaway
etcd. One acquire = lease grant + create transaction; it is released after
each measurement so the next acquire starts from a free lock. One renew =
key read + lease keepalive. Prints p50/p99/max in milliseconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import uuid

import anyio
from hedgeplug.testing import servers

from hedgeplug_etcd import EtcdLock, GatewayClient


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report(name: str, samples: list[float]) -> None:
    ms = [s * 1000 for s in samples]
    print(f"{name:8} n={len(ms):4}  p50={percentile(ms, 0.5):6.2f} ms  "
          f"p99={percentile(ms, 0.99):6.2f} ms  max={max(ms):6.2f} ms  "
          f"mean={statistics.fmean(ms):6.2f} ms")


async def measure(endpoints: list[str], iterations: int) -> None:
    lock = EtcdLock(GatewayClient(endpoints, timeout=5.0), "bench", f"bench-{uuid.uuid4().hex}/")
    acquires: list[float] = []
    renews: list[float] = []
    try:
        for _ in range(5):  # warm up the connection pool
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
    parser.add_argument("--endpoints", default=os.environ.get(servers.ETCD_ENDPOINTS_ENV, ""))
    args = parser.parse_args()
    iterations = max(1, min(args.iterations, 10_000))  # bounded run
    server = None
    endpoints = [e for e in args.endpoints.split(",") if e]
    if not endpoints:
        server = servers.start_etcd()
        endpoints = server.endpoints
    try:
        print(f"etcd {endpoints[0]}, {iterations} iterations")
        anyio.run(measure, endpoints, iterations, backend="trio")
    finally:
        if server is not None:
            server.cleanup()


if __name__ == "__main__":
    main()
