"""Reading, merging and validating a configuration, collecting every problem.

Precedence, lowest first: defaults, the file (or embedded data), the
environment (HEDGEPLUG_<SECTION>_<KEY>), then settings from the command
line: ``--set section.key=value`` texts and typed flag values (`Setting`).
Two command-line settings of one key are an error naming both: a flag never
wins silently over an override, nor the other way round.

String values in the file (or embedded data) may name environment variables
as ``${NAME}`` or ``${NAME:-default}`` (``$${`` is a literal ``${``), e.g.
``advertise = "${POD_IP}:7946"``. Environment variables with the shape
Kubernetes gives Service variables (HEDGEPLUG_<X>_SERVICE_HOST, ..._PORT_7946_TCP
and so on, for a Service named hedgeplug-<x>) are ignored, with a debug line,
when they name no known key; any other unknown HEDGEPLUG_<SECTION>_<KEY> is an error.
"""

from __future__ import annotations

import logging
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from ..errors import ConfigError
from .convert import convert, field_types
from .schema import CORE_SECTIONS, CORE_SETTINGS, PLUGIN_KINDS, SECTIONS, Config, Section

log = logging.getLogger("hedgeplug.config")

# What Kubernetes injects for a Service named hedgeplug-<x> in the namespace.
SERVICE_VARIABLE = re.compile(
    r"HEDGEPLUG_[A-Z0-9_]+?_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT"
    r"|PORT_[0-9]+_(TCP|UDP|SCTP)(_ADDR|_PORT|_PROTO)?)"
)
_REFERENCE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}")


@attrs.frozen
class Setting:
    """One value for ``section.key`` given on the command line.

    `origin` names where it came from ("--bind", "--set lock.ttl"). A flag's
    value is already typed (its argparse type parsed it); a --set value is
    text (`from_text`), converted like an environment variable."""

    section: str
    key: str
    value: Any
    origin: str
    from_text: bool = False


@attrs.frozen
class _Entry:
    value: Any
    origin: str
    from_text: bool
    ignorable: bool = False  # an environment variable Kubernetes may have set for a Service


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


def parse_setting(item: str, flag: str = "--set") -> Setting:
    """``section.key=value`` text from `flag` as a Setting; ConfigError if malformed."""
    target, eq, value = item.partition("=")
    section, dot, key = target.strip().partition(".")
    if not eq or not dot or not key.strip():
        raise ConfigError(f"{flag} {item!r}: expected section.key=value, e.g. lock.ttl=3s")
    if section not in SECTIONS:
        raise ConfigError(
            f"{flag} {item!r}: unknown section {section!r}; sections are {', '.join(SECTIONS)}"
        )
    return Setting(section, key.strip(), value, f"{flag} {target.strip()}", from_text=True)


def build_options(
    cls: type,
    raw: Mapping[str, _Entry],
    errors: _Errors,
    section: str,
    what: str,
    also_allowed: Iterable[str] = (),
) -> Any:
    """Instantiate attrs class `cls` from `raw`; None (with errors added) if it cannot.
    `also_allowed` are the section's other keys, listed in an unknown-key message."""
    types_ = field_types(cls)
    kwargs: dict[str, Any] = {}
    failed = False
    for key, entry in raw.items():
        if key not in types_ and entry.ignorable:
            log.debug("%s: ignored (a Kubernetes Service variable, not a key of %s)", entry.origin, what)
            continue
        if key not in types_:
            allowed = ", ".join(sorted(set(types_) | set(also_allowed))) or "(no keys)"
            errors.add(_where(entry.origin, section, key), f"unknown key for {what}; allowed keys: {allowed}")
            failed = True
            continue
        try:
            kwargs[key] = convert(types_[key], entry.value, from_text=entry.from_text)
        except ValueError as exc:
            errors.add(_where(entry.origin, section, key), str(exc))
            failed = True
    if failed:
        return None
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        guessed = _guess_key(exc, types_)
        if guessed is not None and guessed in raw:
            where = _where(raw[guessed].origin, section, guessed)
        else:
            where = f"[{section}]" + (f" {guessed}" if guessed else "")
        errors.add(where, str(exc.args[0]) if exc.args else str(exc))
        return None


def _where(origin: str, section: str, key: str) -> str:
    # Environment variables and --set already name the section and key.
    if origin.startswith(("environment ", "--set ", "-o ")):
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


def _read_file(path: str | os.PathLike[str]) -> Mapping[str, Any]:
    source = str(path)
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
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


Layers = dict[str, dict[str, _Entry]]


def _add_tables(
    layers: Layers, origin: str, mapping: Mapping[str, Any], errors: _Errors, env: Mapping[str, str]
) -> None:
    for section, body in mapping.items():
        if section not in SECTIONS:
            errors.add(f"{origin} [{section}]", f"unknown section; sections are {', '.join(SECTIONS)}")
        elif not isinstance(body, Mapping):
            errors.add(f"{origin} [{section}]", "must be a table")
        else:
            for key, value in body.items():
                try:
                    value = expand(value, env)
                except KeyError as exc:
                    errors.add(
                        _where(origin, section, key),
                        f"${{{exc.args[0]}}} is not set in the environment "
                        f"(write ${{{exc.args[0]}:-default}} for a fallback, $${{ for a literal ${{)",
                    )
                    continue
                layers[section][key] = _Entry(value, origin, False)


