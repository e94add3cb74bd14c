"""Plugin manager: loads the `hedgeplug` entry points, collects registrations
per kind and name, and calls observers without letting them hurt the node.

Built-in implementations are entry points of this very distribution, so they
go through exactly the same path as third-party plugins.

HEDGEPLUG_LOAD_PLUGINS limits which entry points load: a comma-separated list
of entry-point names, or empty to load none (to get past a broken plugin).
"""

from __future__ import annotations

import importlib.metadata as md
import logging
import os
from collections.abc import Callable, Iterable
from typing import Any

import attrs
import pluggy

from . import hookspecs
from .errors import PluginError

log = logging.getLogger("hedgeplug.registry")

KINDS = ("lock", "transport", "membership", "broadcast")
_REGISTER_HOOKS = {
    "lock": "hedgeplug_register_locks",
    "transport": "hedgeplug_register_transports",
    "membership": "hedgeplug_register_memberships",
    "broadcast": "hedgeplug_register_broadcasts",
}
ENTRY_POINT_GROUP = "hedgeplug"


@attrs.frozen
class Implementation:
    """One registered implementation: what `use = "<name>"` in section `kind` picks."""

    kind: str
    name: str
    factory: Callable[[Any, Any], Any]
    options: type
    distribution: str
    version: str
    plugin: str

    def to_json(self) -> dict[str, str]:
        return {
            "kind": self.kind,
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "plugin": self.plugin,
            "options": ", ".join(f.name for f in attrs.fields(self.options)),
        }


@attrs.frozen
class LoadFailure:
    """A plugin that could not be imported or registered."""

    entry_point: str
    distribution: str
    error: str


@attrs.define
class _Origin:
    distribution: str
    version: str
    name: str


