"""The public cache object: one named, partitioned cache on one node."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio

from hedgeplug.events import MembersChanged
from hedgeplug.options import parse_size

from .antientropy import AntiEntropy
from .batch import read_many
from .client import Client
from .counters import Counters
from .errors import CacheError, ValueTooLarge
from .handoff import Handoff
from .leave import leave
from .placement import Placement, key_bytes
from .server import Server
from .singleflight import Flights, Loader
from .store import ENTRY_OVERHEAD, Store
from .values import check_size, frame_limit, pack, unpack
from .versions import LamportClock, Version

log = logging.getLogger("hedgeplug.cache")

CHANNEL_PREFIX = "cache:"
EXACT_STATS = 10_000  # up to this many entries, stats() counts owned keys exactly
HISTORY = 32  # previous views whose owners a read may fall back to
MAX_FALLBACK = 6  # previous owners one read asks at most
_MISSING = object()


class SeenVersions:
    """The newest version this reader has seen per key (the last `limit` keys),
    so it never returns a value older than one it already returned."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: OrderedDict[bytes, Version] = OrderedDict()

    def note(self, key: bytes, version: Version) -> None:
        old = self._seen.get(key)
        if old is None or version > old:
            self._seen[key] = version
        self._seen.move_to_end(key)
        while len(self._seen) > self.limit:
            self._seen.popitem(last=False)

    def older(self, key: bytes, version: Version) -> bool:
        seen = self._seen.get(key)
        return seen is not None and version < seen


def _check_ttl(ttl: float | None) -> float | None:
    if ttl is not None and (not isinstance(ttl, int | float) or isinstance(ttl, bool) or ttl <= 0):
        raise CacheError(f"ttl must be a positive number of seconds or None, got {ttl!r}")
    return ttl


def _size(value: int | str, what: str) -> int:
    try:
        return parse_size(value)
    except (ValueError, TypeError) as exc:
        raise CacheError(f"{what}: {exc}") from None


