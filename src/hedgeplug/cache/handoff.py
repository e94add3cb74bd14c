"""Moving keys when the view changes.

After every view change each node walks the keys it holds and compares the
owners in the view it last handed off under ("old") with the owners now
("new"). For a key, the first old owner still alive is responsible: it
pushes the key to the new owners that were not old owners (a member that
joined and now ranks among the top R, or the replacement of a crashed or
departed owner). When no old owner survives, every holder pushes to all new
owners (duplicates are harmless: versions make them no-ops). Pushes go in
batches below the frame limit, paced by a token bucket of `handoff_rate`
bytes per second per node, so a scale-up by many pods moves data at a
bounded rate instead of stalling every existing pod. A push that fails
(timeout, or the receiver does not own the key in its view yet) is retried
every `repair_interval` for as long as the target still owns the key.

A node keeps a key it no longer owns for `handoff_grace` seconds after the
change (readers fall back to it while the new owners fill up), then drops it
once every current owner has confirmed it holds the key (pushing it to those
that lack it first).

Before a node takes a client write for a key it owns but does not hold, it
asks the key's owners of recent views that are not owners now (and, on a
node that has just started, whose views do not say where keys were before,
the CATCH_UP_RANKS members ranking next) for their copy (`catch_up`): versions come from per-node Lamport clocks, and a joiner's
clock runs behind, so its write could carry a lower version than the value
still on its way here by hand-off, which would then replace an acknowledged
write. Holding the newest copy first, the owner refuses such a write as
stale and the writer writes again above it.

A node leaving gracefully pushes its keys first (see leave.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio

from hedgeplug.errors import HedgeplugError

from . import messages as m
from .errors import CacheError
from .placement import Placement
from .versions import Version, version_from_wire

if TYPE_CHECKING:
    from .cache import Cache

DEBOUNCE = 0.1  # views often change in bursts (many joins at once): settle first
CONCURRENT_TARGETS = 4
MAX_BATCH = 256 * 1024
YIELD_EVERY = 256
CATCH_UP_TIMEOUT = 1.0  # at most this long a write waits for a previous owner's copy
CATCH_UP_RANKS = 4  # members ranking below the owners that a new owner also asks


class TokenBucket:
    """`rate` units per second, bursts up to one second's worth."""

    def __init__(self, rate: int) -> None:
        self.rate = max(1, rate)
        self._tokens = float(self.rate)
        self._at = anyio.current_time()

    async def take(self, amount: int) -> None:
        amount = min(amount, self.rate)
        while True:
            now = anyio.current_time()
            self._tokens = min(float(self.rate), self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= amount:
                self._tokens -= amount
                return
            await anyio.sleep((amount - self._tokens) / self.rate)


class Handoff:
    def __init__(self, cache: Cache, rate: int, grace: float, repair_interval: float) -> None:
        self.cache = cache
        self.rate = rate
        self.grace = grace
        self.repair_interval = repair_interval
        self._changed = anyio.Event()
        self._last_ids: frozenset[str] = cache.placement().ids
        self._pending: dict[bytes, set[str]] = {}
        self._drop_at: dict[bytes, float] = {}
        self._bucket: TokenBucket | None = None
        self.passes = 0
        self.owned_keys = 0  # as of the last pass
        self.started = anyio.current_time()

    def view_changed(self) -> None:
        self._changed.set()

    @property
    def busy(self) -> bool:
        """Pushes to retry or keys waiting to be dropped."""
        return bool(self._pending or self._drop_at)

    async def run(self) -> None:
        self._bucket = TokenBucket(self.rate)
        while True:
            wait = self.repair_interval
            if self._drop_at and not self._pending:
                wait = min(wait, max(0.0, min(self._drop_at.values()) - self.cache.now()))
            with anyio.move_on_after(wait):
                await self._changed.wait()
            self.cache.store.sweep()
            if not self._changed.is_set() and not self.busy:
                continue
            if self._changed.is_set():
                await anyio.sleep(DEBOUNCE)
            self._changed = anyio.Event()
            await self.rebalance()

    async def catch_up(self, key: bytes) -> None:
        """Take the newest copy of `key` held by its owners of recent views
        that are not owners now, if this node owns the key but holds nothing
        for it (see the module); a no-op for keys that did not move."""
        cache = self.cache
        if cache.leaving or cache.store.version_of(key) is not None:
            return
        current = cache.placement().owners(key)
        if cache.node_id not in current:
            return  # the write is redirected anyway
        previous = cache.previous_owners(key)
        if not previous:
            return  # no view change within the fallback window: nothing is moving
        sources = [(o, a) for o, a in previous if o not in current]
        if cache.now() - self.started <= cache.fallback_window:
            # This node has just started: its own views do not reach back to
            # where keys were before, and the members ranking next are the
            # likeliest previous owners.
            next_ranked = cache.placement().ranked(key, len(current) + CATCH_UP_RANKS)
            sources += [
                pair for pair in cache.with_addresses(next_ranked[len(current):])
                if pair not in sources
            ]
        if not sources:
            return
        found: list[tuple[Version, bytes | None, float | None]] = []

        async def ask(address: str) -> None:
            try:
                reply = await cache.channel.request(address, [m.READ, key], timeout)
                if reply[0] == "hit":
                    found.append((version_from_wire(reply[2]), reply[1], reply[3]))
                elif reply[0] == "tomb":
                    found.append((version_from_wire(reply[1]), None, None))
            except (HedgeplugError, TimeoutError, OSError, ValueError, TypeError, IndexError):
                pass  # gone or slow: the hand-off and anti-entropy still repair later

        timeout = min(cache.request_timeout, CATCH_UP_TIMEOUT)
        with anyio.move_on_after(timeout):
            async with anyio.create_task_group() as tg:
                for _owner, address in sources:
                    tg.start_soon(ask, address)
        if not found:
            return
        version, value, ttl = max(found, key=lambda f: f[0])
        if not isinstance(value, bytes | None) or not isinstance(ttl, int | float | None):
            return
        cache.clock.observe(version)
        try:
            refused = cache.store.apply(key, value, version, ttl)
        except CacheError:
            return  # larger than this node's max_memory: the write says so itself
        if refused is None:
            cache.counters.add("pulled_before_write")

    # ------------------------------------------------------------ one pass

    async def rebalance(self) -> None:
        cache = self.cache
        me = cache.node_id
        placement = cache.placement()
        old = Placement(self._last_ids, cache.replicas)
        plan: dict[str, list[bytes]] = {}
        retry, self._pending = self._pending, {}
        now = cache.now()
        owned = 0
        for index, key in enumerate(cache.store.keys()):
            if index % YIELD_EVERY == YIELD_EVERY - 1:
                await anyio.lowlevel.checkpoint()  # a large store must not stall the node
            new_owners = placement.owners(key)
            targets = {t for t in retry.get(key, ()) if t in new_owners and t != me}
            if old.ids != placement.ids:
                old_owners = old.owners(key)
                survivors = [o for o in old_owners if o in placement.ids]
                if not survivors:
                    targets.update(o for o in new_owners if o != me)
                elif survivors[0] == me:
                    targets.update(o for o in new_owners if o not in old_owners and o != me)
            for target in targets:
                plan.setdefault(target, []).append(key)
            if me in new_owners:
                owned += 1
                self._drop_at.pop(key, None)
            else:
                self._drop_at.setdefault(key, now + self.grace)
        self._last_ids = placement.ids
        self.owned_keys = owned
        self.passes += 1
        await self._send_plan(plan, m.MODE_HANDOFF, paced=True)
        await self._drop_released()

    async def _drop_released(self) -> None:
        """Let go of keys this node no longer owns, once their grace is over
        and every current owner has confirmed it holds them (at this version
        or newer): a copy is never dropped on the belief that someone else
        pushed it, since nodes that saw different views may each believe so."""
        cache = self.cache
        now = cache.now()
        placement = cache.placement()
        due: dict[str, list[bytes]] = {}
        for key, when in list(self._drop_at.items()):
            owners = placement.owners(key)
            if cache.node_id in owners:
                del self._drop_at[key]
            elif when <= now and key not in self._pending:
                for owner in owners:
                    due.setdefault(owner, []).append(key)
        unconfirmed: set[bytes] = set()
        for owner in sorted(due):
            unconfirmed.update(await self._confirm(owner, due[owner]))
        for keys in due.values():
            for key in keys:
                if key in unconfirmed or key not in self._drop_at:
                    continue
                del self._drop_at[key]
                if cache.store.drop(key):
                    cache.counters.add("dropped_not_owner")
        for key in unconfirmed:
            if key in self._drop_at:
                self._drop_at[key] = now + self.grace

    async def _confirm(self, owner: str, keys: list[bytes]) -> list[bytes]:
        """Make sure `owner` holds `keys`; returns those it does not (yet)."""
        cache = self.cache
        member = cache.node.view.get(owner)
        if member is None:
            return keys
        present = [(k, e) for k in keys if (e := cache.store.get(k, touch=False)) is not None]
        try:
            reply = await cache.channel.request(
                member.address,
                [m.HAVE, [m.key_version_to_wire(k, e.version) for k, e in present]],
                cache.request_timeout,
            )
            lacking = [present[i][0] for i in reply[1] if isinstance(i, int) and 0 <= i < len(present)]
        except (HedgeplugError, TimeoutError, OSError, TypeError, IndexError):
            return keys
        if not lacking:
            return []
        before = dict(self._pending)
        self._pending = {}
        await self._send_keys(owner, lacking, m.MODE_HANDOFF, paced=True)
        refused = set(self._pending)
        self._pending = {**before, **self._pending}
        return [k for k in lacking if k in refused]

    # ------------------------------------------------------------ sending

    async def _send_plan(
        self, plan: dict[str, list[bytes]], mode: str, paced: bool, excluded: list[str] | None = None
    ) -> None:
        if not plan:
            return
        limiter = anyio.CapacityLimiter(CONCURRENT_TARGETS)

        async def to_target(target: str, keys: list[bytes]) -> None:
            async with limiter:
                await self._send_keys(target, keys, mode, paced, excluded)

        async with anyio.create_task_group() as tg:
            for target in sorted(plan):
                tg.start_soon(to_target, target, plan[target])

    async def _send_keys(
        self, target: str, keys: list[bytes], mode: str, paced: bool, excluded: list[str] | None = None
    ) -> None:
        cache = self.cache
        limit = min(MAX_BATCH, cache.frame_limit // 2)
        batch: list[list[Any]] = []
        batch_keys: list[bytes] = []
        size = 0
        for key in keys:
            entry = cache.store.get(key, touch=False)
            if entry is None:
                continue
            entry_size = m.entry_wire_size(key, entry.value)
            if batch and size + entry_size > limit:
                await self._send_batch(target, batch, batch_keys, size, mode, paced, excluded)
                batch, batch_keys, size = [], [], 0
            batch.append(m.entry_to_wire(key, entry.value, entry.version, entry.ttl_left(cache.now())))
            batch_keys.append(key)
            size += entry_size
        if batch:
            await self._send_batch(target, batch, batch_keys, size, mode, paced, excluded)

    async def _send_batch(
        self,
        target: str,
        batch: list[list[Any]],
        keys: list[bytes],
        size: int,
        mode: str,
        paced: bool,
        excluded: list[str] | None,
    ) -> None:
        cache = self.cache
        if paced and self._bucket is not None:
            await self._bucket.take(size)
        member = cache.node.view.get(target)
        try:
            if member is None:
                raise HedgeplugError(f"{target} left the view")
            reply = await cache.channel.request(
                member.address, [m.PUSH, mode, batch, excluded or []], cache.request_timeout
            )
            if not isinstance(reply, list) or reply[:1] != ["ok"]:
                raise HedgeplugError(f"unexpected push reply {reply!r}")
        except (HedgeplugError, TimeoutError, OSError):
            for key in keys:
                self._pending.setdefault(key, set()).add(target)
            return
        refused = {i for i in reply[2] if isinstance(i, int)} if isinstance(reply[2], list) else set()
        cache.counters.add("handoff_keys_out", len(keys) - len(refused))
        cache.counters.add("handoff_bytes_out", size)
        for index in sorted(refused):
            # The target does not own it in its view (yet): try again later.
            if 0 <= index < len(keys):
                self._pending.setdefault(keys[index], set()).add(target)
