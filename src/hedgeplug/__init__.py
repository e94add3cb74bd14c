"""hedgeplug: cluster coordination for autoscaled deployments.

One leader through a lease lock in a store you already run, one agreed list
of live members, and messaging between them. The public API is what this
module exports; everything else is private or plugin-facing
(`hedgeplug.contracts`, `hedgeplug.hookspecs`).
"""

from __future__ import annotations

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
from .events import LeaderChanged, MembersChanged
from .hookspecs import hookimpl
from .node import Node, open_node
from .registry import Registry
from .view import Member, MemberState, View, ViewVersion

__version__ = "0.1.0"

__all__ = [
    "BlockingNode",
    "Config",
    "ConfigError",
    "HedgeplugError",
    "LeaderChanged",
    "Lease",
    "Member",
    "MemberState",
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
