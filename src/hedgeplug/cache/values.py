"""Values travel and rest packed with msgpack, the wire codec's own format:
anything the codec takes can be cached, and its size is known (and checked
against the transport's frame limit) before anything is sent."""

from __future__ import annotations

from typing import Any

import msgpack

from .errors import CacheError, ValueTooLarge

DEFAULT_FRAME = 1 << 20
# Room the envelope, the cache message around the value and sealing take.
FRAME_MARGIN = 512


def pack(value: Any) -> bytes:
    try:
        return msgpack.packb(value, use_bin_type=True)
    except Exception as exc:
        raise CacheError(
            f"a cache value must be bytes or what the wire codec takes (msgpack types); "
            f"{type(value).__name__} is not: {exc}"
        ) from None


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def frame_limit(node: Any) -> int:
    """The largest frame the node's transport carries."""
    limit = getattr(node, "max_frame", None)
    if not isinstance(limit, int):
        options = getattr(getattr(node, "config", None), "transport", None)
        limit = getattr(getattr(options, "options", None), "max_frame", None)
    return int(limit) if isinstance(limit, int) and limit > 0 else DEFAULT_FRAME


def check_size(key: bytes, packed: bytes, limit: int) -> None:
    size = len(key) + len(packed) + FRAME_MARGIN
    if size > limit:
        raise ValueTooLarge(
            f"key and value take {len(key) + len(packed)} bytes packed; with the message around "
            f"them that exceeds the transport's frame limit of {limit} bytes"
        )
