"""The partitioned cache next to redis-server and memcached, measured in the
same run on this machine.

    .venv/bin/python benchmarks/cache_bench.py [--nodes 3] [--count 2000] [--size 100]

Starts redis-server and memcached on free loopback ports (from /usr/bin;
no persistence) and `--nodes` hedgeplug nodes in this process (loopback tcp,
sqlite lock in a temporary directory, one cache with R=2), and measures
get and set one at a time, in turn, so every path sees the same machine
load: p50/p99 in microseconds and the rate one caller reaches. Then the
throughput with `--concurrency` operations in flight (redis: asyncio
client; memcached: that many threads, one pymemcache client each;
hedgeplug: that many tasks). Clients: `redis` and `pymemcache` from PyPI
(the test extra). Everything runs on the asyncio backend, which the redis
client needs. Every loop is bounded by --count and --seconds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import anyio

import hedgeplug
from hedgeplug.cache import open_cache
from hedgeplug.testing.servers import free_port

Op = Callable[[int], Awaitable[Any]]


def start_server(argv: list[str], port: int) -> subprocess.Popen[bytes]:
    binary = shutil.which(argv[0]) or argv[0]
    process = subprocess.Popen([binary, *argv[1:]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import socket

    for _ in range(100):  # bounded: 5 seconds
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit(f"{argv[0]} did not listen on 127.0.0.1:{port} within 5s")


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def interleaved(paths: dict[str, Op], count: int, seconds: float) -> dict[str, list[float]]:
    for op in paths.values():
        for i in range(min(50, count)):
            await op(i)
    samples: dict[str, list[float]] = {name: [] for name in paths}
    order = list(paths.items())
    stop_at = time.perf_counter() + seconds
    for i in range(count):
        if time.perf_counter() > stop_at:
            break
        for name, op in order[i % len(order) :] + order[: i % len(order)]:
            started = time.perf_counter()
            await op(i)
            samples[name].append((time.perf_counter() - started) * 1e6)
    return samples


async def throughput(op: Op, concurrency: int, total: int, seconds: float) -> float:
    done = 0
    started = time.perf_counter()

    async def worker(offset: int) -> None:
        nonlocal done
        i = offset
        while done < total and time.perf_counter() - started < seconds:
            await op(i)
            done += 1
            i += concurrency

    async with anyio.create_task_group() as tg:
        for w in range(concurrency):
            tg.start_soon(worker, w)
    return done / (time.perf_counter() - started)


async def main(args: argparse.Namespace) -> None:
    import pymemcache
    import redis.asyncio as aioredis

    value = b"v" * args.size
    keys = [f"bench:{i}" for i in range(args.keys)]
    redis_port, memcached_port = free_port(), free_port()
    servers = [
        start_server(
            ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            redis_port,
        ),
        start_server(
            ["memcached", "-l", "127.0.0.1", "-p", str(memcached_port), "-U", "0", "-m", "64"]
            + (["-u", "nobody"] if os.geteuid() == 0 else []),  # memcached refuses to run as root
            memcached_port,
        ),
    ]
    tmp = tempfile.mkdtemp(prefix="hedgeplug-cache-bench-")
    try:
        async with AsyncExitStack() as stack:
            caches = []
            for n in range(args.nodes):
                node = await stack.enter_async_context(
                    hedgeplug.open_node(
                        {
                            "node": {"id": f"b{n}", "cluster": "cache-bench"},
                            "lock": {"use": "sqlite", "path": f"{tmp}/lock.db"},
                            "transport": {"use": "tcp", "bind": "127.0.0.1:0"},
                        }
                    )
                )
                caches.append(await stack.enter_async_context(open_cache(node, "bench", max_memory="256MiB")))
            with anyio.fail_after(20):
                while not all(len(c.node.view) == args.nodes for c in caches):
                    await anyio.sleep(0.05)
            cache = caches[0]
            remote = [k for k in keys if cache.node_id not in cache.placement().owners(k.encode())]
            rds = aioredis.Redis(host="127.0.0.1", port=redis_port)
            stack.push_async_callback(rds.aclose)
            mc = pymemcache.Client(("127.0.0.1", memcached_port), no_delay=True)
            for k in keys:
                await rds.set(k, value)
                mc.set(k, value)
            await cache.set_many({k: value for k in keys})

            async def mc_get(i: int) -> Any:
                return mc.get(keys[i % len(keys)])

            async def mc_set(i: int) -> Any:
                return mc.set(keys[i % len(keys)], value)

            paths: dict[str, Op] = {
                "redis get": lambda i: rds.get(keys[i % len(keys)]),
                "memcached get": mc_get,
                "hedgeplug get": lambda i: cache.get(keys[i % len(keys)]),
                "hedgeplug get remote": lambda i: cache.get(remote[i % len(remote)]),
                "redis set": lambda i: rds.set(keys[i % len(keys)], value),
                "memcached set": mc_set,
                "hedgeplug set": lambda i: cache.set(keys[i % len(keys)], value),
            }
            samples = await interleaved(paths, args.count, args.seconds)

            pool = [
                pymemcache.Client(("127.0.0.1", memcached_port), no_delay=True)
                for _ in range(args.concurrency)
            ]
            limiter = anyio.CapacityLimiter(args.concurrency)

            async def mc_get_threaded(i: int) -> Any:
                # One client per worker (workers take i = worker, worker + c, ...).
                client = pool[i % args.concurrency]
                return await anyio.to_thread.run_sync(client.get, keys[i % len(keys)], limiter=limiter)
            rates = {
                "redis get": await throughput(paths["redis get"], args.concurrency, args.count * 5, args.seconds),
                "memcached get": await throughput(mc_get_threaded, args.concurrency, args.count * 5, args.seconds),
                "hedgeplug get": await throughput(paths["hedgeplug get"], args.concurrency, args.count * 5, args.seconds),
                "hedgeplug set": await throughput(paths["hedgeplug set"], args.concurrency, args.count * 5, args.seconds),
                "redis set": await throughput(paths["redis set"], args.concurrency, args.count * 5, args.seconds),
            }
            for c in pool:
                c.close()
            mc.close()
            for c in caches:
                c.abandon()  # the bench ends: no hand-off
    finally:
        for process in servers:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(tmp, ignore_errors=True)

    share = 1 - len(remote) / len(keys)
    print(
        f"{args.nodes} hedgeplug nodes (tcp, R=2), {args.keys} keys of {args.size} B, measured from one node "
        f"(it owns {share:.0%} of the keys); up to {args.count} ops per path, in turn; asyncio backend"
    )
    heading = ("path", "n", "p50 us", "p99 us", "ops/s x1", f"ops/s x{args.concurrency}")
    print(f"{heading[0]:<22}{heading[1]:>6}{heading[2]:>10}{heading[3]:>10}{heading[4]:>11}{heading[5]:>12}")
    for name, data in samples.items():
        rate = rates.get(name)
        mean = sum(data) / len(data)
        print(
            f"{name:<22}{len(data):>6}{percentile(data, 0.5):>10.0f}{percentile(data, 0.99):>10.0f}"
            f"{1e6 / mean:>11.0f}{'' if rate is None else f'{rate:.0f}':>12}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--size", type=int, default=100, help="value size in bytes")
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0, help="bound per measurement")
    anyio.run(main, parser.parse_args(), backend="asyncio")
