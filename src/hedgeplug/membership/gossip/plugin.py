"""Registration of the `gossip` membership, and how other plugins of the
same node (broadcast `gossip`) find the running one."""

from __future__ import annotations

import weakref
from typing import Any

from hedgeplug.plugin import NodeContext, hookimpl

from .protocol import Gossip
from .settings import GossipOptions, resolve

# Node context -> its gossip (weak both ways: the node owns both).
_RUNNING: weakref.WeakKeyDictionary[Any, weakref.ref[Gossip]] = weakref.WeakKeyDictionary()


def make(options: GossipOptions, ctx: NodeContext) -> Gossip:
    gossip = Gossip(resolve(options), ctx)
    _RUNNING[ctx] = weakref.ref(gossip)
    return gossip


def running_on(ctx: NodeContext) -> Gossip | None:
    """The gossip membership built for the node of `ctx`, if it uses one."""
    ref = _RUNNING.get(ctx)
    return ref() if ref is not None else None


@hookimpl
def hedgeplug_register_memberships(register: Any) -> None:
    register("gossip", make, GossipOptions)
