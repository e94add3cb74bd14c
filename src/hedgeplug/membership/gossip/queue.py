"""The dissemination queue: member records waiting to ride on outgoing messages.

Each record is sent about `mult * ceil(log10(n + 1))` times (n = live members),
which is enough for an epidemic to reach everyone with high probability
while keeping the traffic per change logarithmic. Records that have been sent
fewer times go first, and among those the newest, so fresh news overtakes
old news. A newer record about a member replaces the queued older one: only
the latest word about a member is worth spreading.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import attrs

from .messages import encoded_size

# msgpack array header bytes per record; keeps the packing estimate honest.
RECORD_OVERHEAD = 1


def retransmit_limit(mult: int, cluster_size: int) -> int:
    return max(1, mult * math.ceil(math.log10(max(cluster_size, 1) + 1)))


@attrs.define
class _Queued:
    record: list[Any]
    size: int
    transmits: int
    seq: int


class TransmitQueue:
    def __init__(self, retransmit_mult: int, limit: Callable[[int], int] | None = None) -> None:
        self.retransmit_mult = retransmit_mult
        self._limit = limit or (lambda n: retransmit_limit(retransmit_mult, n))
        self._items: dict[str, _Queued] = {}
        self._seq = 0

    def __len__(self) -> int:
        return len(self._items)

    def push(self, key: str, record: list[Any]) -> None:
        """Queue `record` (about member `key`), replacing anything queued about it."""
        self._seq += 1
        self._items[key] = _Queued(record, encoded_size(record) + RECORD_OVERHEAD, 0, self._seq)

    def evict_most_sent(self) -> None:
        """Drop the record that has been sent most (the oldest among those)."""
        if self._items:
            key = max(self._items, key=lambda k: (self._items[k].transmits, -self._items[k].seq))
            del self._items[key]

    def discard(self, key: str) -> None:
        self._items.pop(key, None)

    def peek(self, budget: int) -> list[list[Any]]:
        """What `take` would give, without counting it sent (for replies that may arrive
        after the asker gave up and be thrown away with everything they carry)."""
        ordered = sorted(self._items.values(), key=lambda q: (q.transmits, -q.seq))
        picked: list[list[Any]] = []
        left = budget
        for item in ordered:
            if item.size <= left:
                left -= item.size
                picked.append(item.record)
        return picked

    def take(self, budget: int, cluster_size: int, *, at_least_one: bool = False) -> list[list[Any]]:
        """Records fitting in `budget` bytes, least-sent and newest first; counts them sent.
        `at_least_one`: the first record goes even if it alone exceeds the budget."""
        if not self._items or budget <= 0:
            return []
        limit = self._limit(cluster_size)
        ordered = sorted(self._items.items(), key=lambda kv: (kv[1].transmits, -kv[1].seq))
        picked: list[list[Any]] = []
        left = budget
        for key, item in ordered:
            if item.size > left and not (at_least_one and not picked):
                continue
            left -= item.size
            picked.append(item.record)
            item.transmits += 1
            if item.transmits >= limit:
                del self._items[key]
            if left < 16:  # nothing useful fits any more
                break
        return picked

    def pending(self) -> dict[str, int]:
        """Member id -> times sent so far (for tests and status)."""
        return {k: v.transmits for k, v in self._items.items()}
