"""Which members own a key: rendezvous (highest random weight) hashing over
the live members of the agreed view.

Every member scores every key; the R highest scores own it, best first (the
first is the primary, which also arbitrates single-flight loads). A member
joining or leaving moves only the keys whose top R it enters or leaves, about
R/N of them, and every node with the same view computes the same owners
without talking to anyone.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterable

from .errors import CacheError

_MASK = (1 << 64) - 1
RECENT = 16384


def key_bytes(key: str | bytes) -> bytes:
    """Keys are text or bytes; text is UTF-8, so "a" and b"a" are the same key."""
    if isinstance(key, str):
        return key.encode()
    if isinstance(key, bytes | bytearray | memoryview):
        return bytes(key)
    raise CacheError(f"a cache key must be str or bytes, not {type(key).__name__}")


def hash64(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def _mix(x: int) -> int:
    # splitmix64's finaliser: spreads key-hash XOR member-hash over all 64 bits,
    # so one blake2b per key and per member suffices instead of one per pair.
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


class Placement:
    """Owners of keys among one set of member ids."""

    def __init__(self, member_ids: Iterable[str], replicas: int) -> None:
        self.ids = frozenset(member_ids)
        self.replicas = replicas
        self._hashed = [(hash64(m.encode()), m) for m in sorted(self.ids)]
        # Scoring every member costs ~0.5 us each: remember recent answers (one view's worth).
        self._recent: dict[bytes, tuple[str, ...]] = {}

    def owners(self, key: bytes) -> tuple[str, ...]:
        """The R owners of `key`, primary first (fewer when the view is smaller)."""
        owners = self._recent.get(key)
        if owners is None:
            if len(self._recent) >= RECENT:
                self._recent.clear()
            owners = self._recent[key] = self.ranked(key, self.replicas)
        return owners

    def ranked(self, key: bytes, count: int) -> tuple[str, ...]:
        """The `count` members that score highest for `key`, best first."""
        kh = hash64(key)
        best = heapq.nlargest(count, self._hashed, key=lambda hm: (_mix(kh ^ hm[0]), hm[1]))
        return tuple(member for _, member in best)

    def owns(self, member: str, key: bytes) -> bool:
        return member in self.owners(key)

    def without(self, member: str) -> Placement:
        return Placement(self.ids - {member}, self.replicas)
