"""Periodic full-state exchange with one random member.

Piggybacked gossip can lose an update (every copy dropped); exchanging whole
tables now and then repairs that. The period grows with the cluster size
beyond 32 members (as memberlist does) so the total load stays flat. The
exchange is also how a node joins: it sends its table (just itself) and
gets everyone back. Large tables exceed a datagram; the transport moves
them over a stream by itself.
"""

from __future__ import annotations

import math
from typing import Any

from . import messages as wire
from .host import GossipHost

SCALE_THRESHOLD = 32


def push_pull_scale(interval: float, cluster_size: int) -> float:
    if cluster_size <= SCALE_THRESHOLD:
        return interval
    factor = math.ceil(math.log2(cluster_size) - math.log2(SCALE_THRESHOLD)) + 1
    return interval * factor


class PushPull:
    def __init__(self, gossip: GossipHost) -> None:
        self.gossip = gossip

    def state(self) -> list[list[Any]]:
        g = self.gossip
        assert g.table is not None
        me = g.table.me_id
        return [wire.record_to_wire(m, me) for m in g.table]

    async def exchange(self, address: str, *, join: bool = False) -> bool:
        """Swap tables with the node at `address`; True if its table arrived and was merged."""
        g = self.gossip
        g.start()
        payload = {"t": wire.PUSH_PULL, "join": join, "s": self.state()}
        reply = await g.request(address, payload, g.settings.push_pull_timeout)
        if not isinstance(reply, dict) or reply.get("t") != wire.PUSH_PULL:
            g.count("push-pull.failed")
            return False
        try:
            g.absorb(reply.get("s"), from_state=True)
        except wire.BadPayload as exc:
            g.count(f"drop.{exc.reason}")
            return False
        g.count("push-pull.ok")
        return True

    def answer(self, payload: dict[str, Any]) -> dict[str, Any]:
        g = self.gossip
        g.start()
        ours = self.state()  # taken before merging: the asker already knows its own news
        g.absorb(payload.get("s"), from_state=True)
        return {"t": wire.PUSH_PULL, "s": ours}

    async def run(self) -> None:
        g = self.gossip
        s = g.settings
        await g.ctx.sleep(g.ctx.random.uniform(0, s.push_pull_interval))
        while True:
            try:
                if not g.leaving and g.table is not None:
                    others = g.table.live_others()
                    if others:
                        await self.exchange(g.ctx.random.choice(others).address)
            except Exception:
                g.count("errors")
                g.ctx.log.exception("gossip push-pull failed")
            await g.ctx.sleep(push_pull_scale(s.push_pull_interval, g.cluster_size()))