class Registry:
    """All installed implementations, by kind and name."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("hedgeplug")
        self.pm.add_hookspecs(hookspecs)
        self._impls: dict[tuple[str, str], Implementation] = {}
        self._origins: dict[int, _Origin] = {}
        self.failures: list[LoadFailure] = []

    # ------------------------------------------------------------ loading

    @classmethod
    def load(cls, *, only: Iterable[str] | None = None, extra: Iterable[Any] = ()) -> Registry:
        """Load entry points (all, or those named in `only` / HEDGEPLUG_LOAD_PLUGINS)
        plus `extra` plugin objects (used by tests and the simulator)."""
        reg = cls()
        if only is None:
            env = os.environ.get("HEDGEPLUG_LOAD_PLUGINS")
            if env is not None:
                only = [p.strip() for p in env.split(",") if p.strip()]
        wanted = None if only is None else set(only)
        for ep in md.entry_points(group=ENTRY_POINT_GROUP):
            if wanted is not None and ep.name not in wanted:
                continue
            dist = ep.dist.name if ep.dist else "unknown"
            version = ep.dist.version if ep.dist else "?"
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken plugin must not take the others down
                reg.failures.append(LoadFailure(ep.name, dist, f"{type(exc).__name__}: {exc}"))
                log.warning("error importing plugin %r from %s: %s", ep.name, dist, exc)
                continue
            reg.add_plugin(plugin, name=ep.name, distribution=dist, version=version)
        for i, plugin in enumerate(extra):
            reg.add_plugin(plugin, name=getattr(plugin, "__name__", f"extra-{i}"))
        reg._collect()
        return reg

    def add_plugin(
        self, plugin: Any, *, name: str, distribution: str = "(in process)", version: str = ""
    ) -> None:
        if self.pm.is_registered(plugin):
            return
        try:
            self.pm.register(plugin, name=name)
        except Exception as exc:
            self.failures.append(LoadFailure(name, distribution, f"{type(exc).__name__}: {exc}"))
            log.warning("plugin %r from %s rejected: %s", name, distribution, exc)
            return
        self._origins[id(plugin)] = _Origin(distribution, version, name)

    def _collect(self) -> None:
        for kind, hook_name in _REGISTER_HOOKS.items():
            caller = getattr(self.pm.hook, hook_name)
            for impl in caller.get_hookimpls():
                origin = self._origins.get(id(impl.plugin), _Origin("unknown", "", impl.plugin_name))
                try:
                    impl.function(register=self._registrar(kind, origin))
                except PluginError as exc:
                    self.failures.append(LoadFailure(origin.name, origin.distribution, str(exc)))
                except Exception as exc:
                    self.failures.append(
                        LoadFailure(origin.name, origin.distribution, f"{type(exc).__name__}: {exc}")
                    )
                    log.warning("plugin %r from %s failed to register: %s", origin.name, origin.distribution, exc)

    def _registrar(self, kind: str, origin: _Origin) -> Callable[..., None]:
        def register(name: str, factory: Callable[[Any, Any], Any], options: type) -> None:
            if not attrs.has(options):
                raise PluginError(
                    f"{origin.distribution}: {kind} {name!r} registered options {options!r}, "
                    "which is not an attrs class"
                )
            key = (kind, name)
            if key in self._impls:
                other = self._impls[key]
                raise PluginError(
                    f"{kind} {name!r} is registered twice: by {other.distribution} "
                    f"(plugin {other.plugin!r}) and by {origin.distribution} (plugin {origin.name!r})"
                )
            self._impls[key] = Implementation(
                kind, name, factory, options, origin.distribution, origin.version, origin.name
            )

        return register

    # ------------------------------------------------------------ lookup

    def get(self, kind: str, name: str) -> Implementation:
        if kind not in KINDS:
            raise PluginError(f"unknown plugin kind {kind!r}; kinds are {', '.join(KINDS)}")
        try:
            return self._impls[(kind, name)]
        except KeyError:
            raise PluginError(self._missing_message(kind, name)) from None

    def find(self, kind: str, name: str) -> Implementation | None:
        return self._impls.get((kind, name))

    def names(self, kind: str) -> list[str]:
        return sorted(n for (k, n) in self._impls if k == kind)

    def implementations(self) -> list[Implementation]:
        return sorted(self._impls.values(), key=lambda i: (KINDS.index(i.kind), i.name))

    def _missing_message(self, kind: str, name: str, *, with_failures: bool = True) -> str:
        installed = self.names(kind)
        msg = f"no {kind} named {name!r} is installed"
        if installed:
            msg += f"; installed {kind} implementations: {', '.join(installed)}"
        else:
            msg += f"; no {kind} implementation is installed at all"
        hint = {
            "postgres": "hedgeplug-postgres",
            "etcd": "hedgeplug-etcd",
            "spanner": "hedgeplug-spanner",
        }.get(name)
        if hint:
            msg += f" (the distribution {hint} provides it: pip install {hint})"
        if with_failures:
            msg += "".join("\n  " + line for line in self.failure_lines())
        return msg

    def missing_message(self, kind: str, name: str) -> str:
        """Why `use = name` in section `kind` cannot be satisfied (without load failures)."""
        return self._missing_message(kind, name, with_failures=False)

    def failure_lines(self) -> list[str]:
        return [
            f"plugin {f.entry_point!r} from {f.distribution} failed to load: {f.error}"
            for f in self.failures
        ]

    # ------------------------------------------------------------ observers

    def observers(self) -> Observers:
        return Observers(self.pm, self._origins)


class Observers:
    """Calls observer hooks one implementation at a time.

    An implementation that raises is logged with its plugin's name and not
    called again by this node.
    """

    def __init__(self, pm: pluggy.PluginManager, origins: dict[int, _Origin]) -> None:
        self._pm = pm
        self._origins = origins
        self._disabled: set[tuple[str, int]] = set()
        self.errors = 0

    def call(self, hook_name: str, **kwargs: Any) -> None:
        caller = getattr(self._pm.hook, hook_name)
        for impl in caller.get_hookimpls():
            key = (hook_name, id(impl.function))
            if key in self._disabled:
                continue
            try:
                impl.function(**{a: kwargs[a] for a in impl.argnames})
            except Exception:
                self.errors += 1
                self._disabled.add(key)
                origin = self._origins.get(id(impl.plugin))
                who = f"{origin.name} ({origin.distribution})" if origin else impl.plugin_name
                log.exception("observer %s of plugin %s raised; disabled for this node", hook_name, who)

