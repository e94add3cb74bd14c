"""What one node holds for spill-over stores: memory first, then disk, within
the limits of each tier, and when each store was last used.

The keys are "<writer id>/<store name>", so two writers' stores of the same
name never mix. A store idle past its ttl (plus a margin, since its writer
touches it every quarter ttl while in use) is dropped by `expire`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import attrs

from .tiers import DiskTier, MemoryTier

EXPIRY_MARGIN = 1.5  # holders wait 1.5 ttl: the writer itself expires the store at 1 ttl


@attrs.define
class _Held:
    ttl: float
    touched: float


class LocalSpill:
    def __init__(self, memory: int, disk: int, directory: Path, clock: Callable[[], float]) -> None:
        self.memory = MemoryTier(memory)
        self.disk = DiskTier(directory, disk)
        self._clock = clock
        self._held: dict[str, _Held] = {}

    @property
    def stores(self) -> tuple[str, ...]:
        return tuple(self._held)

    def touch(self, store: str, ttl: float | None = None) -> bool:
        held = self._held.get(store)
        if held is None:
            if ttl is None:
                return False
            held = self._held[store] = _Held(ttl, self._clock())
        held.touched = self._clock()
        if ttl is not None:
            held.ttl = ttl
        return True

    async def put(self, store: str, seq: int, data: bytes, ttl: float) -> str | None:
        """Store one piece; the tier that took it, or None when both are full."""
        self.touch(store, ttl)
        if self.memory.try_put(store, seq, data):
            return "memory"
        if await self.disk.try_put(store, seq, data):
            return "disk"
        return None

    def reserve(self, want: int) -> tuple[int, int]:
        """Credit for a writer: up to `want` bytes, memory first, then disk."""
        memory = self.memory.reserve(want)
        return memory, self.disk.reserve(want - memory)

    def release(self, memory: int, disk: int) -> None:
        self.memory.release(memory)
        self.disk.release(disk)

    async def put_reserved(self, store: str, seq: int, data: bytes, tier: str, ttl: float) -> None:
        """Store a piece in credit reserved earlier on `tier`."""
        self.touch(store, ttl)
        if tier == "memory":
            self.memory.put_reserved(store, seq, data)
        else:
            await self.disk.put_reserved(store, seq, data)

    async def get(self, store: str, seq: int) -> bytes | None:
        data = self.memory.get(store, seq)
        if data is None:
            data = await self.disk.get(store, seq)
        if data is not None:
            self.touch(store)
        return data

    def remove(self, store: str, seq: int) -> None:
        if not self.memory.remove(store, seq):
            self.disk.remove(store, seq)

    def drop(self, store: str) -> int:
        """Free every tier of `store`; the bytes freed."""
        self._held.pop(store, None)
        return self.memory.drop(store) + self.disk.drop(store)

    def expire(self) -> list[str]:
        now = self._clock()
        gone = [s for s, h in self._held.items() if now - h.touched > h.ttl * EXPIRY_MARGIN]
        for store in gone:
            self.drop(store)
        return gone

    def next_expiry(self) -> float | None:
        """Seconds until the soonest store could expire (None when none is held)."""
        if not self._held:
            return None
        now = self._clock()
        return max(0.0, min(h.touched + h.ttl * EXPIRY_MARGIN - now for h in self._held.values()))

    def stats(self) -> dict[str, int]:
        return {
            "stores": len(self._held),
            "memory_used": self.memory.used,
            "memory_peak": self.memory.peak,
            "memory_limit": self.memory.limit,
            "disk_used": self.disk.used,
            "disk_peak": self.disk.peak,
            "disk_limit": self.disk.limit,
        }
