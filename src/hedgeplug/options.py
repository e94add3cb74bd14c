"""Typed option values shared by the core and every plugin's options class.

`Duration` and `Size` are the types an attrs options field declares so the
configuration loader parses "500ms" or "64KiB" once, at the edge; `Address`
is a parsed host:port. The validators pass the attribute along with the
error, so a configuration error names the section and key.
"""

from __future__ import annotations

import re
from typing import Any, NewType

import attrs

Duration = NewType("Duration", float)
"""Seconds; read from "500ms", "3s", "1.5m", "1h" or a plain number of seconds."""

Size = NewType("Size", int)
"""Bytes; read from "64KiB", "1MiB", "1500" or a plain integer."""

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB|k|K|M|G)?\s*$")
_SIZE_UNITS = {
    None: 1, "B": 1, "k": 1000, "K": 1024, "KB": 1000, "KiB": 1024,
    "M": 1024**2, "MB": 1000**2, "MiB": 1024**2, "G": 1024**3, "GB": 1000**3, "GiB": 1024**3,
}


def parse_duration(value: Any) -> float:
    """Seconds from "500ms", "3s", "1m", "1h" or a number."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like '500ms', '3s' or '1m', got a boolean")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"a duration cannot be negative, got {value}")
        return float(value)
    if isinstance(value, str):
        m = _DURATION_RE.match(value)
        if m:
            return float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    raise ValueError(f"expected a duration like '500ms', '3s' or '1m', got {value!r}")


def parse_size(value: Any) -> int:
    """Bytes from 65536, "64KiB", "1MiB" or "1MB"."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m:
            return int(m.group(1)) * _SIZE_UNITS[m.group(2)]
    raise ValueError(f"expected a size like 65536, '64KiB' or '1MiB', got {value!r}")


def format_duration(seconds: float) -> str:
    """The shortest text `parse_duration` reads back as `seconds`."""
    if seconds < 1 and seconds * 1000 == int(seconds * 1000):
        return f"{int(seconds * 1000)}ms"
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{seconds}s"


# ------------------------------------------------------------ validators
# attrs validators: `validator=positive` on a field. The attribute travels as
# the error's second argument so the loader can name the key.


def positive(_inst: Any, attr: attrs.Attribute, value: Any) -> None:
    """The value (when not None) must be greater than zero."""
    if value is not None and value <= 0:
        raise ValueError(f"must be greater than zero, got {value}", attr)


def at_least(minimum: float) -> Any:
    """A validator: the value (when not None) must be at least `minimum`."""

    def check(_inst: Any, attr: attrs.Attribute, value: Any) -> None:
        if value is not None and value < minimum:
            raise ValueError(f"must be at least {minimum}, got {value}", attr)

    return check


def fraction(_inst: Any, attr: attrs.Attribute, value: float) -> None:
    """A fraction from 0 up to, not including, 1."""
    if not 0.0 <= value < 1.0:
        raise ValueError(f"must be a fraction from 0 up to (not including) 1, got {value}", attr)
