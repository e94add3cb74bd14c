"""The key/value log for threaded programs: `BlockingNode.kv`.

Each method blocks the calling thread until the node's event loop (in its
own thread) answers; `watch` is a plain iterator whose every step waits for
the next entry. Close the iterator (or let it be collected) to stop watching.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from anyio.from_thread import BlockingPortal

from ..contracts import LogEntry
from .kv import WATCH_POLL, KeyValueLog


class BlockingKeyValueLog:
    def __init__(self, portal: BlockingPortal, kv: KeyValueLog) -> None:
        self._portal = portal
        self._kv = kv

    def put(self, key: str, value: bytes | str, *, timeout: float = 10.0) -> LogEntry:
        return self._portal.call(lambda: self._kv.put(key, value, timeout=timeout))

    def trim(self, key: str, keep: int, *, timeout: float = 10.0) -> int:
        return self._portal.call(lambda: self._kv.trim(key, keep, timeout=timeout))

    def get(self, key: str) -> LogEntry | None:
        return self._portal.call(self._kv.get, key)

    def history(self, key: str, *, limit: int | None = None, oldest_first: bool = False) -> list[LogEntry]:
        return self._portal.call(lambda: self._kv.history(key, limit=limit, oldest_first=oldest_first))

    def keys(self, prefix: str = "") -> list[str]:
        return self._portal.call(self._kv.keys, prefix)

    def watch(self, prefix: str = "", *, since: int | None = None, poll: float = WATCH_POLL) -> Iterator[LogEntry]:
        source: Any = self._kv.watch(prefix, since=since, poll=poll)
        try:
            while True:
                try:
                    yield self._portal.call(source.__anext__)
                except StopAsyncIteration:
                    return
        finally:
            self._portal.call(source.aclose)
