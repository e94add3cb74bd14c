"""One node process of `hedgeplug bench cache`: a hedgeplug node with the
cache "bench" open, that also drives redis-server and memcached clients, so
every path is measured from the same process under the same load.

    python -m hedgeplug.cli.bench_cache_node CONFIG.toml REDIS_PORT MEMCACHED_PORT

(port 0: that server is not measured). It prints one JSON line once its
node listens, then answers one JSON line per JSON command line on stdin
(see `Worker`), and stops at the end of its input, so it never outlives the
bench that started it.

The redis and memcached clients are the blocking redis-py and pymemcache
clients: one call at a time, the way an application calls them; the node's
own tasks run between calls (a checkpoint after each).
"""

from __future__ import annotations

import json
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel

from ..cache import Cache, open_cache
from ..node import open_node

Op = Callable[[int], Awaitable[Any]]
BATCH_LIMIT = 1000  # keys one batched call may take
ECHO_BYTES = 100  # one round trip of the floor path
FLOOR = "trio tcp echo (floor)"


def keys_for(size: int, count: int) -> list[bytes]:
    return [f"bench:{size}:{i}".encode() for i in range(count)]


class Worker:
    def __init__(self, cache: Cache, redis_port: int, memcached_port: int) -> None:
        self.cache = cache
        self.echo: Any = None  # a stream to another node's echo listener
        self.redis: Any = None
        self.memcached: Any = None
        if redis_port:
            import redis

            self.redis = redis.Redis(host="127.0.0.1", port=redis_port)
        if memcached_port:
            import pymemcache

            self.memcached = pymemcache.Client(("127.0.0.1", memcached_port), no_delay=True)

    # ------------------------------------------------------------ commands

    async def settle(self, size: int, timeout: float) -> dict[str, Any]:
        with anyio.move_on_after(timeout):
            while len(self.cache.node.view) < size:
                await anyio.sleep(0.05)
        return {"members": len(self.cache.node.view)}

    async def connect_echo(self, port: int) -> dict[str, Any]:
        """The floor of a request/reply between two of these processes: a raw
        trio TCP round trip of ECHO_BYTES to another node's echo listener."""
        self.echo = await anyio.connect_tcp("127.0.0.1", port)
        return {}

    async def fill(self, size: int, count: int) -> dict[str, Any]:
        value = b"v" * size
        keys = keys_for(size, count)
        before = self._server_bytes()
        for start in range(0, count, 100):
            chunk = keys[start : start + 100]
            await self.cache.set_many({k: value for k in chunk})
            if self.redis is not None:
                self.redis.mset({k: value for k in chunk})
            if self.memcached is not None:
                self.memcached.set_many({k.decode(): value for k in chunk}, noreply=False)
            await anyio.lowlevel.checkpoint()
        after = self._server_bytes()
        return {name: (after[name] - before[name]) / count for name in before}

    def _server_bytes(self) -> dict[str, int]:
        """Memory the servers report for their data: redis used_memory,
        memcached's bytes of items."""
        out = {}
        if self.redis is not None:
            out["redis"] = int(self.redis.info("memory")["used_memory"])
        if self.memcached is not None:
            out["memcached"] = int(self.memcached.stats()[b"bytes"])
        return out

    def split(self, size: int, count: int) -> tuple[list[bytes], list[bytes]]:
        """(keys this node owns, keys only other nodes own)."""
        placement = self.cache.placement()
        local: list[bytes] = []
        remote: list[bytes] = []
        for key in keys_for(size, count):
            (local if self.cache.node_id in placement.owners(key) else remote).append(key)
        return local, remote

    def paths(self, size: int, count: int) -> dict[str, Op]:
        local, remote = self.split(size, count)
        every = keys_for(size, count)
        value = b"v" * size
        cache = self.cache
        paths: dict[str, Op] = {}
        if remote:
            paths["hedgeplug get"] = lambda i: cache.get(remote[i % len(remote)])
        if local:
            paths["hedgeplug get local"] = lambda i: cache.get(local[i % len(local)])
        paths["hedgeplug set"] = lambda i: cache.set(every[i % len(every)], value)
        if self.echo is not None:
            paths[FLOOR] = self._round_trip
        if self.redis is not None:
            rds = self.redis
            paths["redis get"] = _blocking(lambda i: rds.get(every[i % len(every)]))
            paths["redis set"] = _blocking(lambda i: rds.set(every[i % len(every)], value))
        if self.memcached is not None:
            mc, names = self.memcached, [k.decode() for k in every]
            paths["memcached get"] = _blocking(lambda i: mc.get(names[i % len(names)]))
            paths["memcached set"] = _blocking(lambda i: mc.set(names[i % len(names)], value, noreply=False))
        return paths

    async def _round_trip(self, i: int) -> None:
        await self.echo.send(b"e" * ECHO_BYTES)
        got = 0
        while got < ECHO_BYTES:
            got += len(await self.echo.receive(ECHO_BYTES))

    async def latency(
        self, size: int, keys: int, count: int, seconds: float, only: list[str] | None = None
    ) -> dict[str, Any]:
        """Every path (or those named in `only`) one call at a time, in turn, so
        all see the same load: {path: [microseconds per call]} (a few warm-up
        calls not counted)."""
        paths = {p: op for p, op in self.paths(size, keys).items() if only is None or p in only}
        if not paths:
            return {"samples": {}}
        for op in paths.values():
            for i in range(min(20, count)):
                await op(i)
        samples: dict[str, list[float]] = {name: [] for name in paths}
        order = list(paths.items())
        stop_at = time.perf_counter() + seconds
        for i in range(count):
            if time.perf_counter() > stop_at:
                break
            turn = order[i % len(order) :] + order[: i % len(order)]
            for name, op in turn:
                started = time.perf_counter_ns()
                await op(i)
                samples[name].append((time.perf_counter_ns() - started) / 1000)
        return {"samples": samples}

    async def batch(self, size: int, keys: int, batch: int, seconds: float) -> dict[str, Any]:
        """Keys read per second in batches of `batch` keys: hedgeplug get_many
        (keys of every owner), redis MGET, memcached get_many; in turn."""
        every = keys_for(size, keys)
        batch = max(1, min(batch, BATCH_LIMIT, len(every)))
        groups = [every[i : i + batch] for i in range(0, len(every) - batch + 1, batch)] or [every]
        cache = self.cache
        paths: dict[str, Op] = {"hedgeplug get_many": lambda i: cache.get_many(groups[i % len(groups)])}
        if self.redis is not None:
            rds = self.redis
            paths["redis mget"] = _blocking(lambda i: rds.mget(groups[i % len(groups)]))
        if self.memcached is not None:
            mc = self.memcached
            named = [[k.decode() for k in g] for g in groups]
            paths["memcached get_many"] = _blocking(lambda i: mc.get_many(named[i % len(named)]))
        spent = dict.fromkeys(paths, 0.0)
        done = dict.fromkeys(paths, 0)
        stop_at = time.perf_counter() + seconds
        i = 0
        while time.perf_counter() < stop_at and i < 100_000:
            for name, op in paths.items():
                started = time.perf_counter()
                got = await op(i)
                spent[name] += time.perf_counter() - started
                done[name] += len(got)
            i += 1
        return {"keys_per_s": {name: done[name] / spent[name] for name in paths if spent[name] > 0}}

    async def memory(self, size: int, entries: int) -> dict[str, Any]:
        """Bytes one entry takes in this node's store beyond its key and value
        (traced allocations of `entries` entries stored locally)."""
        from ..cache.values import pack

        store = self.cache.store
        value = b"v" * size
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for i in range(entries):
                # As a write arrives: a fresh key, packed value and version per entry.
                store.apply(f"memory:{size}:{i}".encode(), pack(value), self.cache.clock.tick(), None)
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        key_bytes = len(f"memory:{size}:{entries // 2}".encode())
        for i in range(entries):
            store.drop(f"memory:{size}:{i}".encode())
        return {"bytes_per_entry": (after - before) / entries, "key_bytes": key_bytes}

    async def quit(self) -> dict[str, Any]:
        return {}


