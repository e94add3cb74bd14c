"""Configuration: one TOML file, environment variables and flags on top.

Sections are [node] [health] [lock] [transport] [membership] [broadcast].
[node] and [health] belong to the core; each of the other four has ``use = "<name>"`` choosing an implementation; its other keys
are the section's core keys (the lock's hold the election's timings) or the
chosen plugin's options. Precedence, lowest first: defaults, file,
environment (HEDGEPLUG_<SECTION>_<KEY>), command-line settings.

All problems are collected and raised as one ConfigError whose lines name the
source, the section and key, and what is allowed.

    schema   the core sections and `Config`
    convert  one value into the type a field declares
    loader   reading, merging, validating (`load_config`)
    render   a Config back to TOML for a child process
"""

from __future__ import annotations

from ..errors import ConfigError
from ..options import (
    Duration,
    Size,
    format_duration,
    fraction,
    parse_duration,
    parse_size,
    positive,
)
from .convert import convert, describe_options, describe_type
from .loader import Setting, build_options, load_config, parse_setting
from .render import render_toml, to_data, write_config
from .schema import (
    CORE_SECTIONS,
    CORE_SETTINGS,
    DEFAULT_USE,
    PLUGIN_KINDS,
    SECTIONS,
    BroadcastSettings,
    Config,
    ElectionSettings,
    HealthSettings,
    LockSettings,
    MembershipSettings,
    NodeSettings,
    Section,
    TransportSettings,
)

__all__ = [
    "CORE_SECTIONS", "CORE_SETTINGS", "DEFAULT_USE", "PLUGIN_KINDS", "SECTIONS", "BroadcastSettings", "Config",
    "ConfigError", "Duration", "ElectionSettings", "HealthSettings", "LockSettings", "MembershipSettings",
    "NodeSettings", "Section", "Setting", "Size", "TransportSettings", "build_options", "convert",
    "describe_options", "describe_type", "format_duration", "fraction", "load_config",
    "parse_duration", "parse_setting", "parse_size", "positive", "render_toml", "to_data",
    "write_config",
]
