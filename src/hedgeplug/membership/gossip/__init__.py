"""The `gossip` membership: SWIM with Lifeguard, anchored on the lease holder.

One module per concern: state (member table and merge rule), messages (wire
checks), probe, suspicion, awareness, queue (dissemination), pushpull,
anchor (split-free join and healing), protocol (wiring), settings (options,
profiles and bounds), plugin (registration).
"""

from __future__ import annotations

from .protocol import Gossip
from .settings import GossipOptions, Settings, resolve

__all__ = ["Gossip", "GossipOptions", "Settings", "resolve"]