def _blocking(call: Callable[[int], Any]) -> Op:
    """A blocking client call as an async op: the node's tasks run after it."""

    async def op(i: int) -> Any:
        result = call(i)
        await anyio.lowlevel.checkpoint()
        return result

    return op


async def _echo(stream: Any) -> None:
    async with stream:
        try:
            while True:
                await stream.send(await stream.receive(ECHO_BYTES))
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            pass


async def serve(config: str, redis_port: int, memcached_port: int) -> None:
    async with (
        open_node(config) as node,
        open_cache(node, "bench", max_memory="512MiB") as cache,
        await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0) as echo,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(echo.serve, _echo)
        worker = Worker(cache, redis_port, memcached_port)
        echo_port = echo.extra(anyio.abc.SocketAttribute.local_port)
        print(json.dumps({"id": node.id, "address": node.address, "echo_port": echo_port}), flush=True)
        stdin = anyio.wrap_file(sys.stdin)
        while True:
            line = await stdin.readline()
            if not line:
                break
            command = json.loads(line)
            op = command.pop("op")
            try:
                answer = await getattr(worker, op)(**command)
            except Exception as exc:  # reported to the bench, which says which node failed
                answer = {"error": f"{type(exc).__name__}: {exc}"}
            print(json.dumps(answer), flush=True)
            if op == "quit":
                break
        cache.abandon()  # the bench ends: no hand-off
        if worker.echo is not None:
            await worker.echo.aclose()
        tg.cancel_scope.cancel()


if __name__ == "__main__":
    anyio.run(serve, sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), backend="trio")
