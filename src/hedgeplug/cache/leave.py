"""A graceful leave: hand this node's keys over before it goes.

The leaver pushes each key it owns to the R + LEAVE_SPARE members that rank
highest for it in the view without itself (its co-owners and replacement
first). The spare copies matter when many members go at once (a scale-down,
or crashes at the same moment): the view still lists members that are
leaving or dead, and one push to "the replacement" may land on one of them.
A target that refuses (it is leaving too) or does not answer is left out
and, for keys not yet on R members, the next members in rank are tried, twice
as many spares each round, in up to LEAVE_ROUNDS rounds within the time
given. Extra copies on members that do not own the key flow back
to its owners when the view changes and are then dropped (see handoff.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio

from hedgeplug.errors import HedgeplugError

from . import messages as m
from .placement import Placement

if TYPE_CHECKING:
    from .cache import Cache

LEAVE_SPARE = 2
LEAVE_ROUNDS = 6
CONCURRENCY = 32


def leave_candidates(
    placement: Placement, key: bytes, excluded: frozenset[str], widen: int = 0
) -> tuple[str, ...]:
    """Who may take a leaver's copy of `key`: R + LEAVE_SPARE members, and
    twice as many spares for each round that found candidates gone."""
    remaining = Placement(placement.ids - excluded, placement.replicas)
    return remaining.ranked(key, placement.replicas + LEAVE_SPARE * (1 << widen))


async def leave(cache: Cache, budget: float) -> int:
    """Push every owned key to R members that take it; returns how many keys
    could not be placed on R members within `budget` seconds."""
    deadline = cache.now() + budget
    me = cache.node_id
    placement = cache.placement()
    wanted = {k: placement.replicas for k in cache.store.keys() if me in placement.owners(k)}
    # The receiver accepts for the widest round: it cannot know which round a push belongs to.
    delivered: dict[bytes, set[str]] = {k: set() for k in wanted}
    excluded = {me}
    for round_ in range(LEAVE_ROUNDS):
        left = deadline - cache.now()
        if left <= 0 or not wanted:
            break
        plan: dict[str, list[bytes]] = {}
        for key in wanted:
            for target in leave_candidates(placement, key, frozenset(excluded), widen=round_):
                if target not in delivered[key]:
                    plan.setdefault(target, []).append(key)
        timeout = max(0.05, min(cache.request_timeout, left / (LEAVE_ROUNDS - round_)))
        failed: set[str] = set()
        with anyio.move_on_after(max(0.0, deadline - cache.now())):
            failed = await _round(cache, plan, delivered, timeout, sorted(excluded))
        excluded |= failed
        wanted = {k: n for k, n in wanted.items() if len(delivered[k]) < n}
    return len(wanted)


async def _round(
    cache: Cache,
    plan: dict[str, list[bytes]],
    delivered: dict[bytes, set[str]],
    timeout: float,
    excluded: list[str],
) -> set[str]:
    """Push to every target at once; returns the targets that took nothing."""
    failed: set[str] = set()
    limiter = anyio.CapacityLimiter(CONCURRENCY)

    async def to_target(target: str, keys: list[bytes]) -> None:
        async with limiter:
            taken = await _push(cache, target, keys, timeout, excluded)
        if taken is None:
            failed.add(target)
            return
        for key in taken:
            delivered[key].add(target)

    async with anyio.create_task_group() as tg:
        for target in sorted(plan):
            tg.start_soon(to_target, target, plan[target])
    return failed


async def _push(
    cache: Cache, target: str, keys: list[bytes], timeout: float, excluded: list[str]
) -> list[bytes] | None:
    """Keys `target` took, or None if it refused all or could not be reached."""
    member = cache.node.view.get(target)
    if member is None:
        return None
    limit = min(256 * 1024, cache.frame_limit // 2)
    taken: list[bytes] = []
    batch: list[list[Any]] = []
    batch_keys: list[bytes] = []
    size = 0
    now = cache.now()

    async def flush() -> bool:
        try:
            reply = await cache.channel.request(
                member.address, [m.PUSH, m.MODE_LEAVE, batch, excluded], timeout
            )
        except (HedgeplugError, TimeoutError, OSError):
            return False
        if not isinstance(reply, list) or reply[:1] != ["ok"] or not isinstance(reply[2], list):
            return False
        refused = set(reply[2])
        taken.extend(k for i, k in enumerate(batch_keys) if i not in refused)
        cache.counters.add("handoff_keys_out", len(batch_keys) - len(refused))
        cache.counters.add("handoff_bytes_out", size)
        return len(refused) < len(batch_keys)

    for key in keys:
        entry = cache.store.get(key, touch=False)
        if entry is None:
            continue
        entry_size = m.entry_wire_size(key, entry.value)
        if batch and size + entry_size > limit:
            if not await flush():
                return taken or None
            batch, batch_keys, size = [], [], 0
        batch.append(m.entry_to_wire(key, entry.value, entry.version, entry.ttl_left(now)))
        batch_keys.append(key)
        size += entry_size
    if batch and not await flush():
        return taken or None
    return taken
