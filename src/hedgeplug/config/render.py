"""A typed Config back to the file's shape, for handing to a child process.

The demo and the bench start `hedgeplug run` children; each child gets its
configuration as one TOML file written from the parent's typed Config here,
so no tool assembles ``--set`` strings by hand.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import attrs

from ..address import Address
from .schema import CORE_SECTIONS, PLUGIN_KINDS, Config


def to_data(config: Config) -> dict[str, dict[str, Any]]:
    """The Config as a dict shaped like the TOML file (load_config(data=...) reads it back)."""
    out: dict[str, dict[str, Any]] = {name: _values(getattr(config, name)) for name in CORE_SECTIONS}
    for kind in PLUGIN_KINDS:
        section = config.section(kind)
        out[kind] = {**_values(section.core), **_values(section.options)}
    return out


def _values(obj: Any) -> dict[str, Any]:
    # None means "not set" (TOML has no null): leaving the key out gives the same default.
    return {f.name: _plain(getattr(obj, f.name)) for f in attrs.fields(type(obj)) if getattr(obj, f.name) is not None}


def _plain(value: Any) -> Any:
    if isinstance(value, Address | Path):
        return str(value)
    if isinstance(value, str):
        return value.replace("${", "$${")  # read back literally, not as an environment reference
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def render_toml(config: Config) -> str:
    """TOML text of `config`; loading it gives an equal Config."""
    lines = []
    for section, body in to_data(config).items():
        lines.append(f"[{section}]")
        lines += [f"{_key(k)} = {_toml(v)}" for k, v in body.items()]
        lines.append("")
    return "\n".join(lines)


def write_config(config: Config, path: Path) -> Path:
    """Write `config` as a TOML file only the owner can read (it may hold the cluster key)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "w", encoding="utf-8") as fh:
        fh.write(render_toml(config))
    return path


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} to TOML")


