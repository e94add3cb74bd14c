"""Anchoring on the lease holder: what keeps gossip from splitting.

Plain SWIM splits when many nodes start at once and each joins through
whichever peer it happens to reach: groups form that never hear of each
other. The lock store names exactly one holder, and every node can read it,
so it is a meeting point all groups share:

- join: exchange state with the holder's address first, the `seeds` after;
- heal: every `anchor_interval`, look up the holder; if it is missing from
  our view, exchange state with it at once; if it answers a view digest
  different from ours, look again after `heal_after` and exchange state if
  they still differ. After any split, each group's nodes merge with the
  holder's group within anchor_interval + heal_after + one exchange, and
  gossip carries the merge on.

With heal = false this module only joins through `seeds`, as plain SWIM
does (used to show the split the anchoring prevents).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from hedgeplug.plugin import Lease

from . import messages as wire
from .host import GossipHost

FIRST_RETRY = 0.2


class Anchor:
    def __init__(self, gossip: GossipHost, exchange: Callable[..., Awaitable[bool]]) -> None:
        self.gossip = gossip
        self.exchange = exchange  # a full-state exchange with an address (PushPull.exchange)
        self.mismatch_since: float | None = None
        self.joined = False

    @property
    def anchored(self) -> bool:
        return self.gossip.settings.heal

    async def holder(self) -> Lease | None:
        """The lease holder from the node's election, or straight from the store."""
        g = self.gossip
        lease = g.ctx.leader
        if lease is None:
            try:
                lease = await g.ctx.read_leader()
            except Exception as exc:
                g.count("anchor.store-errors")
                g.ctx.log.debug("gossip: cannot read the lease holder: %s", exc)
        return lease

    def join_targets(self, lease: Lease | None) -> list[str]:
        g = self.gossip
        s = g.settings
        targets: list[str] = []
        if self.anchored and s.anchor_join and lease is not None and lease.holder != g.ctx.id:
            targets.append(lease.address)
        for seed in s.seeds:
            if seed and seed != g.ctx.address and seed not in targets:
                targets.append(seed)
        return targets

    async def join_once(self) -> bool:
        """One join attempt; True when joined or when there is nobody to join."""
        g = self.gossip
        lease = await self.holder() if self.anchored and g.settings.anchor_join else None
        targets = self.join_targets(lease)
        for address in targets:
            if await self.exchange(address, join=True):
                g.count("joined")
                return True
        if targets:
            return False
        # Nobody to join: we hold the lease, or were given only ourselves as seed.
        i_hold = lease is not None and lease.holder == g.ctx.id
        return i_hold or not self.anchored or not g.settings.anchor_join

    async def join(self) -> None:
        g = self.gossip
        delay = FIRST_RETRY
        while not await self.join_once():
            if g.cluster_size() > 1:
                break  # someone joined us in the meantime
            await g.ctx.sleep(delay * g.ctx.random.uniform(1.0, 1.5))
            delay = min(delay * 2, g.settings.anchor_interval)
        self.joined = True

    async def run(self) -> None:
        g = self.gossip
        await self.join()
        if not self.anchored:
            return
        while True:
            await g.ctx.sleep(g.settings.anchor_interval * g.ctx.random.uniform(0.9, 1.1))
            try:
                await self.check()
            except Exception:
                g.count("errors")
                g.ctx.log.exception("gossip anchor check failed")

    async def check(self) -> str:
        """Compare with the lease holder once; returns what was done (for tests and counters)."""
        g = self.gossip
        if g.leaving or g.table is None:
            return "leaving"
        lease = await self.holder()
        if lease is None or lease.holder == g.ctx.id:
            self.mismatch_since = None
            return "no-holder" if lease is None else "self"
        known = g.table.get(lease.holder)
        if known is None or not known.live or known.address != lease.address:
            self.mismatch_since = None
            g.count("heal.missing")
            await self.exchange(lease.address)
            return "merged-missing"
        reply = await g.request(lease.address, {"t": wire.DIGEST}, g.settings.push_pull_timeout)
        theirs = reply.get("d") if isinstance(reply, dict) else None
        if not isinstance(theirs, str):
            return "no-answer"
        if theirs == g.view.digest():
            self.mismatch_since = None
            return "same"
        now = g.ctx.now()
        if self.mismatch_since is None:
            self.mismatch_since = now
            # Views differ briefly during every change; look again after heal_after.
            await g.ctx.sleep(g.settings.heal_after)
            return await self.check()
        if now - self.mismatch_since < g.settings.heal_after:
            return "differs"
        self.mismatch_since = None
        g.count("heal.digest")
        await self.exchange(lease.address)
        return "merged-digest"
