"""The node runtime: builds the plugins a config names and runs them.

    async with hedgeplug.open_node(config) as node:
        ...
"""

from __future__ import annotations

from .api import Node
from .context import NodeContext
from .handlers import APP_BROADCAST, APP_PREFIX, APP_SEND, CONTROL
from .lifecycle import Lifecycle
from .opening import ConfigLike, open_node, resolve_config
from .parts import NodeParts

__all__ = [
    "APP_BROADCAST",
    "APP_PREFIX",
    "APP_SEND",
    "CONTROL",
    "ConfigLike",
    "Lifecycle",
    "Node",
    "NodeContext",
    "NodeParts",
    "open_node",
    "resolve_config",
]
