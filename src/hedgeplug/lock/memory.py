"""In-memory lock store: a SIMULATOR PART, not a real store.

Stores are process-global, keyed by the `store` option, so every node of one
process (the simulator, a test) shares them. The store's clock is
`anyio.current_time()` (virtual under trio's MockClock), optionally running at
another rate to model drift between the store and the nodes. The simulator
switches outages on and off, adds latency, and pauses single clients (a frozen
process). Use sqlite or a real store for anything that leaves a test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import attrs

from hedgeplug.plugin import Duration, Lease, Row, StoreError, hookimpl

from .memory_log import LogBook, MemoryLogAccess


@attrs.define
class _Record:
    holder: str
    address: str
    token: int
    ttl: float
    expires: float  # store clock
    fingerprint: str = ""


@attrs.frozen
class Grant:
    """One handing-out of a lock, for the simulator's fencing check."""

    at: float
    lock: str
    holder: str
    token: int


class MemoryStore:
    """Locks and rows of one named store."""

    def __init__(self, name: str = "default") -> None:
        self.name = name
        self.down = False
        self.latency = 0.0  # per call, added to each client's own latency
        self.grants: list[Grant] = []
        self.calls = 0
        self._locks: dict[str, _Record] = {}
        self._tokens: dict[str, int] = {}
        self._fingerprints: dict[str, str] = {}  # of the newest record, kept after release
        self._rows: dict[str, Row] = {}
        self.log = LogBook()  # the fenced key/value log (memory_log.py)
        self._changed: dict[str, anyio.Event] = {}
        self._paused: dict[str, anyio.Event] = {}
        self._stalled: anyio.Event | None = None  # set while every call hangs
        self._rate = 1.0
        self._rate_since = 0.0  # real (loop) time when the rate was set
        self._rate_base = 0.0  # store time at that moment

    # ------------------------------------------------------------ clock

    def now(self) -> float:
        t = anyio.current_time()
        return self._rate_base + (t - self._rate_since) * self._rate

    def set_clock_rate(self, rate: float) -> None:
        """Make the store clock run `rate` times as fast as the nodes' clocks
        from now on (rate > 1: leases expire early as the leader sees it)."""
        if rate <= 0:
            raise ValueError("clock rate must be positive")
        self._rate_base = self.now()
        self._rate_since = anyio.current_time()
        self._rate = rate

    # ------------------------------------------------------------ fault control

    def set_down(self, down: bool = True) -> None:
        self.down = down
        self._notify_all()

    def pause_client(self, client: str) -> None:
        """Hold every call of `client` (a node id) until `resume_client`."""
        if client not in self._paused:
            self._paused[client] = anyio.Event()

    def resume_client(self, client: str) -> None:
        event = self._paused.pop(client, None)
        if event is not None:
            event.set()

    def stall(self) -> None:
        """Make every call hang (a store that accepts requests but does not answer)."""
        if self._stalled is None:
            self._stalled = anyio.Event()

    def resume(self) -> None:
        if self._stalled is not None:
            self._stalled.set()
            self._stalled = None

    # ------------------------------------------------------------ change notification

    def changed(self, lock: str) -> anyio.Event:
        event = self._changed.get(lock)
        if event is None:
            event = self._changed[lock] = anyio.Event()
        return event

    def _notify(self, lock: str) -> None:
        event = self._changed.pop(lock, None)
        if event is not None:
            event.set()

    def _notify_all(self) -> None:
        for lock in sorted(self._changed):
            self._notify(lock)

    # ------------------------------------------------------------ operations (no I/O)

    def _live(self, lock: str) -> _Record | None:
        rec = self._locks.get(lock)
        if rec is not None and self.now() >= rec.expires:
            return None
        return rec

    def _lease(self, lock: str, rec: _Record) -> Lease:
        return Lease(
            lock, rec.holder, rec.address, rec.token, rec.ttl, max(0.0, rec.expires - self.now()),
            rec.fingerprint,
        )

    def acquire(
        self, lock: str, holder: str, address: str, ttl: float, fingerprint: str = ""
    ) -> Lease | None:
        rec = self._live(lock)
        if rec is not None and rec.holder != holder:
            return None
        # Every acquisition gets a new token, even by the holder itself, so
        # fencing tokens increase across every change of holder.
        token = self._tokens.get(lock, 0) + 1
        self._tokens[lock] = token
        rec = self._locks[lock] = _Record(holder, address, token, ttl, self.now() + ttl, fingerprint)
        self._fingerprints[lock] = fingerprint
        self.grants.append(Grant(self.now(), lock, holder, token))
        self._notify(lock)
        return self._lease(lock, rec)

    def renew(self, lease: Lease, ttl: float) -> Lease | None:
        rec = self._live(lease.lock)
        if rec is None or rec.holder != lease.holder or rec.token != lease.token:
            return None
        rec.ttl = ttl
        rec.expires = self.now() + ttl
        rec.fingerprint = self._fingerprints[lease.lock] = lease.fingerprint
        return self._lease(lease.lock, rec)

    def release(self, lease: Lease) -> None:
        rec = self._locks.get(lease.lock)
        if rec is not None and rec.holder == lease.holder and rec.token == lease.token:
            del self._locks[lease.lock]
            self._notify(lease.lock)

    def expires_in(self, lock: str) -> float | None:
        """Loop-clock seconds until the live lease of `lock` expires (None if free)."""
        rec = self._live(lock)
        if rec is None:
            return None
        return (rec.expires - self.now()) / self._rate + 1e-6

    def current(self, lock: str) -> Lease | None:
        rec = self._live(lock)
        return None if rec is None else self._lease(lock, rec)

    def last_fingerprint(self, lock: str) -> str:
        return self._fingerprints.get(lock, "")

    def row_get(self, key: str) -> Row | None:
        return self._rows.get(key)

    def row_put(self, key: str, value: bytes, expect: int | None) -> Row | None:
        old = self._rows.get(key)
        version = old.version if old else 0
        if expect is not None and expect != version:
            return None
        row = self._rows[key] = Row(key, bytes(value), version + 1)
        return row

    def row_delete(self, key: str, expect: int | None) -> bool:
        old = self._rows.get(key)
        if old is None or (expect is not None and expect != old.version):
            return False
        del self._rows[key]
        return True

    def row_scan(self, prefix: str) -> list[Row]:
        return [self._rows[k] for k in sorted(self._rows) if k.startswith(prefix)]


