"""The local store of one cache on one node: size-bounded LRU with TTL.

Entries hold the packed value (bytes exactly as they travel), its version
and its expiry on this node's clock. A delete is a tombstone: an entry
without a value that keeps its version for `tombstone_ttl`, so a delayed
older write cannot bring the value back within that window.

Memory is bounded by the sum of entry sizes (key + value + a fixed
overhead); inserting past `max_memory` evicts the least recently used
entries first.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Callable, Iterator

import attrs

from .counters import Counters
from .errors import ValueTooLarge
from .versions import Version

# Bytes an entry costs beyond its key and value: the key's and value's object
# headers, the Entry, its version, the ordered-dict slot and link. Measured
# (tracemalloc, `hedgeplug bench cache`) at 260-370 on CPython 3.11; it was
# 120, which let a cache of small entries use twice its max_memory.
ENTRY_OVERHEAD = 280


@attrs.define(slots=True)
class Entry:
    value: bytes | None  # None: a tombstone (the key was deleted at `version`)
    # The version's two halves, not a tuple: 56 bytes less per entry, and the
    # writer's id is interned (a replica gets a new string with every message).
    counter: int
    writer: str
    expires_at: float | None
    size: int

    @property
    def version(self) -> Version:
        return (self.counter, self.writer)

    def ttl_left(self, now: float) -> float | None:
        return None if self.expires_at is None else max(0.0, self.expires_at - now)


class Store:
    def __init__(
        self,
        max_memory: int,
        now: Callable[[], float],
        counters: Counters,
        tombstone_ttl: float = 60.0,
    ) -> None:
        self.max_memory = max_memory
        self._now = now
        self._counters = counters
        self.tombstone_ttl = tombstone_ttl
        self._entries: OrderedDict[bytes, Entry] = OrderedDict()
        self.used = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def values(self) -> int:
        """Live (non-tombstone) entries."""
        return sum(1 for e in self._entries.values() if e.value is not None)

    def keys(self) -> list[bytes]:
        return list(self._entries)

    def items(self) -> Iterator[tuple[bytes, Entry]]:
        """A snapshot, oldest first; safe to modify the store while iterating."""
        return iter(list(self._entries.items()))

    def get(self, key: bytes, touch: bool = True) -> Entry | None:
        """The entry (a tombstone included) unless expired; a read makes it recent."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires_at is not None and entry.expires_at <= self._now():
            self._remove(key)
            if entry.value is not None:
                self._counters.add("expirations")
            return None
        if touch:
            self._entries.move_to_end(key)
        return entry

    def version_of(self, key: bytes) -> Version | None:
        entry = self.get(key, touch=False)
        return None if entry is None else entry.version

    def apply(self, key: bytes, value: bytes | None, version: Version, ttl: float | None) -> Version | None:
        """Take `value` at `version` if it is newer than what is held.

        Returns None when taken (or already held at exactly this version), else
        the newer version held, which refused it."""
        held = self.get(key, touch=False)
        if held is not None:
            if held.version == version:
                return None
            if held.version > version:
                return held.version
        size = len(key) + (len(value) if value is not None else 0) + ENTRY_OVERHEAD
        if size > self.max_memory:
            raise ValueTooLarge(
                f"an entry of {size} bytes exceeds the cache's max_memory of {self.max_memory} bytes"
            )
        if value is None:
            ttl = self.tombstone_ttl if ttl is None else min(ttl, self.tombstone_ttl)
        expires = None if ttl is None else self._now() + ttl
        if held is not None:
            self._remove(key)
        self._entries[key] = Entry(value, version[0], sys.intern(version[1]), expires, size)
        self.used += size
        self._evict()
        return None

    def drop(self, key: bytes) -> bool:
        if key in self._entries:
            self._remove(key)
            return True
        return False

    def sweep(self) -> int:
        """Remove every expired entry; returns how many went."""
        now = self._now()
        gone = [k for k, e in self._entries.items() if e.expires_at is not None and e.expires_at <= now]
        for key in gone:
            entry = self._entries[key]
            self._remove(key)
            if entry.value is not None:
                self._counters.add("expirations")
        return len(gone)

    def _remove(self, key: bytes) -> None:
        entry = self._entries.pop(key)
        self.used -= entry.size

    def _evict(self) -> None:
        while self.used > self.max_memory and self._entries:
            key, entry = self._entries.popitem(last=False)
            self.used -= entry.size
            if entry.value is not None:
                self._counters.add("evictions")
