"""Streams to the leader and stream broadcasts over a node's transport.

`Node.stream_to_leader` and `Node.stream_broadcast` open them; the receiving
side handles them with `node.channel(name).handle_streams(handler)` like any
stream. See docs/streams.md.
"""

from __future__ import annotations

from .fanout import StreamBroadcast, StreamReply
from .framed import Stream
from .service import SERVICE_CHANNEL, StreamService

__all__ = ["SERVICE_CHANNEL", "Stream", "StreamBroadcast", "StreamReply", "StreamService"]
