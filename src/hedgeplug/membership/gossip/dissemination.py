"""Dissemination: every `gossip_interval`, send the queued updates to
`gossip_nodes` members (the recently gone included, so they hear of their
own death and can refute it)."""

from __future__ import annotations

from hedgeplug.plugin import Member

from . import messages as wire
from .host import GossipHost


class Dissemination:
    def __init__(self, gossip: GossipHost) -> None:
        self.gossip = gossip

    async def run(self) -> None:
        g = self.gossip
        while True:
            await g.ctx.sleep(g.settings.gossip_interval)
            try:
                await self.round()
            except Exception:
                g.count("errors")
                g.ctx.log.exception("gossip round failed")

    def targets(self, candidates: list[Member]) -> list[Member]:
        """`gossip_nodes` random candidates, one of them among the members we
        heard from most recently when there are such. After a mass crash
        random targets are mostly dead and the news (which members are
        suspect or dead) would barely reach the survivors, each of which
        would then have to find every victim itself."""
        g = self.gossip
        k = min(g.settings.gossip_nodes, len(candidates))
        heard = sorted(
            ((g.heard[m.id], m.id, m) for m in candidates if m.id in g.heard and m.live),
            reverse=True,
        )
        best = [m for _, _, m in heard[: 2 * k]]
        first = [g.ctx.random.choice(best)] if best and k else []
        rest = [m for m in candidates if m not in first]
        return first + g.ctx.random.sample(rest, k - len(first))

    async def round(self) -> None:
        g = self.gossip
        table = g.start()
        g.expire_suspicions()
        g.publish()
        if not len(g.queue):
            return
        now = g.ctx.now()
        candidates = table.live_others() + table.recently_gone(now, g.settings.dead_retention)
        if not candidates:
            return
        for target in self.targets(candidates):
            records = g.piggyback()
            if not records:
                break
            await g.send(target.address, {"t": wire.GOSSIP, "u": records})
