"""Dissemination: every `gossip_interval`, send the queued updates to
`gossip_nodes` members (the recently gone included, so they hear of their
own death and can refute it). Notices (application messages, see
notices.py) ride on the same rounds, in the message's "n" field."""

from __future__ import annotations

from typing import Any

from hedgeplug.plugin import Member

from . import messages as wire
from .host import GossipHost
from .notices import Notice, Notices


class Dissemination:
    def __init__(self, gossip: GossipHost) -> None:
        self.gossip = gossip
        self.notices = Notices(gossip.settings.retransmit_mult)

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
        if not len(g.queue) and not len(self.notices):
            return
        now = g.ctx.now()
        candidates = table.live_others() + table.recently_gone(now, g.settings.dead_retention)
        await self._send_to(self.targets(candidates) if candidates else [])

    async def _send_to(self, targets: list[Member]) -> None:
        g = self.gossip
        for target in targets:
            message: dict[str, Any] = {"t": wire.GOSSIP}
            records = g.piggyback()
            if records:
                message["u"] = records
            notices = self.notices.take(g.settings.packet_budget, g.cluster_size())
            if notices:
                message["n"] = notices
            if len(message) == 1:
                break
            await g.send(target.address, message)

    # ------------------------------------------------------------ notices

    async def spread(self, notice: Notice) -> None:
        """Queue a notice of this node and send it at once to `gossip_nodes`
        live members (random ones: the sender's first hop starts the epidemic)."""
        g = self.gossip
        table = g.start()
        self.notices.publish(notice, g.count)
        g.count("notice.sent")
        if notice.addressed_to(g.me.id):
            g.ctx.spawn(self._deliver_here, notice)
        others = table.live_others()
        picked = g.ctx.random.sample(others, min(g.settings.gossip_nodes, len(others)))
        await self._send_to(picked)

    def receive_notices(self, items: Any) -> None:
        """Hand the new notices of a message to this node's handlers (in their own tasks)."""
        g = self.gossip
        for notice in self.notices.receive(items, g.count):
            g.count("notice.received")
            if notice.addressed_to(g.me.id):
                g.ctx.spawn(self._deliver_here, notice)

    async def _deliver_here(self, notice: Notice) -> None:
        g = self.gossip
        try:
            await g.ctx.channel(notice.channel).deliver_here(notice.payload, notice.origin)
            g.count("notice.delivered")
        except Exception as exc:  # the application's handler failed: nobody to tell
            g.count("notice.handler-errors")
            g.ctx.log.debug("gossip notice %s on %r failed here: %s", notice.id, notice.channel, exc)
