"""Acquire and renew latency of the etcd backend against a real etcd on loopback,
beside a baseline: one plain key read through the same gateway client.

    python plugins/hedgeplug-etcd/benchmarks/latency.py [--iterations 200] [--endpoints URL,...]

Without --endpoints (or HEDGEPLUG_TEST_ETCD_ENDPOINTS) it starts a throwaway
etcd. One acquire = lease grant + create transaction; it is released after
each measurement so the next acquire starts from a free lock. One renew =
key read + lease keepalive. Prints p50/p99/max in milliseconds.
"""

from __future__ import annotations

import argparse
import os
import uuid

import anyio
from hedgeplug.testing.timing import Stopwatch, measure, report

from hedgeplug_etcd import EtcdLock, GatewayClient
from hedgeplug_etcd.gateway import b64
from hedgeplug_etcd.testing import ETCD_ENDPOINTS_ENV, start_etcd

SECONDS = 120.0  # the whole run's bound


async def run(endpoints: list[str], iterations: int) -> None:
    client = GatewayClient(endpoints, timeout=5.0)
    lock = EtcdLock(client, "bench", f"bench-{uuid.uuid4().hex}/")

    async def baseline(watch: Stopwatch) -> None:
        with watch.timing("read"):
            await client.call("kv/range", {"key": b64(b"hedgeplug-bench-absent")})

    async def cycle(watch: Stopwatch) -> None:
        with watch.timing("acquire"):
            lease = await lock.acquire("bench", "addr", 5.0)
        assert lease is not None
        with watch.timing("renew"):
            renewed = await lock.renew(lease, 5.0)
        assert renewed is not None
        await lock.release(lease)

    try:
        base = (await measure(baseline, count=iterations, seconds=SECONDS / 4))["read"]
        timed = await measure(cycle, count=iterations, seconds=SECONDS)
    finally:
        await lock.aclose()
    report("read", base)
    report("acquire", timed.get("acquire", []), base)
    report("renew", timed.get("renew", []), base)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--endpoints", default=os.environ.get(ETCD_ENDPOINTS_ENV, ""))
    args = parser.parse_args()
    iterations = max(1, min(args.iterations, 10_000))  # bounded run
    server = None
    endpoints = [e for e in args.endpoints.split(",") if e]
    if not endpoints:
        server = start_etcd()
        endpoints = server.endpoints
    try:
        print(f"etcd {endpoints[0]}, {iterations} iterations")
        anyio.run(run, endpoints, iterations, backend="trio")
    finally:
        if server is not None:
            server.cleanup()


if __name__ == "__main__":
    main()