def expand(value: Any, env: Mapping[str, str]) -> Any:
    """`value` with ${NAME} and ${NAME:-default} replaced in every string it
    holds (lists and tables too); KeyError(NAME) when NAME is unset and has no default."""
    if isinstance(value, str):
        if "$" not in value:
            return value

        def substitute(match: re.Match[str]) -> str:
            if match.group(0) == "$${":
                return "${"
            name, fallback = match.group(1), match.group(3)
            if name in env:
                return env[name]
            if fallback is not None:
                return fallback
            raise KeyError(name)

        return _REFERENCE.sub(substitute, value)
    if isinstance(value, list):
        return [expand(v, env) for v in value]
    if isinstance(value, Mapping):
        return {k: expand(v, env) for k, v in value.items()}
    return value


def _add_environment(layers: Layers, env: Mapping[str, str]) -> None:
    for name, value in env.items():
        if not name.startswith("HEDGEPLUG_"):
            continue
        section, _, key = name[len("HEDGEPLUG_"):].lower().partition("_")
        if section in SECTIONS and key:  # other HEDGEPLUG_* variables are not config
            ignorable = SERVICE_VARIABLE.fullmatch(name) is not None
            layers[section][key] = _Entry(value, f"environment {name}", True, ignorable)


def _add_settings(layers: Layers, settings: Iterable[str | Setting], errors: _Errors) -> None:
    given: dict[tuple[str, str], str] = {}
    for item in settings:
        if isinstance(item, str):
            try:
                item = parse_setting(item)
            except ConfigError as exc:
                errors.lines.append(str(exc))
                continue
        target = (item.section, item.key)
        if target in given:
            errors.add(
                f"[{item.section}] {item.key}",
                f"set by both {given[target]} and {item.origin}; give it once",
            )
            continue
        given[target] = item.origin
        layers[item.section][item.key] = _Entry(item.value, item.origin, item.from_text)


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    data: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | Iterable[str | Setting] | None = None,
    registry: Any = None,
) -> Config:
    """Read, merge and validate a configuration.

    `path`: a TOML file; `data`: a dict shaped like the file (used when
    embedding); `env`: defaults to os.environ; `overrides`: "section.key=value"
    texts, typed `Setting`s, or a mapping of "section.key" to text.
    """
    from ..registry import Registry

    registry = registry or Registry.load()
    source = str(path) if path is not None else "(defaults)"
    errors = _Errors(source)
    layers: Layers = {s: {} for s in SECTIONS}
    environment = os.environ if env is None else env
    if path is not None:
        _add_tables(layers, source, _read_file(path), errors, environment)
    _add_tables(layers, "(data)", data or {}, errors, environment)
    _add_environment(layers, environment)
    if isinstance(overrides, Mapping):
        overrides = [f"{k}={v}" for k, v in overrides.items()]
    _add_settings(layers, overrides or (), errors)

    core = {
        name: build_options(cls, layers[name], errors, name, f"[{name}]")
        for name, cls in CORE_SECTIONS.items()
    }
    sections: dict[str, Section | None] = {}
    missing_plugin = False
    for kind in PLUGIN_KINDS:
        sections[kind], missing = _plugin_section(kind, layers[kind], registry, errors)
        missing_plugin = missing_plugin or missing
    if missing_plugin:
        errors.lines.extend(registry.failure_lines())
    errors.raise_if_any()
    return Config(source=source, **core, **sections)  # type: ignore[arg-type]


def _plugin_section(
    kind: str, raw: Mapping[str, _Entry], registry: Any, errors: _Errors
) -> tuple[Section | None, bool]:
    """Core keys into the kind's core class, the rest into the plugin's
    options class: the same for every plugin section. Second item: the
    chosen plugin is not installed."""
    core_cls = CORE_SETTINGS[kind]
    core_names = [f.name for f in attrs.fields(core_cls)]
    core = build_options(
        core_cls, {k: v for k, v in raw.items() if k in core_names}, errors, kind, f"[{kind}]"
    )
    if core is None:
        return None, False
    use_origin = raw["use"].origin if "use" in raw else "(default)"
    if not core.use:
        errors.add(f"{use_origin} [{kind}] use", f"expected the name of a {kind} implementation, got ''")
        return None, False
    impl = registry.find(kind, core.use)
    if impl is None:
        errors.add(_where(use_origin, kind, "use"), registry.missing_message(kind, core.use))
        return None, True
    options = build_options(
        impl.options,
        {k: v for k, v in raw.items() if k not in core_names},
        errors,
        kind,
        f"{kind} {core.use!r} ({impl.distribution})",
        core_names,
    )
    if options is None:
        return None, False
    return Section(core.use, options, core), False
