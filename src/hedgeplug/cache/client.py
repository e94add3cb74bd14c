"""The caller side: route reads and writes to a key's owners.

Ack rule: a write is acknowledged once every owner of the key in the
newest view the writer knows has taken it (all R, not a majority). With
R=2 a majority is both anyway; for larger R, all R is what lets the cache
promise that an acknowledged write survives any R-1 owners crashing, which
is the promise its checker holds it to. The cost is that a write waits out
the failure detector when an owner has crashed and is still in the view:
it retries against the newest view until its timeout, then raises
WriteIncomplete, naming the owners that have it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio

from hedgeplug.errors import HedgeplugError

from . import messages as m
from .errors import ValueTooLarge, WriteIncomplete
from .versions import Version, version_from_wire, version_to_wire

if TYPE_CHECKING:
    from .cache import Cache

MAX_ROUNDS = 50
RETRY_PAUSE = 0.05


class Client:
    def __init__(self, cache: Cache) -> None:
        self.cache = cache

    async def ask(self, member: str, address: str | None, payload: list[Any], timeout: float) -> Any:
        """One request to one member (this node's own server without the network)."""
        cache = self.cache
        if member == cache.node_id:
            return await cache.server.dispatch(member, payload)
        if address is None:
            raise HedgeplugError(f"{member} is not in the view")
        return await cache.channel.request(address, payload, timeout)

    async def write(
        self, key: bytes, value: bytes | None, ttl: float | None, timeout: float
    ) -> tuple[Version, tuple[str, ...]]:
        """Write to every owner; returns the version written and the owners that have it."""
        cache = self.cache
        deadline = cache.now() + timeout
        version = cache.clock.tick()
        acked: set[str] = set()
        owners = cache.owners_with_addresses(key)
        last_error = ""
        for _ in range(MAX_ROUNDS):
            targets = [(o, a) for o, a in owners if o not in acked]
            if not targets:
                break
            remaining = deadline - cache.now()
            if remaining <= 0:
                break
            replies = await self._write_round(key, value, version, ttl, targets, remaining)
            redirect: list[tuple[str, str]] | None = None
            stale = False
            for member, reply in replies.items():
                if isinstance(reply, BaseException):
                    last_error = f"{member}: {reply}"
                elif not isinstance(reply, list) or not reply:
                    last_error = f"{member}: unreadable reply {reply!r}"
                elif reply[0] == "ok":
                    acked.add(member)
                elif reply[0] == "stale":
                    cache.clock.observe(version_from_wire(reply[1]))
                    stale = True
                elif reply[0] == "redirect":
                    cache.counters.add("redirects")
                    redirect = m.owners_from_wire(reply[1])
                elif reply[0] == "too-large":
                    raise ValueTooLarge(f"{member} cannot hold {key!r}: {reply[1]}")
            if stale:
                # An owner holds a newer version: write again above it, everywhere.
                version = cache.clock.tick()
                acked.clear()
            current = cache.owners_with_addresses(key)
            owners = redirect if redirect is not None and not _same(redirect, current) else current
            if all(o in acked for o, _ in owners):
                break
            if not stale and redirect is None:
                await anyio.sleep(min(RETRY_PAUSE, max(0.0, deadline - cache.now())))
        if not owners or not all(o in acked for o, _ in owners):
            cache.counters.add("write_errors")
            have = ", ".join(sorted(acked)) or "none"
            raise WriteIncomplete(
                f"write of {key!r} reached {len(acked)} of {len(owners)} owners ({have}) "
                f"within {timeout:g}s" + (f"; last error {last_error}" if last_error else "")
            )
        cache.seen.note(key, version)
        return version, tuple(o for o, _ in owners)

    async def _write_round(
        self,
        key: bytes,
        value: bytes | None,
        version: Version,
        ttl: float | None,
        targets: list[tuple[str, str]],
        remaining: float,
    ) -> dict[str, Any]:
        """One write to each target at once: {member: reply or the error}."""
        payload = [m.WRITE, key, value, version_to_wire(version), ttl, m.MODE_CLIENT]
        timeout = min(remaining, self.cache.request_timeout)
        replies: dict[str, Any] = {}

        async def one(member: str, address: str) -> None:
            try:
                replies[member] = await self.ask(member, address, payload, timeout)
            except (HedgeplugError, TimeoutError, OSError) as exc:
                replies[member] = exc

        async with anyio.create_task_group() as tg:
            for member, address in targets:
                tg.start_soon(one, member, address)
        return replies

    async def read(self, key: bytes) -> tuple[bytes | None, Version | None]:
        """(packed value, version), or (None, version) for a delete, or (None, None)."""
        cache = self.cache
        if cache.node_id in cache.placement().owners(key):
            # Served by this node itself: the store, without building a message.
            entry = cache.store.get(key)
            if entry is not None:
                cache.clock.observe(entry.version)
                return entry.value, entry.version
        candidates = cache.owners_with_addresses(key)
        local = [c for c in candidates if c[0] == cache.node_id]
        ordered = local + [c for c in candidates if c[0] != cache.node_id]
        asked = {c[0] for c in ordered}
        # While keys move, the previous view's owners may still hold what the new ones lack.
        fallback = [c for c in cache.previous_owners(key) if c[0] not in asked]
        for index, (member, address) in enumerate(ordered + fallback):
            try:
                reply = await self.ask(member, address, [m.READ, key], cache.request_timeout)
            except (HedgeplugError, TimeoutError, OSError):
                continue
            if not isinstance(reply, list) or not reply:
                continue
            if reply[0] == "hit" and len(reply) == 4 and isinstance(reply[1], bytes):
                version = version_from_wire(reply[2])
                cache.clock.observe(version)
                if index >= len(ordered):
                    cache.counters.add("fallback_reads")
                return reply[1], version
            if reply[0] == "tomb":
                version = version_from_wire(reply[1])
                cache.clock.observe(version)
                return None, version
        return None, None


def _same(a: list[tuple[str, str]], b: list[tuple[str, str]]) -> bool:
    return [x for x, _ in a] == [x for x, _ in b]
