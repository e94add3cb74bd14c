"""The lease loop every node runs over its lock backend.

Safety rule: a node counts itself leader only until
``t_sent + ttl * (1 - margin)``, where t_sent is its own clock reading when it
SENT the renewal (or acquisition) that succeeded. The store starts its ttl
no earlier than it received the request, so the node's belief always ends
before the store could give the lease to anyone else, whatever pauses or
outages happen in between. A renewal that fails, errs, or has not answered
by that instant ends the leadership.

Store trouble: a contender or follower whose store call errs (or does not
answer within the retry period) waits an exponentially growing, jittered
delay before its next call (`Backoff`), up to [lock] backoff_max (default
the ttl); so does a node whose renewal failed, before it contends again. A
leader's renewal cadence is never stretched: back-off only spaces out calls
of nodes that do not hold the lease.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from random import Random
from typing import Any, Protocol

import anyio

from .contracts import Lease, LockBackend, Watchable
from .keyring import Keyring
from .lease_keys import LeaseKeys

log = logging.getLogger("hedgeplug.election")

class ElectionSettings(Protocol):
    """The [lock] timings the election runs on (the configuration's LockSettings)."""

    @property
    def ttl(self) -> float: ...

    @property
    def margin(self) -> float: ...

    @property
    def renew_every(self) -> float: ...

    @property
    def retry_every(self) -> float: ...

    @property
    def backoff_cap(self) -> float: ...


LeaderCallback = Callable[[Lease | None, Lease | None], None]


class Backoff:
    """Delays after consecutive store failures: base * 2**(n-1), capped,
    with "equal jitter" (half fixed, half uniform) so that many nodes that
    failed together do not retry together. Randomness comes from the node's
    seeded Random."""

    def __init__(self, base: float, cap: float, random: Random) -> None:
        self.base = base
        self.cap = max(cap, base)
        self.random = random
        self.failures = 0

    def failed(self) -> float:
        """Count one more failure; the delay before the next attempt."""
        self.failures += 1
        ceiling = min(self.cap, self.base * 2.0 ** min(self.failures - 1, 30))
        return ceiling / 2 + self.random.uniform(0.0, ceiling / 2)

    def succeeded(self) -> None:
        self.failures = 0


class Election:
    def __init__(
        self,
        lock: LockBackend,
        settings: ElectionSettings,
        *,
        holder: str,
        address: Callable[[], str],
        now: Callable[[], float],
        on_change: LeaderCallback,
        count: Callable[[str], None] = lambda what: None,
        contend: bool = True,
        random: Random | None = None,
        keyring: Callable[[], Keyring] | None = None,
    ) -> None:
        self.lock = lock
        self.settings = settings
        self.holder = holder
        self._address = address
        self._now = now
        self._on_change = on_change
        self._count = count
        self.contend = contend  # False: observe the leader but never take the lease
        self._lease: Lease | None = None  # ours, while we lead
        self._valid_until = 0.0
        self._known: Lease | None = None  # newest lease read from the store
        self.newest_token = 0
        self._wake = anyio.Event()
        self._changed = anyio.Event()
        self._leading = anyio.Event()  # set when this node takes the lease (wakes the watchdog)
        self._watching = False  # the lock's watch stream is up: a follower may poll slowly
        self._stopping = False
        rng = random if random is not None else Random(0)
        self._backoff = Backoff(settings.retry_every, settings.backoff_cap, rng)
        self._watch_backoff = Backoff(settings.retry_every, settings.backoff_cap, rng)
        self._retry_after = 0.0  # back-off delay owed before the next contender round
        self.last_store_ok: float | None = None  # when a store call last answered
        self.last_round = 0.0  # when the election loop last went round (liveness)
        # The key fingerprint rules (lease_keys.py); off without a keyring.
        self.keys = LeaseKeys(lock, keyring, holder=holder, ttl=lambda: settings.ttl, now=now, count=count)

    # ------------------------------------------------------------ state

    @property
    def ttl(self) -> float:
        return self.settings.ttl

    @property
    def validity(self) -> float:
        return self.settings.ttl * (1.0 - self.settings.margin)

    @property
    def is_leader(self) -> bool:
        return self._lease is not None and self._now() < self._valid_until

    @property
    def lease(self) -> Lease | None:
        """Our own lease while we lead, else None."""
        return self._lease if self.is_leader else None

    @property
    def leader(self) -> Lease | None:
        """Best knowledge of who leads: our lease while valid, else the store's last answer."""
        if self.is_leader:
            return self._lease
        known = self._known
        if known is not None and known.holder == self.holder:
            return None  # our own lapsed lease says nothing about who leads now
        return known

    async def wait_change(self) -> None:
        await self._changed.wait()

    async def read_leader(self) -> Lease | None:
        """Ask the store now who holds the lease (no change to our own state)."""
        return await self.lock.current()

    def _set_known(self, lease: Lease | None) -> None:
        before = self._identity(self._known)
        self._known = lease
        if lease is not None and lease.token > self.newest_token:
            self.newest_token = lease.token
        if self._identity(lease) != before:
            self._changed.set()
            self._changed = anyio.Event()

    def _publish(self, previous: Lease | None) -> None:
        current = self.leader
        if self._identity(current) != self._identity(previous):
            try:
                self._on_change(current, previous)
            except Exception:  # the node's callback must not break the election
                log.exception("leader change callback failed")

    @staticmethod
    def _identity(lease: Lease | None) -> tuple[str, int] | None:
        return None if lease is None else (lease.holder, lease.token)

    def poke(self) -> None:
        """Wake the contender loop now (a watch fired, or a test wants a fresh read)."""
        self._wake.set()

    # ------------------------------------------------------------ loop

    async def run(self) -> None:
        self.last_round = self._now()
        async with anyio.create_task_group() as tg:
            if isinstance(self.lock, Watchable):
                tg.start_soon(self._watch)
            tg.start_soon(self._expiry_watchdog)
            while True:
                self.last_round = self._now()
                if self._lease is not None:
                    await self._renew_once()
                else:
                    await self._observe_or_contend()

    async def _renew_once(self) -> None:
        lease = self._lease
        assert lease is not None
        sent_at = self._now()
        deadline = self._valid_until
        renewed: Lease | None = None
        answered = False
        with anyio.move_on_after(max(0.0, deadline - sent_at)):
            try:
                renewed = await self.lock.renew(self.keys.stamp(lease), self.ttl)
                answered = True
                self.last_store_ok = self._now()
            except Exception as exc:
                self._count("renew-errors")
                log.warning("%s: renewal failed: %s", self.holder, exc)
        previous = self.leader
        if renewed is None or self._now() >= deadline or renewed.holder != self.holder:
            self._count("step-downs")
            log.warning("%s: stepping down (lease %s lost or renewal late)", self.holder, lease.token)
            self._lease = None
            self._valid_until = 0.0
            self._set_known(None)
            self._publish(previous)
            if not answered:  # store trouble: contend again only after a back-off
                self._retry_after = self._backoff.failed()
            return
        self._lease = renewed
        self._valid_until = sent_at + self.validity
        self._set_known(renewed)
        self._publish(previous)
        await self._sleep_until(sent_at + self.settings.renew_every)

    async def _observe_or_contend(self) -> None:
        # A fresh wake-up event BEFORE reading the store: a watch that fires
        # while we read must cut the wait below short, not be lost.
        self._wake = anyio.Event()
        if self._retry_after > 0:
            # Backing off after store trouble: pokes and watch wake-ups do
            # not cut this short, or every node would call again at once.
            await anyio.sleep(self._retry_after)
            self._retry_after = 0.0
        previous = self.leader
        sent_at = self._now()
        current: Lease | None = self._known
        failed = True
        with anyio.move_on_after(self.settings.retry_every) as scope:
            try:
                current = await self.lock.current()
                contending = self.contend and not self._stopping
                if (
                    await self.keys.may_take(current, contending)
                    and contending
                    and (current is None or current.holder == self.holder)
                ):
                    sent_at = self._now()
                    got = await self.keys.acquire(self.holder, self._address(), self.ttl)
                    if got is not None and self._now() < sent_at + self.validity:
                        self._lease = got
                        self._valid_until = sent_at + self.validity
                        self._leading.set()
                        self._count("acquired")
                        log.info("%s: leader with token %s", self.holder, got.token)
                        current = got
                    elif got is None:
                        # Someone else won the race: learn who now, not a retry period later.
                        current = await self.lock.current()
                failed = False
                self.last_store_ok = self._now()
            except Exception as exc:
                self._count("store-errors")
                log.warning("%s: lock store error: %s", self.holder, exc)
        if scope.cancelled_caught:
            self._count("store-timeouts")
            log.warning("%s: lock store did not answer within %.3gs", self.holder, self.settings.retry_every)
        self._set_known(current)
        self._publish(previous)
        if self._lease is not None:
            self._backoff.succeeded()
            await self._sleep_until(sent_at + self.settings.renew_every)
            return
        if failed:
            self._retry_after = self._backoff.failed()
            return
        self._backoff.succeeded()
        # Wait for the retry period, or less when a watch says something changed.
        with anyio.move_on_after(self._follower_wait(current)):
            await self._wake.wait()

    def _follower_wait(self, current: Lease | None) -> float:
        """How long a node that does not lead waits before reading the store again.

        Without a working watch: the retry period. With one, a change of
        holder wakes us through the watch, so the only thing left to poll
        for is the lease running out unannounced (a crashed holder): wait
        until the expiry just read, but never longer than a ttl (a safety
        bound for a watch that hears nothing, e.g. postgres LISTEN behind a
        transaction pooler) nor shorter than a quarter of the retry period
        (etcd rounds the time left down to whole seconds)."""
        retry = self.settings.retry_every
        if not self._watching or current is None or current.holder == self.holder:
            return retry
        return min(max(self.ttl, retry), max(current.remaining, retry / 4))

    async def _sleep_until(self, t: float) -> None:
        delay = t - self._now()
        if delay > 0:
            await anyio.sleep(delay)

    async def _expiry_watchdog(self) -> None:
        # is_leader turns false by itself at valid_until; this makes sure the
        # change is also *announced* then, not only at the next renewal. It
        # sleeps until valid_until (a renewal only moves it later, so waking
        # there and sleeping again is enough), and while the node does not
        # lead it sleeps until it takes the lease: no wake-up for nothing.
        while True:
            if self._lease is None:
                self._leading = anyio.Event()
                await self._leading.wait()
                continue
            delay = self._valid_until - self._now()
            if delay <= 0:
                previous = self._lease
                self._lease = None
                self._set_known(None)
                self._count("step-downs")
                self._publish(previous)
                continue
            await anyio.sleep(delay)

    async def _watch(self) -> None:
        assert isinstance(self.lock, Watchable)
        while True:
            try:
                self._watching = True
                async for _ in self.lock.watch():
                    self._watch_backoff.succeeded()
                    self._wake.set()
            except Exception as exc:
                self._watching = False
                self._wake.set()  # a follower waiting on the watch goes back to the retry period
                self._count("watch-errors")
                log.debug("%s: watch ended: %s", self.holder, exc)
                await anyio.sleep(self._watch_backoff.failed())
                continue
            self._watching = False
            self._wake.set()
            await anyio.sleep(self.settings.retry_every)

    # ------------------------------------------------------------ stop

    async def release(self, timeout: float) -> None:
        """Give the lease up (graceful stop); bounded by `timeout`."""
        self._stopping = True
        lease, previous = self._lease, self.leader
        self._lease = None
        self._valid_until = 0.0
        if lease is None:
            return
        with anyio.move_on_after(timeout):
            try:
                await self.lock.release(lease)
                self._count("released")
            except Exception as exc:
                log.warning("%s: release failed (lease will expire): %s", self.holder, exc)
        self._set_known(None)
        self._publish(previous)

    def snapshot(self) -> dict[str, Any]:
        return {
            "is_leader": self.is_leader,
            "valid_for": max(0.0, self._valid_until - self._now()) if self.is_leader else 0.0,
            "newest_token": self.newest_token,
        }
