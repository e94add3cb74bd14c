"""Plugin manager: loads the `hedgeplug` entry points, collects registrations
per kind and name, and calls observers without letting them hurt the node.

Built-in implementations are entry points of this very distribution, so they
go through exactly the same path as third-party plugins.

Two registrations of the same kind and name are a conflict: neither is
selectable, and selecting that name fails with a message naming both
distributions. `Implementation.create` builds an implementation and checks
it against its kind's contract (hedgeplug.contracts), so a factory that
returns None or an object missing methods fails at once with the plugin named.

HEDGEPLUG_LOAD_PLUGINS limits which plugins load (to get past a broken one):
a comma-separated list of the names `hedgeplug plugins` shows, that is
implementation names (``memory`` loads whichever plugins provide an
implementation named memory), entry-point names or distribution names; empty
loads none. A name nothing installed provides is an error that lists the
names that exist. When every listed name is an entry-point or distribution
name, no other plugin is even imported; an implementation name is resolved by
importing the other plugins (one that fails to import is then just skipped).
"""

from __future__ import annotations

import importlib.metadata as md
import logging
import os
from collections.abc import Callable, Iterable
from typing import Any

import attrs
import pluggy

from . import contracts, hookspecs
from .errors import PluginError
from .observers import Observers, guarded_proxy

__all__ = ["KINDS", "Implementation", "LoadFailure", "Observers", "Registry"]

log = logging.getLogger("hedgeplug.registry")

KINDS = ("lock", "transport", "membership", "broadcast")
_REGISTER_HOOKS = {
    "lock": "hedgeplug_register_locks",
    "transport": "hedgeplug_register_transports",
    "membership": "hedgeplug_register_memberships",
    "broadcast": "hedgeplug_register_broadcasts",
}
CONTRACTS: dict[str, type] = {
    "lock": contracts.LockBackend,
    "transport": contracts.Transport,
    "membership": contracts.Membership,
    "broadcast": contracts.Broadcast,
}
ENTRY_POINT_GROUP = "hedgeplug"
LOAD_PLUGINS_ENV = "HEDGEPLUG_LOAD_PLUGINS"


def _contract_methods(protocol: type) -> list[str]:
    """The public methods a Protocol class declares (its own and its protocol bases')."""
    names: list[str] = []
    for base in reversed(protocol.__mro__):
        if base is object or not getattr(base, "_is_protocol", False):
            continue
        for name, value in vars(base).items():
            if not name.startswith("_") and callable(value) and name not in names:
                names.append(name)
    return names


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

    def create(self, options: Any, context: Any) -> Any:
        """Call the factory and check the result against the kind's contract."""
        made = self.factory(options, context)
        contract = CONTRACTS[self.kind]
        if made is None:
            raise PluginError(
                f"{self.distribution}: the factory of {self.kind} {self.name!r} returned None "
                f"instead of a {contract.__name__}"
            )
        missing = [m for m in _contract_methods(contract) if not callable(getattr(made, m, None))]
        if missing:
            raise PluginError(
                f"{self.distribution}: {self.kind} {self.name!r} built a "
                f"{type(made).__name__} that is not a {contract.__name__}: it lacks "
                + ", ".join(f"{m}()" for m in missing)
            )
        return made

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


def _wanted_from_env(only: Iterable[str] | None) -> list[str] | None:
    if only is not None:
        return list(only)
    env = os.environ.get(LOAD_PLUGINS_ENV)
    if env is None:
        return None
    return [p.strip() for p in env.split(",") if p.strip()]


def _dist_of(ep: md.EntryPoint) -> tuple[str, str]:
    return (ep.dist.name, ep.dist.version) if ep.dist else ("unknown", "?")


def _provided_names(plugin: Any) -> set[str]:
    """Implementation names a plugin registers, found with a scratch plugin manager."""
    pm = pluggy.PluginManager("hedgeplug")
    pm.add_hookspecs(hookspecs)
    pm.register(plugin)
    names: set[str] = set()
    for hook_name in _REGISTER_HOOKS.values():
        getattr(pm.hook, hook_name)(register=lambda name, *_a, **_k: names.add(name))
    return names