class Cache:
    """A cache whose keys are spread over the live members of the node's view.

    Create it with `open_cache(node, name, ...)` (or the node's `cache`
    method); run `run()` in a task and call `close()` before the node leaves.
    """

    def __init__(
        self,
        node: Any,
        name: str,
        *,
        max_memory: int | str,
        replicas: int = 2,
        ttl: float | None = None,
        request_timeout: float = 2.0,
        write_timeout: float = 5.0,
        handoff_rate: int | str = "8MiB",
        handoff_grace: float = 5.0,
        repair_interval: float = 5.0,
        lease_ttl: float = 10.0,
        anti_entropy_interval: float = 10.0,
        tombstone_ttl: float = 60.0,
        session_keys: int = 10_000,
    ) -> None:
        if not isinstance(name, str) or not name or len(name) > 64:
            raise CacheError("a cache name is a non-empty string of at most 64 characters")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or not 1 <= replicas <= 16:
            raise CacheError(f"replicas must be a whole number from 1 to 16, got {replicas!r}")
        if ttl is not None and (not isinstance(ttl, int | float) or ttl <= 0):
            raise CacheError(f"ttl must be a positive number of seconds or None, got {ttl!r}")
        self.node = node
        self.name = name
        self.node_id: str = node.id
        self.replicas = replicas
        self.ttl = ttl
        self.request_timeout = request_timeout
        self.write_timeout = write_timeout
        # How long after a view change readers still ask the previous owners.
        self.fallback_window = max(30.0, 4 * handoff_grace)
        self.counters = Counters()
        self.max_memory = _size(max_memory, "max_memory")
        if self.max_memory < 4096:
            raise CacheError(f"max_memory must be at least 4KiB, got {self.max_memory} bytes")
        self.store = Store(self.max_memory, anyio.current_time, self.counters, tombstone_ttl)
        self.clock = LamportClock(self.node_id)
        self.seen = SeenVersions(session_keys)
        self.frame_limit = frame_limit(node)
        self._placement: Placement | None = None
        self._placement_view: Any = None  # the view self._placement was made for
        # Placements of recent views, newest first: readers fall back to their
        # owners while keys move (several views may pass during one hand-off).
        self._history: list[tuple[float, Placement]] = []
        self.server = Server(self)
        self.client = Client(self)
        self.flights = Flights(self, lease_ttl)
        self.random = node.ctx.random
        self.antientropy = AntiEntropy(self, anti_entropy_interval)
        self.handoff = Handoff(self, _size(handoff_rate, "handoff_rate"), handoff_grace, repair_interval)
        self.closed = False
        self.leaving = False  # closing: hands keys off, takes no new ones
        self.channel = node.channel(CHANNEL_PREFIX + name)
        self.channel.handle(self.server.handle)
        node.on_members_changed(self._on_members)

    # ------------------------------------------------------------ placement

    def now(self) -> float:
        return anyio.current_time()

    def placement(self) -> Placement:
        view = self.node.view
        if view is self._placement_view and self._placement is not None:
            return self._placement  # the hot path: views are immutable, replaced on change
        self._placement_view = view
        ids = view.ids | {self.node_id}
        if self._placement is None or self._placement.ids != ids:
            if self._placement is not None:
                now = self.now()
                self._history.insert(0, (now, self._placement))
                self._history = [
                    (t, p) for t, p in self._history[:HISTORY] if now - t <= self.fallback_window
                ]
            self._placement = Placement(ids, self.replicas)
        return self._placement

    def owners_with_addresses(self, key: bytes, leaving_ok: bool = True) -> list[tuple[str, str]]:
        """Owners of `key` in the newest view (a leaving node names those without itself)."""
        placement = self.placement()
        if self.leaving and not leaving_ok:
            placement = placement.without(self.node_id)
        return self.with_addresses(placement.owners(key))

    def previous_owners(self, key: bytes) -> list[tuple[str, str]]:
        """Owners of `key` in recent views, newest first, without repeats."""
        self.placement()
        if not self._history:
            return []
        now = self.now()
        if now - self._history[0][0] > self.fallback_window:
            self._history.clear()  # all past the window: reads stop asking
            return []
        seen: dict[str, None] = {}
        for t, placement in self._history:
            if now - t > self.fallback_window:
                break
            for owner in placement.owners(key):
                seen.setdefault(owner, None)
        # The oldest views matter most after many quick changes (a big scale-up):
        # that is where the keys were before they started to move.
        owners = list(seen)
        if len(owners) > MAX_FALLBACK:
            owners = owners[: MAX_FALLBACK // 2] + owners[-(MAX_FALLBACK - MAX_FALLBACK // 2) :]
        return self.with_addresses(owners)

    def with_addresses(self, owners: Iterable[str]) -> list[tuple[str, str]]:
        view = self.node.view
        out = []
        for owner in owners:
            if owner == self.node_id:
                out.append((owner, self.node.address))
                continue
            member = view.get(owner)
            if member is not None:
                out.append((owner, member.address))
        return out

    def _on_members(self, event: MembersChanged) -> None:
        if not self.closed:
            self.placement()
            self.handoff.view_changed()

    # ------------------------------------------------------------ life cycle

    async def run(self) -> None:
        """The background work: hand-off after view changes, expiry sweeps,
        anti-entropy between co-owners."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.handoff.run)
            tg.start_soon(self.antientropy.run)

    async def close(self, timeout: float | None = None) -> None:
        """Hand this node's keys to the owners that replace it (bounded by
        `timeout`, default the node's stop_timeout), then stop answering."""
        if self.closed:
            return
        if timeout is None:
            timeout = float(getattr(getattr(self.node.config, "node", None), "stop_timeout", 5.0))
        self.leaving = True
        with anyio.move_on_after(timeout):
            unplaced = await leave(self, timeout)
            if unplaced:
                log.warning("cache %r: %d keys found fewer than %d new holders while leaving", self.name, unplaced, self.replicas)
        self.closed = True

    def abandon(self) -> None:
        """Stop at once without handing off (a crash, for tests and the simulator)."""
        self.closed = True

    # ------------------------------------------------------------ API

    def unpack(self, packed: bytes) -> Any:
        return unpack(packed)

    def _check_open(self) -> None:
        if self.closed:
            raise CacheError(f"cache {self.name!r} is closed")

    async def get(self, key: str | bytes, default: Any = None) -> Any:
        """The value, or `default` on a miss."""
        value, _version = await self.get_versioned(key, default)
        return value

    async def get_versioned(self, key: str | bytes, default: Any = None) -> tuple[Any, Version | None]:
        """(value, its version), or (default, None) on a miss; a version older
        than one this reader has seen for the key is answered as a miss."""
        self._check_open()
        k = key_bytes(key)
        packed, version = await self.client.read(k)
        return self._answer(k, packed, version, default)

    def _answer(self, k: bytes, packed: bytes | None, version: Version | None, default: Any) -> tuple[Any, Version | None]:
        if version is not None and self.seen.older(k, version):
            self.counters.add("stale_hidden")
            packed, version = None, None
        if version is not None:
            self.seen.note(k, version)
        if packed is None:
            self.counters.add("misses")
            return default, None
        self.counters.add("hits")
        return unpack(packed), version

    async def set(self, key: str | bytes, value: Any, *, ttl: float | None = _MISSING, timeout: float | None = None) -> None:  # type: ignore[assignment]
        """Store `value` on every owner of `key`; returns once all have it."""
        await self.set_versioned(key, value, ttl=ttl, timeout=timeout)

    async def set_versioned(self, key: str | bytes, value: Any, *, ttl: float | None = _MISSING, timeout: float | None = None) -> Version:  # type: ignore[assignment]
        """`set`, returning the version written."""
        self._check_open()
        k = key_bytes(key)
        packed = pack(value)
        self._check_entry(k, packed)
        effective = self.ttl if ttl is _MISSING else _check_ttl(ttl)
        self.counters.add("sets")
        version, _owners = await self.client.write(k, packed, effective, timeout or self.write_timeout)
        return version

    async def delete(self, key: str | bytes, *, timeout: float | None = None) -> None:
        """Remove `key` from every owner (a tombstone with a newer version)."""
        self._check_open()
        k = key_bytes(key)
        self.counters.add("deletes")
        await self.client.write(k, None, None, timeout or self.write_timeout)

    async def get_many(self, keys: Iterable[str | bytes], default: Any = None) -> dict[Any, Any]:
        """{key: value} for the keys given, `default` for misses: one message
        per owner for the keys it holds, not one per key."""
        self._check_open()
        keys = list(keys)
        wanted = [key_bytes(key) for key in keys]
        found = await read_many(self, wanted)
        out: dict[Any, Any] = {}
        for key, k in zip(keys, wanted, strict=True):
            out[key] = self._answer(k, *found[k], default)[0]
        return out

    async def set_many(self, items: Mapping[Any, Any], *, ttl: float | None = _MISSING) -> None:  # type: ignore[assignment]
        """Store several values; raises the first failure after trying them all."""
        for key, value in items.items():  # check every size before sending any
            self._check_entry(key_bytes(key), pack(value))
        limiter = anyio.CapacityLimiter(32)
        errors: list[Exception] = []

        async def one(key: Any, value: Any) -> None:
            async with limiter:
                try:
                    await self.set(key, value, ttl=ttl)
                except CacheError as exc:
                    errors.append(exc)

        async with anyio.create_task_group() as tg:
            for key, value in items.items():
                tg.start_soon(one, key, value)
        if errors:
            raise errors[0]

    async def get_or_load(
        self, key: str | bytes, loader: Loader, *, ttl: float | None = _MISSING, timeout: float = 30.0  # type: ignore[assignment]
    ) -> Any:
        """The cached value, or the loader's result: the loader runs once across
        the cluster while other callers for the same key wait for it."""
        value = await self.get(key, _MISSING)
        if value is not _MISSING:
            return value
        effective = self.ttl if ttl is _MISSING else _check_ttl(ttl)
        return await self.flights.load(key_bytes(key), loader, effective, timeout)

    def _check_entry(self, key: bytes, packed: bytes) -> None:
        check_size(key, packed, self.frame_limit)
        if len(key) + len(packed) + ENTRY_OVERHEAD > self.max_memory:
            raise ValueTooLarge(
                f"key and value take {len(key) + len(packed)} bytes packed, more than the "
                f"cache's whole max_memory of {self.max_memory} bytes"
            )

    def stats(self) -> dict[str, Any]:
        """Counters and sizes, as `status --json` and `hedgeplug cache stats` show them."""
        placement = self.placement()
        if len(self.store) <= EXACT_STATS:
            owned = sum(1 for key in self.store.keys() if self.node_id in placement.owners(key))
        else:
            owned = self.handoff.owned_keys  # counting costs a placement per key: the last pass's

        return self.counters.snapshot(
            name=self.name,
            keys=self.store.values,
            owned_keys=owned,
            entries=len(self.store),
            bytes=self.store.used,
            max_memory=self.max_memory,
            replicas=self.replicas,
            members=len(placement.ids),
        )


@asynccontextmanager
async def open_cache(node: Any, name: str, **options: Any) -> AsyncIterator[Cache]:
    """A named cache on `node` for the length of the block; on exit it hands
    its keys to their new owners (bounded by the node's stop_timeout).

        async with open_cache(node, "sessions", max_memory="64MiB") as cache:
            await cache.set("user:1", b"...")
    """
    cache = Cache(node, name, **options)
    async with anyio.create_task_group() as tg:
        tg.start_soon(cache.run)
        try:
            yield cache
        finally:
            with anyio.CancelScope(shield=True):
                await cache.close()
            tg.cancel_scope.cancel()
