"""Registration of the `gossip` membership."""

from __future__ import annotations

from typing import Any

from hedgeplug.plugin import NodeContext, hookimpl

from .protocol import Gossip
from .settings import GossipOptions, resolve


def make(options: GossipOptions, ctx: NodeContext) -> Gossip:
    return Gossip(resolve(options), ctx)


@hookimpl
def hedgeplug_register_memberships(register: Any) -> None:
    register("gossip", make, GossipOptions)
