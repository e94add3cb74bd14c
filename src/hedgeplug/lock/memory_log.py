"""The fenced key/value log of the in-memory store (a SIMULATOR PART).

`LogBook` holds the entries of every lock of one `MemoryStore`; an append is
accepted only while the token it carries is the token of the lock's live
lease, checked at the instant the store applies it (calls are atomic here:
nothing else runs between the check and the write). Every accepted append
is also kept in `accepted`, never trimmed, for the simulator's checkers.
The clock is the store's (`MemoryStore.now()`, virtual in the simulator).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from hedgeplug.plugin import LogEntry

if TYPE_CHECKING:
    from .memory import MemoryStore


@attrs.frozen
class Accepted:
    """One accepted append, for the simulator's checkers."""

    lock: str
    entry: LogEntry


class LogBook:
    """Entries per lock and key, one revision counter per store."""

    def __init__(self) -> None:
        self.revision = 0
        self.accepted: list[Accepted] = []
        self.refused = 0
        self._keys: dict[str, dict[str, list[LogEntry]]] = {}

    def _current(self, store: MemoryStore, lock: str, token: int) -> bool:
        lease = store.current(lock)
        return lease is not None and lease.token == token

    def append(self, store: MemoryStore, lock: str, token: int, key: str, value: bytes) -> LogEntry | None:
        if not self._current(store, lock, token):
            self.refused += 1
            return None
        entries = self._keys.setdefault(lock, {}).setdefault(key, [])
        self.revision += 1
        version = entries[-1].version + 1 if entries else 1
        entry = LogEntry(key, bytes(value), version, self.revision, token, store.now())
        entries.append(entry)
        self.accepted.append(Accepted(lock, entry))
        return entry

    def read(self, lock: str, key: str, limit: int | None, oldest_first: bool) -> list[LogEntry]:
        entries = list(self._keys.get(lock, {}).get(key, []))
        if not oldest_first:
            entries.reverse()
        return entries if limit is None else entries[:limit]

    def keys(self, lock: str, prefix: str) -> list[str]:
        return sorted(k for k, v in self._keys.get(lock, {}).items() if v and k.startswith(prefix))

    def since(self, lock: str, revision: int, prefix: str, limit: int) -> list[LogEntry]:
        found = [
            e for k, entries in self._keys.get(lock, {}).items() if k.startswith(prefix)
            for e in entries if e.revision > revision
        ]
        found.sort(key=lambda e: e.revision)
        return found[:limit]

    def trim(self, store: MemoryStore, lock: str, token: int, key: str, keep: int) -> int | None:
        if not self._current(store, lock, token):
            self.refused += 1
            return None
        entries = self._keys.get(lock, {}).get(key, [])
        dropped = max(0, len(entries) - keep)
        del entries[:dropped]
        return dropped


class MemoryLogAccess:
    """FencedLog for MemoryLock: each call goes through the store's faults
    (`_enter`/`_leave`) like every other call."""

    store: MemoryStore
    lock: str

    async def _enter(self) -> None: ...  # provided by MemoryLock

    async def _leave(self) -> None: ...

    async def _through(self, work: Any) -> Any:
        await self._enter()
        got = work()
        await self._leave()
        return got

    async def log_append(self, token: int, key: str, value: bytes) -> LogEntry | None:
        return await self._through(lambda: self.store.log.append(self.store, self.lock, token, key, value))  # type: ignore[no-any-return]

    async def log_read(
        self, key: str, *, limit: int | None = None, oldest_first: bool = False
    ) -> list[LogEntry]:
        return await self._through(lambda: self.store.log.read(self.lock, key, limit, oldest_first))  # type: ignore[no-any-return]

    async def log_keys(self, prefix: str) -> list[str]:
        return await self._through(lambda: self.store.log.keys(self.lock, prefix))  # type: ignore[no-any-return]

    async def log_since(self, revision: int, prefix: str, limit: int) -> list[LogEntry]:
        return await self._through(lambda: self.store.log.since(self.lock, revision, prefix, limit))  # type: ignore[no-any-return]

    async def log_last_revision(self) -> int:
        return await self._through(lambda: self.store.log.revision)  # type: ignore[no-any-return]

    async def log_trim(self, token: int, key: str, keep: int) -> int | None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        return await self._through(lambda: self.store.log.trim(self.store, self.lock, token, key, keep))  # type: ignore[no-any-return]
