"""Every hook a hedgeplug plugin can implement.

Registration hooks are called once when the registry loads. Each receives a
`register(name, factory, options)` callable: `name` is what a config selects
with ``use = "name"``, `factory(options, context)` builds the implementation,
and `options` is the attrs class holding the keys of that config section.

Observer hooks are called by a running node. An observer that raises is
logged with its plugin's name and switched off for that node; it never stops
the node.
"""

from __future__ import annotations

from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("hedgeplug")
hookimpl = pluggy.HookimplMarker("hedgeplug")


@hookspec
def hedgeplug_register_locks(register: Any) -> None:
    """Register lock backends (where the lease lives)."""


@hookspec
def hedgeplug_register_transports(register: Any) -> None:
    """Register transports (how frames move between nodes)."""


@hookspec
def hedgeplug_register_memberships(register: Any) -> None:
    """Register membership strategies (how the view is kept)."""


@hookspec
def hedgeplug_register_broadcasts(register: Any) -> None:
    """Register broadcast strategies (how a message reaches all members)."""


@hookspec
def hedgeplug_node_started(node: Any) -> None:
    """Called once a node is bound and its tasks are running."""


@hookspec
def hedgeplug_leader_changed(node: Any, lease: Any, previous: Any) -> None:
    """Called when the node learns of a different leader (lease holder or token); `lease` may be None."""


@hookspec
def hedgeplug_members_changed(node: Any, view: Any, joined: Any, left: Any) -> None:
    """Called when the node's view changes membership; `joined`/`left` are tuples of Members."""


@hookspec
def hedgeplug_node_stopping(node: Any) -> None:
    """Called when a node begins a graceful stop, before it leaves and releases its lease."""