_stores: dict[str, MemoryStore] = {}


def get_store(name: str = "default") -> MemoryStore:
    """The process-global store of that name, created on first use."""
    store = _stores.get(name)
    if store is None:
        store = _stores[name] = MemoryStore(name)
    return store


def new_store(name: str = "default") -> MemoryStore:
    """Replace the store of that name by an empty one (tests, simulator runs)."""
    store = _stores[name] = MemoryStore(name)
    return store


def reset_stores() -> None:
    _stores.clear()


# ---------------------------------------------------------------- backend


class MemoryLock(MemoryLogAccess):
    """LockBackend (with Watchable, Fingerprinted, RowStorage and FencedLog) over a
    MemoryStore (simulator part)."""

    def __init__(self, store: MemoryStore, lock: str, client: str, latency: float = 0.0) -> None:
        self.store = store
        self.lock = lock
        self.client = client
        self.latency = latency
        self._closed = False

    async def _enter(self) -> None:
        """The request's way to the store: pauses, latency, outage."""
        if self._closed:
            raise StoreError("memory lock is closed")
        store = self.store
        store.calls += 1
        paused = store._paused.get(self.client)
        if paused is not None:
            await paused.wait()
        if store._stalled is not None:
            await store._stalled.wait()
        delay = self.latency + store.latency
        # Even an instant store call yields to the scheduler, as real I/O does;
        # without it one task could loop on the lock and starve the others.
        await anyio.sleep(delay / 2)
        if store.down:
            raise StoreError(f"memory store {store.name!r} is down")

    async def _leave(self) -> None:
        delay = self.latency + self.store.latency
        if delay > 0:
            await anyio.sleep(delay / 2)

    async def acquire(
        self, holder: str, address: str, ttl: float, *, fingerprint: str = ""
    ) -> Lease | None:
        await self._enter()
        got = self.store.acquire(self.lock, holder, address, ttl, fingerprint)
        await self._leave()
        return got

    async def renew(self, lease: Lease, ttl: float) -> Lease | None:
        await self._enter()
        got = self.store.renew(lease, ttl)
        await self._leave()
        return got

    async def release(self, lease: Lease) -> None:
        await self._enter()
        self.store.release(lease)
        await self._leave()

    async def current(self) -> Lease | None:
        await self._enter()
        got = self.store.current(self.lock)
        await self._leave()
        return got

    async def last_fingerprint(self) -> str:
        await self._enter()
        got = self.store.last_fingerprint(self.lock)
        await self._leave()
        return got

    async def watch(self) -> AsyncIterator[None]:
        store = self.store
        while not self._closed:
            if store.down:
                raise StoreError(f"memory store {store.name!r} is down")
            changed = store.changed(self.lock)
            # An expiry changes the lock without any call: wake at that moment too.
            expires_in = store.expires_in(self.lock)
            with anyio.move_on_after(expires_in if expires_in is not None else float("inf")) as scope:
                await changed.wait()
            if scope.cancelled_caught and store.expires_in(self.lock) is not None:
                continue  # renewed meanwhile: nothing to tell
            yield

    async def row_get(self, key: str) -> Row | None:
        await self._enter()
        got = self.store.row_get(key)
        await self._leave()
        return got

    async def row_put(self, key: str, value: bytes, *, expect: int | None = None) -> Row | None:
        await self._enter()
        got = self.store.row_put(key, value, expect)
        await self._leave()
        return got

    async def row_delete(self, key: str, *, expect: int | None = None) -> bool:
        await self._enter()
        got = self.store.row_delete(key, expect)
        await self._leave()
        return got

    async def row_scan(self, prefix: str) -> list[Row]:
        await self._enter()
        got = self.store.row_scan(prefix)
        await self._leave()
        return got

    async def aclose(self) -> None:
        self._closed = True


@attrs.frozen
class MemoryLockOptions:
    store: str = attrs.field(default="default", metadata={"help": "name of the in-process store"})
    latency: Duration = attrs.field(
        default=Duration(0.0), metadata={"help": "round-trip time of each call"}
    )


def make(options: MemoryLockOptions, ctx: Any) -> MemoryLock:
    return MemoryLock(get_store(options.store), ctx.lock_name, ctx.id, options.latency)


@hookimpl
def hedgeplug_register_locks(register: Any) -> None:
    register("memory", make, MemoryLockOptions)
