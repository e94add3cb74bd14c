"""Configuration: one TOML file, environment variables and flags on top.

Sections are [node] [lock] [transport] [membership] [broadcast]. Each of the
last four has ``use = "<name>"`` choosing an implementation; the lock section
also holds the election's timings. Every other key of a section belongs to
the chosen plugin's attrs options class. Precedence, lowest first: defaults,
file, environment (HEDGEPLUG_<SECTION>_<KEY>), overrides (``section.key=value``
from the command line).

All problems are collected and raised as one ConfigError whose lines name the
source, the section and key, and what is allowed.
"""

from __future__ import annotations

import os
import socket
import tomllib
import types
import typing
from collections.abc import Mapping
from typing import Any

import attrs

from .address import Address
from .errors import ConfigError
from .options import (  # noqa: F401  (re-exported: config.Duration etc. stay importable)
    Duration,
    Size,
    format_duration,
    fraction,
    parse_duration,
    parse_size,
    positive,
)

SECTIONS = ("node", "lock", "transport", "membership", "broadcast")


# ------------------------------------------------------------ core sections


def _default_node_id() -> str:
    # The id only has to be unique and stable for this process's lifetime.
    return f"{socket.gethostname().split('.')[0]}-{os.getpid()}-{os.urandom(2).hex()}"


@attrs.frozen
class NodeSettings:
    """[node]: identity of this process's participant."""

    id: str = attrs.field(factory=_default_node_id, metadata={"help": "unique id; default host-pid-random"})
    cluster: str = attrs.field(default="hedgeplug", metadata={"help": "cluster name, sent in every frame"})
    lock_name: str = attrs.field(default="", metadata={"help": "lock name in the store; default: the cluster name"})
    key: str = attrs.field(default="", metadata={"help": "shared secret; when set, frames are encrypted and authenticated"})
    meta: dict[str, str] = attrs.field(factory=dict, metadata={"help": "small str->str metadata shown to other members"})
    seed: int | None = attrs.field(default=None, metadata={"help": "seed for protocol randomness; default random"})
    stop_timeout: Duration = attrs.field(default=Duration(3.0), validator=positive, metadata={"help": "bound on a graceful stop"})

    @property
    def lock(self) -> str:
        return self.lock_name or self.cluster


@attrs.frozen
class LockSettings:
    """[lock]: the store backend and the election's timings."""

    use: str = attrs.field(default="sqlite", metadata={"help": "lock backend name (see `hedgeplug plugins`)"})
    ttl: Duration = attrs.field(default=Duration(5.0), validator=positive, metadata={"help": "lease time to live"})
    margin: float = attrs.field(default=0.25, validator=fraction, metadata={"help": "leader counts itself leader only for ttl*(1-margin) after sending a renewal"})
    renew: Duration | None = attrs.field(default=None, validator=positive, metadata={"help": "renewal period; default ttl/4"})
    retry: Duration | None = attrs.field(default=None, validator=positive, metadata={"help": "contender and follower poll period; default ttl/4"})

    @property
    def renew_every(self) -> float:
        return self.renew if self.renew is not None else self.ttl / 4

    @property
    def retry_every(self) -> float:
        return self.retry if self.retry is not None else self.ttl / 4


@attrs.frozen
class PluginSettings:
    """[transport] [membership] [broadcast]: which implementation to use."""

    use: str


DEFAULT_USE = {"lock": "sqlite", "transport": "tcp", "membership": "heartbeat", "broadcast": "direct"}


@attrs.frozen
class Section:
    """A plugin section after validation: the core part and the plugin's options."""

    use: str
    options: Any
    core: Any = None


@attrs.frozen
class Config:
    """A validated configuration, ready for `hedgeplug.open_node`."""

    node: NodeSettings
    lock: Section
    transport: Section
    membership: Section
    broadcast: Section
    source: str = "(defaults)"

    @property
    def election(self) -> LockSettings:
        return self.lock.core

    def with_node(self, **changes: Any) -> Config:
        return attrs.evolve(self, node=attrs.evolve(self.node, **changes))


# ------------------------------------------------------------ conversion


def _field_types(cls: type) -> dict[str, Any]:
    attrs.resolve_types(cls)
    return {f.name: f.type for f in attrs.fields(cls)}


