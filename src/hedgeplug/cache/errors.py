"""What the cache raises."""

from __future__ import annotations

from hedgeplug.errors import HedgeplugError, RequestTimeout


class CacheError(HedgeplugError):
    """A cache call was used wrongly or could not complete; the message says why."""


class ValueTooLarge(CacheError):
    """A value (with its key) would not fit in one frame of the node's transport,
    or exceeds the cache's whole memory bound; refused before sending."""


class WriteIncomplete(CacheError, RequestTimeout):
    """A write did not reach every owner before the timeout; some owners may hold it."""


class ProtocolError(CacheError):
    """A peer sent a cache message this node cannot read (counted and answered with an error)."""
