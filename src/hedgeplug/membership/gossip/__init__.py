"""The `gossip` membership: SWIM with Lifeguard, anchored on the lease holder.

One module per concern: state (member table and merge rule), messages (wire
checks), probe, suspicion, awareness, queue (dissemination), pushpull,
anchor (split-free join and healing), protocol (wiring), plugin (options).
"""

from __future__ import annotations

from .plugin import GossipOptions, Settings, resolve
from .protocol import Gossip

__all__ = ["Gossip", "GossipOptions", "Settings", "resolve"]