def _describe(tp: Any) -> str:
    if tp is Duration:
        return "a duration like '500ms', '3s' or '1m'"
    if tp is Size:
        return "a size like 65536 or '1MiB'"
    if tp is Address:
        return "an address like '127.0.0.1:7946' or '[::1]:7946'"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(_describe(a) for a in args) + " (or leave it out)"
    if origin is list:
        return "a list of " + _describe(typing.get_args(tp)[0]) + "s"
    if origin is dict:
        return "a table of string keys to strings"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def convert(tp: Any, value: Any, *, from_text: bool) -> Any:
    """Turn a TOML value (or, with from_text, an env/flag string) into `tp`."""
    if isinstance(value, str) and not value.isascii():
        try:  # bytes from argv or the environment that were not UTF-8 arrive as lone surrogates
            value.encode()
        except UnicodeEncodeError:
            raise ValueError(f"expected UTF-8 text, got {value!r}") from None
    if tp is Duration:
        return parse_duration(value)
    if tp is Size:
        return parse_size(value)
    if tp is Address:
        return Address.parse(value)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if from_text and isinstance(value, str) and value.strip().lower() in ("", "none", "null"):
            return None
        errors = []
        for a in args:
            try:
                return convert(a, value, from_text=from_text)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError(f"expected {_describe(tp)}, got {value!r}")
    if origin is typing.Literal:
        if value in typing.get_args(tp):
            return value
        raise ValueError(f"expected {_describe(tp)}, got {value!r}")
    if origin is list:
        (item,) = typing.get_args(tp)
        if from_text and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ValueError(f"expected {_describe(tp)}, got {value!r}")
        return [convert(item, v, from_text=from_text) for v in value]
    if origin is dict:
        if from_text and isinstance(value, str):
            pairs = [p for p in value.split(",") if p.strip()]
            if not all("=" in p for p in pairs):
                raise ValueError(f"expected key=value pairs separated by commas, got {value!r}")
            value = dict(p.split("=", 1) for p in pairs)
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ValueError(f"expected {_describe(tp)}, got {value!r}")
        return {str(k).strip(): str(v).strip() for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if from_text and isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise ValueError(f"expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if from_text and isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ValueError(f"expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if from_text and isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise ValueError(f"expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ValueError(f"expected a string, got {value!r}")
    if tp is Any:
        return value
    raise ValueError(f"unsupported option type {tp!r}")


@attrs.define
class _Errors:
    source: str
    lines: list[str] = attrs.Factory(list)

    def add(self, where: str, message: str) -> None:
        self.lines.append(f"{where}: {message}")

    def raise_if_any(self) -> None:
        if self.lines:
            head = "invalid configuration" + (f" ({self.source})" if self.source != "(defaults)" else "") + ":"
            raise ConfigError(head + "\n  " + "\n  ".join(self.lines))


def build_options(
    cls: type,
    raw: Mapping[str, tuple[Any, str, bool]],
    errors: _Errors,
    section: str,
    what: str,
    also_allowed: tuple[str, ...] = ("use",),
) -> Any:
    """Instantiate attrs class `cls` from {key: (value, origin, from_text)}.

    `also_allowed` are the section's keys the core reads itself, listed in
    the "allowed keys" of an unknown-key message.
    """
    types_ = _field_types(cls)
    kwargs: dict[str, Any] = {}
    for key, (value, origin, from_text) in raw.items():
        if key not in types_:
            allowed = ", ".join(sorted(set(types_) | set(also_allowed))) or "(no keys)"
            errors.add(_where(origin, section, key), f"unknown key for {what}; allowed keys: {allowed}")
            continue
        try:
            kwargs[key] = convert(types_[key], value, from_text=from_text)
        except ValueError as exc:
            errors.add(_where(origin, section, key), str(exc))
    if len(kwargs) != len([k for k in raw if k in types_]):
        return None
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        guessed = _guess_key(exc, types_)
        where = f"[{section}] {guessed}" if guessed else f"[{section}]"
        errors.add(where, f"{_strip_attr(exc)}")
        return None


def _where(origin: str, section: str, key: str) -> str:
    # Environment variables and --set already name the section and key.
    if origin.startswith(("environment ", "--set ")):
        return origin
    return f"{origin} [{section}] {key}"


def _guess_key(exc: Exception, names: Mapping[str, Any]) -> str | None:
    attr = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], attrs.Attribute) else None
    if attr is not None:
        return attr.name
    text = str(exc)
    for n in names:
        if f"'{n}'" in text or text.startswith(n + " "):
            return n
    return getattr(exc, "hedgeplug_key", None)


def _strip_attr(exc: Exception) -> str:
    return str(exc.args[0]) if exc.args else str(exc)


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    data: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, str] | list[str] | None = None,
    registry: Any = None,
) -> Config:
    """Read, merge and validate a configuration.

    `path`: a TOML file; `data`: a dict shaped like the file (used when
    embedding); `env`: defaults to os.environ; `overrides`: "section.key=value"
    strings or a mapping of "section.key" to text.
    """
    from .registry import Registry

    registry = registry or Registry.load()
    source = str(path) if path is not None else "(defaults)"
    errors = _Errors(source)
    layers: dict[str, dict[str, tuple[Any, str, bool]]] = {s: {} for s in SECTIONS}

    file_data: Mapping[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                file_data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file {source} does not exist") from None
        except IsADirectoryError:
            raise ConfigError(f"config path {source} is a directory, expected a TOML file") from None
        except PermissionError:
            raise ConfigError(f"config file {source} is not readable (permission denied)") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {source} is not valid TOML: {exc}") from None
        except UnicodeDecodeError as exc:  # TOML is UTF-8; tomllib does not wrap this one
            raise ConfigError(f"config file {source} is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
        except OSError as exc:  # a name too long, a loop of links, ...
            raise ConfigError(f"config file {source} cannot be read: {exc.strerror or exc}") from None
    for origin, mapping in ((source, file_data), ("(data)", data or {})):
        for section, body in mapping.items():
            if section not in SECTIONS:
                errors.add(f"{origin} [{section}]", f"unknown section; sections are {', '.join(SECTIONS)}")
                continue
            if not isinstance(body, Mapping):
                errors.add(f"{origin} [{section}]", "must be a table")
                continue
            for key, value in body.items():
                layers[section][key] = (value, origin, False)

    env = os.environ if env is None else env
    for name, value in env.items():
        if not name.startswith("HEDGEPLUG_"):
            continue
        rest = name[len("HEDGEPLUG_"):].lower()
        section, _, key = rest.partition("_")
        if section not in SECTIONS or not key:
            continue  # other HEDGEPLUG_* variables (e.g. HEDGEPLUG_LOAD_PLUGINS) are not config
        layers[section][key] = (value, f"environment {name}", True)

    if isinstance(overrides, Mapping):
        items = [f"{k}={v}" for k, v in overrides.items()]
    else:
        items = list(overrides or [])
    for item in items:
        target, eq, value = item.partition("=")
        section, dot, key = target.strip().partition(".")
        if not eq or not dot or not key:
            errors.add(f"--set {item!r}", "expected section.key=value, e.g. lock.ttl=3s")
            continue
        if section not in SECTIONS:
            errors.add(f"--set {item!r}", f"unknown section {section!r}; sections are {', '.join(SECTIONS)}")
            continue
        layers[section][key.strip()] = (value, f"--set {target.strip()}", True)

    node = build_options(NodeSettings, layers["node"], errors, "node", "the node", ())
    missing_plugin = False
    sections: dict[str, Section | None] = {}
    for kind in ("lock", "transport", "membership", "broadcast"):
        raw = dict(layers[kind])
        use_raw = raw.pop("use", (DEFAULT_USE[kind], "(default)", False))
        use = use_raw[0]
        if not isinstance(use, str) or not use:
            errors.add(f"{use_raw[1]} [{kind}] use", f"expected the name of a {kind} implementation, got {use!r}")
            sections[kind] = None
            continue
        core = None
        if kind == "lock":
            core_keys = {f.name for f in attrs.fields(LockSettings)} - {"use"}
            core_raw = {k: v for k, v in raw.items() if k in core_keys}
            raw = {k: v for k, v in raw.items() if k not in core_keys}
            core_raw["use"] = (use, use_raw[1], False)
            core = build_options(LockSettings, core_raw, errors, kind, "the election")
        impl = registry.find(kind, use)
        if impl is None:
            errors.add(f"{use_raw[1]} [{kind}] use", registry.missing_message(kind, use))
            missing_plugin = True
            sections[kind] = None
            continue
        core_names = ("use",) if kind != "lock" else tuple(f.name for f in attrs.fields(LockSettings))
        options = build_options(
            impl.options, raw, errors, kind, f"{kind} {use!r} ({impl.distribution})", core_names
        )
        sections[kind] = Section(use, options, core)
    if missing_plugin:
        errors.lines.extend(registry.failure_lines())
    errors.raise_if_any()
    assert node is not None
    return Config(
        node=node,
        lock=sections["lock"],  # type: ignore[arg-type]
        transport=sections["transport"],  # type: ignore[arg-type]
        membership=sections["membership"],  # type: ignore[arg-type]
        broadcast=sections["broadcast"],  # type: ignore[arg-type]
        source=source,
    )


def describe_options(cls: type) -> list[dict[str, str]]:
    """Key, type description, default and help of an options class (for docs and `plugins`)."""
    out = []
    types_ = _field_types(cls)
    for f in attrs.fields(cls):
        if f.default is attrs.NOTHING:
            default = "(required)"
        elif isinstance(f.default, attrs.Factory):  # type: ignore[arg-type]
            default = "(computed)"
        else:
            default = repr(f.default)
        out.append({"key": f.name, "type": _describe(types_[f.name]), "default": default, "help": f.metadata.get("help", "")})
    return out
