"""What a key/value log key and value may be; checked before anything is sent."""

from __future__ import annotations

from typing import Any

from ..errors import HedgeplugError

MAX_KEY_BYTES = 512
MAX_VALUE_BYTES = 64 * 1024
FRAME_OVERHEAD = 1024  # envelope and request fields around a value


class LogLimitError(HedgeplugError):
    """A key or value the log refuses (nothing was sent)."""


def check_key(key: Any) -> str:
    if not isinstance(key, str) or not key:
        raise LogLimitError(f"a key must be a non-empty string, got {key!r:.60}")
    if "\0" in key:
        raise LogLimitError("a key must not contain NUL characters")
    size = len(key.encode("utf-8", "surrogatepass"))
    if size > MAX_KEY_BYTES:
        raise LogLimitError(f"key is {size} bytes; the limit is {MAX_KEY_BYTES}")
    try:
        key.encode()
    except UnicodeEncodeError:
        raise LogLimitError("a key must be valid Unicode (no lone surrogates)") from None
    return key


def check_value(value: Any, limit: int) -> bytes:
    if isinstance(value, str):
        value = value.encode()
    if not isinstance(value, bytes | bytearray | memoryview):
        raise LogLimitError(f"a value must be bytes or str, got {type(value).__name__}")
    value = bytes(value)
    if len(value) > limit:
        raise LogLimitError(f"value is {len(value)} bytes; the limit is {limit}")
    return value


def check_keep(keep: Any) -> int:
    if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
        raise LogLimitError(f"keep must be a whole number of at least 1, got {keep!r:.40}")
    return keep


def check_prefix(prefix: Any) -> str:
    if not isinstance(prefix, str) or "\0" in prefix:
        raise LogLimitError(f"a prefix must be a string without NUL characters, got {prefix!r:.60}")
    return prefix


def value_limit(max_frame: int) -> int:
    """The value limit on a transport: 64 KiB, less on a transport with small frames."""
    return max(1, min(MAX_VALUE_BYTES, max_frame - FRAME_OVERHEAD))