class Registry:
    """All installed implementations, by kind and name."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("hedgeplug")
        self.pm.add_hookspecs(hookspecs)
        self._impls: dict[tuple[str, str], Implementation] = {}
        self._conflicts: dict[tuple[str, str], list[_Origin]] = {}
        self._origins: dict[int, _Origin] = {}
        self._proxies: dict[int, Any] = {}
        self.failures: list[LoadFailure] = []

    # ------------------------------------------------------------ loading

    @classmethod
    def load(cls, *, only: Iterable[str] | None = None, extra: Iterable[Any] = ()) -> Registry:
        """Load entry points (all, or those `only` / HEDGEPLUG_LOAD_PLUGINS select)
        plus `extra` plugin objects (used by tests and the simulator)."""
        reg = cls()
        eps = list(md.entry_points(group=ENTRY_POINT_GROUP))
        wanted = _wanted_from_env(only)
        loaded: dict[str, Any] = {}  # entry-point name -> plugin object
        if wanted is None:
            selected = eps
        else:
            selected, loaded = reg._select(eps, wanted)
        for ep in selected:
            dist, version = _dist_of(ep)
            plugin = loaded.get(ep.name)
            if plugin is None:
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

    def _select(
        self, eps: list[md.EntryPoint], wanted: list[str]
    ) -> tuple[list[md.EntryPoint], dict[str, Any]]:
        """The entry points `wanted` names, and the plugins imported to find out."""
        chosen = {ep.name for ep in eps if ep.name in wanted or _dist_of(ep)[0] in wanted}
        known = {ep.name for ep in eps} | {_dist_of(ep)[0] for ep in eps}
        by_impl = [w for w in wanted if w not in known]
        loaded: dict[str, Any] = {}
        provided: set[str] = set()
        if by_impl:
            for ep in eps:
                try:
                    plugin = ep.load()
                    names = _provided_names(plugin)
                except Exception as exc:  # only a selected plugin's failure is reported
                    log.info("plugin %r skipped while resolving %s: %s", ep.name, LOAD_PLUGINS_ENV, exc)
                    continue
                provided |= names
                if names & set(by_impl):
                    chosen.add(ep.name)
                    loaded[ep.name] = plugin
        unknown = [w for w in by_impl if w not in provided]
        if unknown:
            raise PluginError(
                f"{LOAD_PLUGINS_ENV} names {', '.join(map(repr, unknown))}, which no installed "
                f"plugin provides; implementations: {', '.join(sorted(provided)) or 'none'}; "
                f"entry points: {', '.join(sorted(ep.name for ep in eps)) or 'none'}; "
                f"distributions: {', '.join(sorted({_dist_of(ep)[0] for ep in eps})) or 'none'}"
            )
        return [ep for ep in eps if ep.name in chosen], loaded

    def add_plugin(
        self, plugin: Any, *, name: str, distribution: str = "(in process)", version: str = ""
    ) -> None:
        """Register one plugin object; its observer hooks are registered guarded."""
        if id(plugin) in self._proxies:
            return
        try:
            proxy = guarded_proxy(self.pm, plugin, name, distribution)
            self.pm.register(proxy, name=name)
        except Exception as exc:
            self.failures.append(LoadFailure(name, distribution, f"{type(exc).__name__}: {exc}"))
            log.warning("plugin %r from %s rejected: %s", name, distribution, exc)
            return
        self._proxies[id(plugin)] = (plugin, proxy)  # holding `plugin` keeps its id unique
        self._origins[id(proxy)] = _Origin(distribution, version, name)

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
        for (kind, name), origins in self._conflicts.items():
            last = origins[-1]
            self.failures.append(
                LoadFailure(last.name, last.distribution, self._conflict_message(kind, name))
            )

    def _registrar(self, kind: str, origin: _Origin) -> Callable[..., None]:
        def register(name: str, factory: Callable[[Any, Any], Any], options: type) -> None:
            if not attrs.has(options):
                raise PluginError(
                    f"{origin.distribution}: {kind} {name!r} registered options {options!r}, "
                    "which is not an attrs class"
                )
            key = (kind, name)
            if key in self._impls:
                other = self._impls.pop(key)
                self._conflicts[key] = [_Origin(other.distribution, other.version, other.plugin)]
            if key in self._conflicts:
                self._conflicts[key].append(origin)
                return
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
        """The implementation, or None when missing or in conflict (see missing_message)."""
        return self._impls.get((kind, name))

    def names(self, kind: str) -> list[str]:
        return sorted(n for (k, n) in self._impls if k == kind)

    def implementations(self) -> list[Implementation]:
        return sorted(self._impls.values(), key=lambda i: (KINDS.index(i.kind), i.name))

    def _conflict_message(self, kind: str, name: str) -> str:
        by = " and by ".join(
            f"{o.distribution} (plugin {o.name!r})" for o in self._conflicts[(kind, name)]
        )
        return (
            f"{kind} {name!r} is registered more than once, so none can be selected: by {by}; "
            "uninstall all but one of these distributions"
        )

    def _missing_message(self, kind: str, name: str, *, with_failures: bool = True) -> str:
        if (kind, name) in self._conflicts:
            return self._conflict_message(kind, name)
        installed = self.names(kind)
        msg = f"no {kind} named {name!r} is installed"
        if installed:
            msg += f"; installed {kind} implementations: {', '.join(installed)}"
        else:
            msg += f"; no {kind} implementation is installed at all"
        msg += (
            f" (if a plugin distribution provides it, install that; from the hedgeplug "
            f"repository: pip install ./plugins/hedgeplug-{name})"
        )
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
        """A fresh set of observers for one node: what one node disables stays its own."""
        return Observers(self.pm)
