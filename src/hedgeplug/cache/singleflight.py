"""get_or_load: run the loader once across the cluster for a missing key.

Two levels, as in groupcache's single flight:

- In one process, concurrent callers for the same key share one attempt.
- Across the cluster the key's primary owner arbitrates: the first caller to
  ask gets a lease (a token, valid `lease_ttl` seconds) and runs its loader,
  then writes the value to the owners as any set does; callers that ask
  while the lease is held wait at the primary until that write lands (the
  write wakes them with the value) or the lease is released or expires, and
  one of them takes over.

The loader is the caller's own function, so it runs where the lease went. If
the primary changes while a load is in flight (a view change), a second
caller may be granted a lease by the new primary: the loader then runs
twice, and versions make the later write win. If the primary cannot be
reached, the caller runs its loader itself rather than fail.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
import attrs

from hedgeplug.errors import HedgeplugError

from . import messages as m
from .versions import version_from_wire

if TYPE_CHECKING:
    from .cache import Cache

Loader = Callable[[], Any] | Callable[[], Awaitable[Any]]


@attrs.define
class _Lease:
    token: int
    holder: str
    expires: float
    done: anyio.Event = attrs.field(factory=anyio.Event)


@attrs.define
class _Flight:
    done: anyio.Event = attrs.field(factory=anyio.Event)
    value: Any = None
    error: BaseException | None = None


class Flights:
    def __init__(self, cache: Cache, lease_ttl: float) -> None:
        self.cache = cache
        self.lease_ttl = lease_ttl
        self._leases: dict[bytes, _Lease] = {}
        self._local: dict[bytes, _Flight] = {}
        self._tokens = 0

    # ------------------------------------------------------------ primary side

    async def arbitrate(self, sender: str, key: bytes, wait: float) -> list[Any]:
        cache = self.cache
        hit = cache.server.read(key)
        if hit[0] == "hit":
            return hit
        placement = cache.placement()
        owners = placement.owners(key)
        if not owners or owners[0] != cache.node_id:
            cache.counters.add("redirects")
            return ["redirect", m.owners_to_wire(cache.owners_with_addresses(key))]
        lease = self._leases.get(key)
        if lease is None or lease.expires <= cache.now():
            return self._grant(sender, key)
        with anyio.move_on_after(min(wait, max(0.0, lease.expires - cache.now()))):
            await lease.done.wait()
        hit = cache.server.read(key)
        if hit[0] == "hit":
            return hit
        current = self._leases.get(key)
        if current is None or current.expires <= cache.now():
            return self._grant(sender, key)
        return ["wait"]

    def _grant(self, sender: str, key: bytes) -> list[Any]:
        self._tokens += 1
        self._leases[key] = _Lease(self._tokens, sender, self.cache.now() + self.lease_ttl)
        return ["lease", self._tokens]

    def written(self, key: bytes) -> None:
        lease = self._leases.pop(key, None)
        if lease is not None:
            lease.done.set()

    def release(self, key: bytes, token: int) -> None:
        lease = self._leases.get(key)
        if lease is not None and lease.token == token:
            del self._leases[key]
            lease.done.set()

    # ------------------------------------------------------------ caller side

    async def load(self, key: bytes, loader: Loader, ttl: float | None, timeout: float) -> Any:
        """The value for a key the caller found missing."""
        flight = self._local.get(key)
        if flight is not None:
            self.cache.counters.add("load_waits")
            await flight.done.wait()
            if flight.error is not None:
                raise flight.error
            return flight.value
        flight = self._local[key] = _Flight()
        try:
            flight.value = await self._load_cluster(key, loader, ttl, timeout)
            return flight.value
        except Exception as exc:
            flight.error = exc
            raise
        finally:
            del self._local[key]
            flight.done.set()

    async def _load_cluster(self, key: bytes, loader: Loader, ttl: float | None, timeout: float) -> Any:
        cache = self.cache
        deadline = cache.now() + timeout
        waited = False
        while cache.now() < deadline:
            owners = cache.owners_with_addresses(key)
            if not owners:
                break
            primary, address = owners[0]
            wait = max(0.0, min(self.lease_ttl, deadline - cache.now()) - 0.05)
            try:
                reply = await cache.client.ask(
                    primary, address, [m.LEASE, key, wait], wait + cache.request_timeout
                )
            except (HedgeplugError, TimeoutError, OSError):
                break  # the arbiter is unreachable: load here rather than fail
            if not isinstance(reply, list) or not reply:
                break
            if reply[0] == "hit":
                cache.clock.observe(version_from_wire(reply[2]))
                return cache.unpack(reply[1])
            if reply[0] == "lease":
                return await self._run(key, loader, ttl, deadline - cache.now(), (primary, address, reply[1]))
            if reply[0] == "wait" and not waited:
                waited = True
                cache.counters.add("load_waits")
            if reply[0] == "redirect":
                await anyio.sleep(0.05)  # our view is behind the primary's; let it catch up
        return await self._run(key, loader, ttl, max(0.1, deadline - cache.now()), None)

    async def _run(
        self, key: bytes, loader: Loader, ttl: float | None, timeout: float, lease: tuple[str, str, int] | None
    ) -> Any:
        cache = self.cache
        cache.counters.add("loads")
        try:
            value = loader()
            if inspect.isawaitable(value):
                value = await value
        except BaseException:
            if lease is not None:
                primary, address, token = lease
                with anyio.CancelScope(shield=True), anyio.move_on_after(cache.request_timeout):
                    try:
                        await cache.client.ask(primary, address, [m.RELEASE, key, token], cache.request_timeout)
                    except (HedgeplugError, TimeoutError, OSError):
                        pass  # the lease expires by itself
            raise
        await cache.set(key, value, ttl=ttl, timeout=max(0.1, timeout))
        return value
