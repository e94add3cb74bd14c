"""A partitioned in-memory cache on the agreed member list (see docs/cache.md).

    async with hedgeplug.open_node(config) as node:
        async with open_cache(node, "sessions", max_memory="64MiB", replicas=2) as cache:
            await cache.set("user:1", {"name": "ada"})
            print(await cache.get("user:1"))
"""

from __future__ import annotations

from .cache import Cache, open_cache
from .errors import CacheError, ProtocolError, ValueTooLarge, WriteIncomplete
from .placement import Placement

__all__ = [
    "Cache",
    "CacheError",
    "Placement",
    "ProtocolError",
    "ValueTooLarge",
    "WriteIncomplete",
    "open_cache",
]
