"""Broadcast `gossip`: epidemic dissemination through the gossip membership.

The payload becomes a notice that rides on the membership's gossip rounds:
the sender sends it to `gossip_nodes` members at once, and every member that
sees it for the first time hands it to its own handler of the channel and
sends it on, `notice_limit(N)` (about ln(N) + 7) times in all. Fire-and-forget: there are no replies, so `deliver`
yields nothing and returns as soon as the notice is queued and its first
copies are sent. Each member handles a notice once (ids are remembered in a
bounded set). Delivery to every live member is probabilistic and bounded in
time (`delivery_bound`, docs/gossip.md); the sender's cost does not grow
with the cluster, unlike `direct`'s one request per member.

It needs `[membership] use = "gossip"` on the node, and every member must
run the gossip membership (any broadcast setting) to relay and receive.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import attrs
import msgpack

from hedgeplug.membership.gossip.notices import delivery_bound
from hedgeplug.membership.gossip.plugin import running_on
from hedgeplug.membership.gossip.protocol import Gossip
from hedgeplug.plugin import (
    ConfigError,
    HedgeplugError,
    Member,
    NodeContext,
    Reply,
    Size,
    hookimpl,
    positive,
)


@attrs.frozen
class GossipBroadcastOptions:
    max_payload: Size = attrs.field(
        default=Size(8192),
        validator=positive,
        metadata={"help": "largest payload (msgpack bytes) a notice may carry"},
    )


class GossipBroadcast:
    def __init__(self, options: GossipBroadcastOptions, gossip: Gossip) -> None:
        self.options = options
        self.gossip = gossip

    def bound(self, cluster_size: int) -> float:
        """Seconds within which every live member has a notice (with high probability)."""
        s = self.gossip.settings
        return delivery_bound(s.gossip_nodes, s.gossip_interval, cluster_size)

    async def deliver(
        self, channel: str, payload: Any, targets: Sequence[Member], timeout: float
    ) -> AsyncIterator[Reply]:
        if targets:
            await self.spread(channel, payload, targets)
        return
        yield  # an async generator that yields nothing: notices have no replies

    async def spread(self, channel: str, payload: Any, targets: Sequence[Member]) -> str:
        """Send the notice; returns its id."""
        try:
            size = len(msgpack.packb(payload, use_bin_type=True))
        except (TypeError, ValueError) as exc:
            raise HedgeplugError(f"broadcast 'gossip': the payload cannot be encoded: {exc}") from None
        if size > self.options.max_payload:
            raise HedgeplugError(
                f"broadcast 'gossip' carries payloads of at most {self.options.max_payload} "
                f"bytes ([broadcast] max_payload); this one is {size} bytes"
            )
        wanted = frozenset(m.id for m in targets)
        everyone = {m.id for m in self.gossip.view.live} | {self.gossip.ctx.id}
        # The whole view travels as "everyone"; a subset names its members.
        addressed = None if wanted >= everyone else wanted
        return await self.gossip.notify(channel, payload, addressed)


def make(options: GossipBroadcastOptions, ctx: NodeContext) -> GossipBroadcast:
    gossip = running_on(ctx)
    if gossip is None:
        settings = getattr(ctx, "settings", None)
        used = getattr(getattr(settings, "membership", None), "use", "another membership")
        raise ConfigError(
            f"[broadcast] use = \"gossip\" spreads messages through the gossip membership, "
            f"but this node's [membership] use = {used!r}: set [membership] use = \"gossip\" "
            f"or pick another broadcast (\"direct\")"
        )
    return GossipBroadcast(options, gossip)


@hookimpl
def hedgeplug_register_broadcasts(register: Any) -> None:
    register("gossip", make, GossipBroadcastOptions)
