"""Several nodes, each with a cache, in one test: over the in-process lock and
transport (fakes of the store and network, named so) or over loopback tcp
with the sqlite lock in a temporary directory."""

from __future__ import annotations

import itertools
from typing import Any

import anyio

import hedgeplug
from hedgeplug.cache import Cache, open_cache

_names = itertools.count()


def memory_config(name: str, cluster: str) -> dict[str, Any]:
    return {
        "node": {"id": name, "cluster": cluster, "stop_timeout": "2s"},
        "lock": {"use": "memory", "store": cluster, "ttl": 1.0},
        "transport": {"use": "memory", "network": cluster},
        "membership": {"use": "heartbeat", "interval": 0.1, "missed": 3},
        "broadcast": {"use": "direct"},
    }


def tcp_config(name: str, cluster: str, lock_path: str) -> dict[str, Any]:
    return {
        "node": {"id": name, "cluster": cluster, "stop_timeout": "2s"},
        "lock": {"use": "sqlite", "path": lock_path, "ttl": 1.0},
        "transport": {"use": "tcp", "bind": "127.0.0.1:0"},
        "membership": {"use": "heartbeat", "interval": 0.1, "missed": 3},
        "broadcast": {"use": "direct"},
    }


class CacheCluster:
    def __init__(self, tg: Any, lock_path: str | None = None, **cache_options: Any) -> None:
        self.tg = tg
        self.cluster = f"cache{next(_names)}"
        self.lock_path = lock_path
        self.options = {"max_memory": "1MiB", **cache_options}
        self.nodes: dict[str, hedgeplug.Node] = {}
        self.caches: dict[str, Cache] = {}
        self._stops: dict[str, anyio.Event] = {}
        self._done: dict[str, anyio.Event] = {}

    def config(self, name: str) -> dict[str, Any]:
        if self.lock_path is None:
            return memory_config(name, self.cluster)
        return tcp_config(name, self.cluster, self.lock_path)

    async def start(self, name: str) -> Cache:
        ready, stop, done = anyio.Event(), anyio.Event(), anyio.Event()
        self._stops[name], self._done[name] = stop, done

        async def run() -> None:
            try:
                async with hedgeplug.open_node(self.config(name)) as node:
                    self.nodes[name] = node
                    async with open_cache(node, "test", **self.options) as cache:
                        self.caches[name] = cache
                        ready.set()
                        await stop.wait()
            finally:
                self.nodes.pop(name, None)
                self.caches.pop(name, None)
                done.set()

        self.tg.start_soon(run)
        await ready.wait()
        return self.caches[name]

    async def stop(self, name: str) -> None:
        """Graceful: the cache hands off, then the node leaves."""
        self._stops[name].set()
        with anyio.fail_after(10):
            await self._done[name].wait()

    def kill(self, name: str) -> None:
        self.caches.pop(name).abandon()
        self.nodes.pop(name).kill()

    def close(self) -> None:
        """End of a test: everything stops at once, no hand-off."""
        for name in list(self.nodes):
            self.kill(name)
        self.tg.cancel_scope.cancel()

    async def settle(self, size: int, timeout: float = 10.0) -> None:
        """Every node sees `size` members."""
        with anyio.fail_after(timeout):
            while not all(len(n.view) == size for n in self.nodes.values()):
                await anyio.sleep(0.05)

    def holders(self, key: bytes) -> set[str]:
        return {
            name for name, c in self.caches.items()
            if (e := c.store.get(key, touch=False)) is not None and e.value is not None
        }

    def owners(self, key: bytes) -> set[str]:
        any_cache = next(iter(self.caches.values()))
        return set(any_cache.placement().owners(key))

    async def placed(self, keys: list[bytes], timeout: float = 15.0) -> None:
        """Wait until every key is held by exactly its owners."""
        with anyio.fail_after(timeout):
            while True:
                if all(self.holders(k) == self.owners(k) for k in keys):
                    return
                await anyio.sleep(0.1)
