"""Observer hooks called through pluggy, each implementation guarded.

Every plugin is registered through a proxy: registration hooks are passed on
unchanged, observer hooks are wrapped in a guard that keeps the hookimpl's
options (tryfirst, trylast, hookwrapper, wrapper), so pluggy orders and wraps
them exactly as a pluggy user expects. An observer that raises is logged with
its plugin's name and switched off for the node whose `Observers` made the
call; the other observers of that call still run and the node goes on.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import types
from collections.abc import Callable, Generator
from typing import Any

import pluggy

log = logging.getLogger("hedgeplug.registry")

OBSERVER_HOOKS = (
    "hedgeplug_node_started",
    "hedgeplug_leader_changed",
    "hedgeplug_members_changed",
    "hedgeplug_member_updated",
    "hedgeplug_node_stopping",
    "hedgeplug_store_call",
    "hedgeplug_messaging_call",
    "hedgeplug_http_routes",
)

# The Observers of the node whose call is under way (each node disables its own).
_calling: contextvars.ContextVar[Observers | None] = contextvars.ContextVar(
    "hedgeplug_observers", default=None
)


class Observers:
    """Calls observer hooks for one node; what raised stays off for this node."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self._pm = pm
        self._disabled: set[str] = set()
        self.errors = 0

    def call(self, hook_name: str, **kwargs: Any) -> list[Any]:
        """Call every implementation; returns what they returned (None left out)."""
        token = _calling.set(self)
        try:
            return getattr(self._pm.hook, hook_name)(**kwargs)  # type: ignore[no-any-return]
        finally:
            _calling.reset(token)

    def wants(self, hook_name: str) -> bool:
        """Whether any plugin implements `hook_name`: a node skips the timing
        hooks' clock readings and calls when none does."""
        return bool(getattr(self._pm.hook, hook_name).get_hookimpls())

    def _enabled(self, key: str) -> bool:
        return key not in self._disabled

    def _failed(self, key: str, hook_name: str, who: str, why: str | None = None) -> None:
        self.errors += 1
        self._disabled.add(key)
        if why is None:
            log.exception("observer %s of plugin %s raised; disabled for this node", hook_name, who)
        else:
            log.error("observer %s of plugin %s %s; disabled for this node", hook_name, who, why)


def _guard(function: Callable[..., Any], hook_name: str, who: str) -> Callable[..., Any]:
    key = f"{who}:{hook_name}:{id(function)}"

    @functools.wraps(function)
    def guarded(*args: Any) -> Any:
        observers = _calling.get()
        if observers is None:  # called outside Observers.call: no node to disable it for
            return function(*args)
        if not observers._enabled(key):
            return None
        try:
            return function(*args)
        except Exception:
            observers._failed(key, hook_name, who)
            return None

    return guarded


def _guard_wrapper(function: Callable[..., Any], hook_name: str, who: str) -> Callable[..., Any]:
    """Guard a (new- or old-style) hook wrapper: a generator that yields once."""
    key = f"{who}:{hook_name}:{id(function)}"

    @functools.wraps(function)
    def guarded(*args: Any) -> Generator[None, Any, Any]:
        observers = _calling.get()
        if observers is not None and not observers._enabled(key):
            return (yield)
        inner: Generator[None, Any, Any] | None = None
        try:
            inner = function(*args)
            next(inner)  # type: ignore[arg-type]
        except StopIteration:
            inner = None
            if observers is not None:
                observers._failed(key, hook_name, who, "returned without yielding")
        except Exception:
            inner = None
            if observers is None:
                raise
            observers._failed(key, hook_name, who)
        outcome = yield
        if inner is None:
            return outcome
        try:
            inner.send(outcome)
        except StopIteration as stop:
            return stop.value
        except Exception:
            if observers is None:
                raise
            observers._failed(key, hook_name, who)
            return outcome
        inner.close()
        if observers is not None:
            observers._failed(key, hook_name, who, "yielded more than once")
        return outcome

    return guarded


def guarded_proxy(pm: pluggy.PluginManager, plugin: Any, name: str, distribution: str) -> Any:
    """An object with `plugin`'s hook implementations, observer hooks guarded."""
    who = f"{name} ({distribution})"
    proxy = types.SimpleNamespace(__name__=name)
    for attr in dir(plugin):
        if pm.parse_hookimpl_opts(plugin, attr) is None:
            continue
        function = getattr(plugin, attr)
        opts = getattr(function, "hedgeplug_impl", {})
        if attr in OBSERVER_HOOKS:
            wraps = opts.get("hookwrapper") or opts.get("wrapper")
            if wraps and not inspect.isgeneratorfunction(function):
                raise TypeError(f"hook wrapper {attr} is not a generator function")
            function = (_guard_wrapper if wraps else _guard)(function, attr, who)
        setattr(proxy, attr, function)
    return proxy
