"""Notices: application messages spread by this membership's own gossip
rounds (what the `gossip` broadcast strategy sends), fire-and-forget.

A notice travels as [id, channel, origin, payload, targets] in the "n" field
of gossip messages. A member that sees an id for the first time hands the
payload to its own handler of `channel` (if it is among `targets`, or
`targets` is None: everyone) and queues the notice for retransmission like a
member record, least-sent first, but `notice_limit(N)` times (about
ln(N) + 7: a notice is worth more sends than a membership update, which
later probes and full-state exchanges would repair).
An id already seen is dropped, so each member handles a notice once; the
ids seen are remembered in a bounded first-in first-out set (`memory` ids),
which covers a notice's whole life (it stops travelling a few seconds after
it was sent) unless more than `memory` others arrive in between. At most
MAX_QUEUED notices wait to be sent on; beyond that the one sent most so far
is dropped (`gossip.notice.overflow`).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import attrs

from .messages import MAX_TEXT, BadPayload
from .queue import TransmitQueue

MAX_NOTICES = 1024  # notices in one message
MAX_TARGETS = 20_000
MEMORY = 10_000  # notice ids remembered per member
MAX_QUEUED = 1_000  # notices waiting to be sent on; beyond, the most sent one goes


@attrs.frozen
class Notice:
    id: str
    channel: str
    origin: str
    payload: Any
    targets: frozenset[str] | None

    def to_wire(self) -> list[Any]:
        targets = None if self.targets is None else sorted(self.targets)
        return [self.id, self.channel, self.origin, self.payload, targets]

    def addressed_to(self, member_id: str) -> bool:
        return self.targets is None or member_id in self.targets


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
        raise BadPayload("notice", f"{what} must be a non-empty string of at most {MAX_TEXT}")
    return value


def notice_from_wire(data: Any) -> Notice:
    if not isinstance(data, list | tuple) or len(data) != 5:
        raise BadPayload("notice", "a notice is a 5-item list")
    nid, channel, origin, payload, targets = data
    if targets is not None:
        if not isinstance(targets, list) or len(targets) > MAX_TARGETS:
            raise BadPayload("notice", "targets must be a bounded list of member ids")
        targets = frozenset(_text(t, "target") for t in targets)
    return Notice(_text(nid, "id"), _text(channel, "channel"), _text(origin, "origin"), payload, targets)


def notice_limit(cluster_size: int) -> int:
    """Sends of a notice by each holder. Every member then receives about
    that many copies from random holders, and misses all of them with
    probability about e^-limit: ln(N) + ln(1000) keeps the chance that anyone
    misses a notice near 1 in 1000 without loss (about 2 in 1000 at 5%)."""
    return math.ceil(math.log(max(2, cluster_size)) + math.log(1000))


def delivery_bound(gossip_nodes: int, gossip_interval: float, n: int) -> float:
    """Seconds within which a notice reaches every live member of n (with the
    probability above): each holder sends it during its first
    ceil(limit / gossip_nodes) rounds; the epidemic needs about log2(n) + 2
    such hops to cover everyone (push with fanout gossip_nodes >= 1 at least
    doubles the holders per hop until most have it)."""
    n = max(2, n)
    per_hop = math.ceil(notice_limit(n) / gossip_nodes) * gossip_interval
    return (math.ceil(math.log2(n)) + 2) * per_hop


class Notices:
    def __init__(self, retransmit_mult: int, memory: int = MEMORY) -> None:
        self.queue = TransmitQueue(retransmit_mult, limit=notice_limit)
        self.memory = memory
        self._seen: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self.queue)

    def _remember(self, notice_id: str) -> bool:
        """True if `notice_id` is new (and now remembered)."""
        if notice_id in self._seen:
            return False
        self._seen[notice_id] = None
        while len(self._seen) > self.memory:
            self._seen.popitem(last=False)
        return True

    def _queue(self, notice: Notice, count: Callable[[str, int], None]) -> None:
        # Broadcasting faster than the rounds carry notices must not grow memory
        # without bound: the notice sent most often so far has spread furthest.
        while len(self.queue) >= MAX_QUEUED:
            self.queue.evict_most_sent()
            count("notice.overflow", 1)
        self.queue.push(notice.id, notice.to_wire())

    def publish(self, notice: Notice, count: Callable[[str, int], None]) -> None:
        """Queue a notice this node sends (it is remembered, so it comes back to nobody here)."""
        self._remember(notice.id)
        self._queue(notice, count)

    def receive(self, items: Any, count: Callable[[str, int], None]) -> list[Notice]:
        """The notices of a message seen here for the first time, queued to spread on."""
        if items is None:
            return []
        if not isinstance(items, list) or len(items) > MAX_NOTICES:
            raise BadPayload("notices", "notices must be a list of bounded length")
        fresh: list[Notice] = []
        for item in items:
            try:
                notice = notice_from_wire(item)
            except BadPayload:
                count("drop.notice", 1)
                continue
            if not self._remember(notice.id):
                count("notice.duplicate", 1)
                continue
            self._queue(notice, count)
            fresh.append(notice)
        return fresh

    def take(self, budget: int, cluster_size: int) -> list[list[Any]]:
        return self.queue.take(budget, cluster_size, at_least_one=True)
