"""The cache for threaded programs: each call blocks until the node answers.

    with hedgeplug.BlockingNode(config) as node:
        cache = node.cache("sessions", max_memory="64MiB")
        cache.set("k", b"v")
        cache.get("k")
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from typing import Any

from anyio.from_thread import BlockingPortal

from .cache import Cache


class BlockingCache:
    def __init__(self, portal: BlockingPortal, node: Any, name: str, **options: Any) -> None:
        self._portal = portal
        self.cache: Cache = portal.call(lambda: Cache(node, name, **options))
        self._runner: Future[Any] = portal.start_task_soon(self.cache.run)

    def get(self, key: str | bytes, default: Any = None) -> Any:
        return self._portal.call(self.cache.get, key, default)

    def set(self, key: str | bytes, value: Any, **kwargs: Any) -> None:
        self._portal.call(lambda: self.cache.set(key, value, **kwargs))

    def delete(self, key: str | bytes) -> None:
        self._portal.call(self.cache.delete, key)

    def get_many(self, keys: Iterable[str | bytes], default: Any = None) -> dict[Any, Any]:
        return self._portal.call(self.cache.get_many, list(keys), default)

    def set_many(self, items: Mapping[Any, Any], **kwargs: Any) -> None:
        self._portal.call(lambda: self.cache.set_many(dict(items), **kwargs))

    def get_or_load(self, key: str | bytes, loader: Callable[[], Any], **kwargs: Any) -> Any:
        """`loader` is a plain function; it runs in the node's thread, keep it short."""
        return self._portal.call(lambda: self.cache.get_or_load(key, loader, **kwargs))

    def stats(self) -> dict[str, Any]:
        return self._portal.call(self.cache.stats)

    def close(self) -> None:
        """Hand off this node's keys, then stop the cache's background work."""
        self._portal.call(self.cache.close)
        self._runner.cancel()
