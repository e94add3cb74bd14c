"""hedgeplug: cluster coordination for autoscaled deployments.

One leader through a lease lock in a store you already run, one agreed list
of live members, and messaging between them. The public API is what this
module exports; everything else is private or plugin-facing
(`hedgeplug.contracts`, `hedgeplug.hookspecs`).

The names are imported on first use (PEP 562), so `hedgeplug --version` and
the command's other light paths do not pay for anyio, attrs, the codec and
the node when they do not need them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module (relative to this package) that defines it
_LAZY: dict[str, str] = {
    "BlockingNode": ".blocking",
    "Config": ".config",
    "load_config": ".config",
    "Lease": ".contracts",
    "Message": ".contracts",
    "Reply": ".contracts",
    "ConfigError": ".errors",
    "HedgeplugError": ".errors",
    "NoLeader": ".errors",
    "PluginError": ".errors",
    "RemoteError": ".errors",
    "RequestTimeout": ".errors",
    "StoreError": ".errors",
    "TransportError": ".errors",
    "LeaderChanged": ".events",
    "MembersChanged": ".events",
    "MemberUpdated": ".events",
    "hookimpl": ".hookspecs",
    "Node": ".node",
    "open_node": ".node",
    "Registry": ".registry",
    "Member": ".view",
    "MemberState": ".view",
    "View": ".view",
    "ViewVersion": ".view",
}

__all__ = [
    "BlockingNode",
    "Config",
    "ConfigError",
    "HedgeplugError",
    "LeaderChanged",
    "Lease",
    "Member",
    "MemberState",
    "MemberUpdated",
    "MembersChanged",
    "Message",
    "NoLeader",
    "Node",
    "PluginError",
    "Registry",
    "RemoteError",
    "Reply",
    "RequestTimeout",
    "StoreError",
    "TransportError",
    "View",
    "ViewVersion",
    "hookimpl",
    "load_config",
    "open_node",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hedgeplug' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


if TYPE_CHECKING:  # the type checker sees the names as ordinary imports
    from .blocking import BlockingNode
    from .config import Config, load_config
    from .contracts import Lease, Message, Reply
    from .errors import (
        ConfigError,
        HedgeplugError,
        NoLeader,
        PluginError,
        RemoteError,
        RequestTimeout,
        StoreError,
        TransportError,
    )
    from .events import LeaderChanged, MembersChanged, MemberUpdated
    from .hookspecs import hookimpl
    from .node import Node, open_node
    from .registry import Registry
    from .view import Member, MemberState, View, ViewVersion
