"""Whose lease is it: the key fingerprint every lease record carries.

A node stamps the lease it takes or renews with the id of its PRIMARY key
(the public 4-byte name frames carry, in hex; "clear" for a node without a
key). A node verifies a fingerprint when its keyring accepts that id; ""
(a record from a backend or a version without fingerprints) verifies for
every node. The rules, applied by the election before every contention:

- a free or expired lease is taken only if the fingerprint of the newest
  record (`Fingerprinted.last_fingerprint`) verifies; a held lease is read
  and its fingerprint checked too;
- a node that cannot verify it does not contend and is not silent: it logs
  one error per mismatch (not per retry), counts "lease.key-mismatch", and
  reports it (`mismatch`, shown by status as "key_mismatch") until a read
  verifies again;
- adoption: a lease that stayed free with a foreign fingerprint for
  ADOPT_AFTER_TTLS ttls on end has no contender of that keyring left (every
  node was rekeyed at once, or the cluster moved from no key to keys), so it
  is taken, with a warning. While any node of the recorded keyring contends
  it takes the lease again within a retry period, which resets the wait.

During a rotation every node accepts both keys while any node seals with
either (docs/security.md), so every node verifies whatever the leader
carries and one leader is kept; the leader stamps its new primary at its
next renewal.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

import attrs

from .contracts import Fingerprinted, Lease, LockBackend
from .keyring import CLEAR_FINGERPRINT, Keyring

log = logging.getLogger("hedgeplug.election")

ADOPT_AFTER_TTLS = 3.0


@attrs.frozen
class KeyMismatch:
    """This node's keyring cannot verify the lease's fingerprint."""

    holder: str  # "" when the lease is free (the newest record's holder is not kept)
    fingerprint: str
    accepted: tuple[str, ...]
    message: str

    def to_json(self) -> dict[str, Any]:
        return {
            "holder": self.holder,
            "fingerprint": self.fingerprint,
            "accepted": list(self.accepted),
            "message": self.message,
        }


def mismatch_message(holder: str, fingerprint: str, keyring: Keyring) -> str:
    who = f"the lease holder {holder}" if holder else "the last lease holder"
    if fingerprint == CLEAR_FINGERPRINT:
        theirs = f"{who} runs without a cluster key"
    else:
        theirs = f"{who} seals with key id {fingerprint}"
    mine = f"ids: {', '.join(keyring.ids)}" if keyring else "this node has no key"
    return (
        f"this node's keys do not match the cluster's: {theirs}, which is not in this"
        f" node's keyring ({mine}); this node will not contend for the lease"
    )


def takes_fingerprints(lock: LockBackend) -> bool:
    """Whether `lock` offers Fingerprinted AND its acquire takes the keyword (a
    subclass may override acquire with the older signature)."""
    if not isinstance(lock, Fingerprinted):
        return False
    try:
        parameters = inspect.signature(lock.acquire).parameters
    except (TypeError, ValueError):
        return False
    return "fingerprint" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )


class LeaseKeys:
    """The fingerprint rules for one election (disabled when `keyring` is None)."""

    def __init__(
        self,
        lock: LockBackend,
        keyring: Callable[[], Keyring] | None,
        *,
        holder: str,
        ttl: Callable[[], float],
        now: Callable[[], float],
        count: Callable[[str], None],
    ) -> None:
        self.lock = lock
        self._keyring = keyring
        self.holder = holder
        self._ttl = ttl
        self._now = now
        self._count = count
        self.enabled = keyring is not None and takes_fingerprints(lock)
        self.mismatch: KeyMismatch | None = None
        self._free_since: float | None = None  # foreign fingerprint on a free lease, seen since
        if keyring is not None and not self.enabled:
            log.warning(
                "%s: lock backend %s keeps no key fingerprint in its lease records, so a node"
                " with other keys can take the lease; use a backend that offers Fingerprinted",
                holder, type(lock).__name__,
            )

    @property
    def fingerprint(self) -> str:
        """The fingerprint this node stamps its leases with."""
        return self._keyring().fingerprint if self.enabled and self._keyring else ""

    @property
    def mismatch_message(self) -> str | None:
        return None if self.mismatch is None else self.mismatch.message

    async def may_take(self, current: Lease | None, contending: bool) -> bool:
        """Check the fingerprint of `current` (or of the newest record when the
        lease is free and this node would contend); True when this node may
        take the lease. Store errors propagate to the caller."""
        if not self.enabled or self._keyring is None:
            return True
        keyring = self._keyring()
        if current is not None:
            self._free_since = None
            return self._judge(current.holder, current.fingerprint, keyring)
        if not contending:
            return False
        assert isinstance(self.lock, Fingerprinted)
        fingerprint = await self.lock.last_fingerprint()
        if self._judge("", fingerprint, keyring):
            self._free_since = None
            return True
        now = self._now()
        if self._free_since is None:
            self._free_since = now
        if now - self._free_since < ADOPT_AFTER_TTLS * self._ttl():
            return False
        log.warning(
            "%s: the lease has been free for %.1fs and its last holder sealed with key id %s,"
            " which this node does not accept; no node of that keyring contends any more,"
            " so this node takes the lease with its own key %s",
            self.holder, now - self._free_since, fingerprint, keyring.fingerprint,
        )
        self._count("lease.adopted")
        self._free_since = None
        self.mismatch = None  # the lease is to carry this node's key now
        return True

    def _judge(self, holder: str, fingerprint: str, keyring: Keyring) -> bool:
        if keyring.verifies(fingerprint):
            if self.mismatch is not None:
                log.warning("%s: the lease's key fingerprint %s verifies again", self.holder, fingerprint or '""')
                self.mismatch = None
            return True
        seen = self.mismatch
        if seen is None or seen.fingerprint != fingerprint or seen.accepted != tuple(keyring.ids):
            message = mismatch_message(holder, fingerprint, keyring)
            self.mismatch = KeyMismatch(holder, fingerprint, tuple(keyring.ids), message)
            self._count("lease.key-mismatch")
            log.error("%s: %s", self.holder, message)
        elif holder and seen.holder != holder:
            # Same keys, another holder: keep the report current without logging again.
            self.mismatch = attrs.evolve(
                seen, holder=holder, message=mismatch_message(holder, fingerprint, keyring)
            )
        return False

    def stamp(self, lease: Lease) -> Lease:
        """`lease` carrying this node's current fingerprint (for a renewal)."""
        if not self.enabled:
            return lease
        fingerprint = self.fingerprint
        return lease if lease.fingerprint == fingerprint else attrs.evolve(lease, fingerprint=fingerprint)

    async def acquire(self, holder: str, address: str, ttl: float) -> Lease | None:
        if not self.enabled:
            return await self.lock.acquire(holder, address, ttl)
        acquire: Any = self.lock.acquire  # Fingerprinted: takes the keyword
        got: Lease | None = await acquire(holder, address, ttl, fingerprint=self.fingerprint)
        return got
