"""One held slot of a semaphore, kept alive by renewals.

Safety rule (the election's, applied to each slot): a holder counts itself
holder only until ``t_sent + ttl * (1 - margin)``, where t_sent is its own
clock reading when it SENT the acquisition or renewal that succeeded. The
store starts the slot's ttl no earlier than it received that request, so the
holder's belief always ends before the store could give the slot to anyone
else, whatever pauses, outages or partitions happen in between. With one
holder per slot, at most `limit` callers believe they hold at any instant.

Unlike the leader, a holder keeps retrying a renewal that fails with a store
error until that instant: a hiccup of the store must not cost the slot, and
the belief still ends on time if the store stays away.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio

from hedgeplug.config import LockSettings
from hedgeplug.contracts import Lease, LockBackend

from .slots import SemaphoreError

log = logging.getLogger("hedgeplug.semaphore")

RENEW_ERROR_RETRY = 0.05  # fraction of the ttl between renewal attempts after a store error


class SlotLost(SemaphoreError):
    """The slot's lease ended before its holder let it go (renewal refused, late, or the store away)."""


def valid_until(sent_at: float, settings: LockSettings) -> float:
    """The end of a holder's belief after a successful request sent at `sent_at`."""
    return sent_at + settings.ttl * (1.0 - settings.margin)


class Permit:
    """A slot of semaphore `name`, held while `held` is true.

    `token` is the slot lease's fencing token: it increases every time the
    slot changes hands, so a resource that remembers the highest token per
    slot can refuse a write from a holder that lost its slot.
    """

    def __init__(
        self,
        name: str,
        slot: int,
        lease: Lease,
        backend: LockBackend,
        settings: LockSettings,
        *,
        sent_at: float,
        now: Callable[[], float],
        count: Callable[[str], None],
        on_end: Callable[[Permit], None],
    ) -> None:
        self.name = name
        self.slot = slot
        self.lease = lease
        self.acquired_at = now()
        self.valid_until = valid_until(sent_at, settings)
        self.lost_reason: str | None = None
        self.released = False
        self.renewals = 0
        self._backend = backend
        self._settings = settings
        self._now = now
        self._count = count
        self._on_end = on_end
        self._lost_callbacks: list[Callable[[], None]] = []
        self._renewed_callbacks: list[Callable[[], None]] = []
        self._ended = anyio.Event()
        self._last_sent = sent_at

    def __repr__(self) -> str:
        return f"<Permit {self.name}[{self.slot}] token={self.token} held={self.held}>"

    @property
    def token(self) -> int:
        return self.lease.token

    @property
    def holder(self) -> str:
        return self.lease.holder

    @property
    def held(self) -> bool:
        """True while the belief is valid by the safety rule (and not released)."""
        return not self.released and self.lost_reason is None and self._now() < self.valid_until

    @property
    def ended(self) -> anyio.Event:
        """Set once the permit is released or lost."""
        return self._ended

    def on_renewed(self, callback: Callable[[], None]) -> None:
        """Call `callback` after every successful renewal (valid_until has moved on)."""
        self._renewed_callbacks.append(callback)

    def on_lost(self, callback: Callable[[], None]) -> None:
        """Call `callback` (synchronously, from the renewal task) if the slot is lost."""
        if self.lost_reason is not None:
            callback()
        else:
            self._lost_callbacks.append(callback)

    def mark_lost(self, reason: str) -> None:
        if self.released or self.lost_reason is not None:
            return
        self.lost_reason = reason
        self.valid_until = min(self.valid_until, self._now())
        self._count("semaphore.lost")
        log.warning("semaphore %s: slot %d (token %d) lost: %s", self.name, self.slot, self.token, reason)
        self._finish()
        for callback in self._lost_callbacks:
            try:
                callback()
            except Exception:  # one broken callback must not stop the others
                log.exception("semaphore lost-slot callback failed")

    def _finish(self) -> None:
        if not self._ended.is_set():
            self._ended.set()
            self._on_end(self)

    async def keep(self) -> None:
        """Renew until released or lost. A task; if it is cancelled (the node
        stopped or was killed) the belief simply runs out at valid_until."""
        settings = self._settings
        while not self._ended.is_set():
            with anyio.move_on_after(max(0.0, self._last_sent + settings.renew_every - self._now())):
                await self._ended.wait()
            if self._ended.is_set():
                return
            await self._renew_once()

    async def _renew_once(self) -> None:
        settings = self._settings
        deadline = self.valid_until
        while not self._ended.is_set():
            sent_at = self._now()
            if sent_at >= deadline:
                self.mark_lost("renewal late (the store did not answer in time)")
                return
            renewed: Lease | None = None
            failed = False
            with anyio.move_on_after(deadline - sent_at):
                try:
                    renewed = await self._backend.renew(self.lease, settings.ttl)
                except Exception as exc:
                    failed = True
                    self._count("semaphore.renew-errors")
                    log.debug("semaphore %s: renewal of slot %d failed: %s", self.name, self.slot, exc)
            if self._ended.is_set():
                return
            if failed:
                await anyio.sleep(min(settings.ttl * RENEW_ERROR_RETRY, max(0.0, deadline - self._now())))
                continue
            if renewed is None or renewed.holder != self.lease.holder:
                self.mark_lost("the store refused the renewal, or did not answer in time")
                return
            if self._now() >= deadline:
                self.mark_lost("renewal answered too late")
                return
            self.lease = renewed
            self._last_sent = sent_at
            self.valid_until = valid_until(sent_at, settings)
            self.renewals += 1
            for callback in self._renewed_callbacks:
                callback()
            return

    async def release(self, timeout: float | None = None) -> None:
        """Give the slot back (one attempt, bounded; if it fails the lease expires by itself)."""
        if self.released:
            return
        was_held = self.lost_reason is None
        self.released = True
        self._finish()
        if not was_held:
            return
        limit = timeout if timeout is not None else self._settings.ttl
        with anyio.CancelScope(shield=True), anyio.move_on_after(limit):
            try:
                await self._backend.release(self.lease)
                self._count("semaphore.released")
            except Exception as exc:
                self._count("semaphore.release-errors")
                log.warning("semaphore %s: release of slot %d failed (it expires by itself): %s",
                            self.name, self.slot, exc)

    def snapshot(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "slot": self.slot,
            "token": self.token,
            "holder": self.holder,
            "held": self.held,
            "valid_for": round(max(0.0, self.valid_until - self._now()), 3),
            "renewals": self.renewals,
        }
