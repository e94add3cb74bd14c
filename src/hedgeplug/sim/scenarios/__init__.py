"""Named, parameterised scenario recipes.

A scenario is a small module with:

    NAME = "leader-kill"
    DESCRIPTION = "one line"
    PARAMS = {"size": (10, "nodes before the first kill"), ...}   # default, help
    async def run(sim, *, size, ...): ...                           # drives a Simulation

The built-in ones live beside this file; a user passes a path to their own
module file instead of a name. Parameters arrive as "key=value" strings and
are converted to the type of their default.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Awaitable, Callable, Sequence
from types import ModuleType
from typing import Any

import attrs

from hedgeplug.errors import HedgeplugError

BUILTIN = {
    "scale-up": "scale_up",
    "spiky": "spiky",
    "churn": "churn",
    "leader-kill": "leader_kill",
    "leader-freeze": "leader_freeze",
    "store-outage": "store_outage",
    "partition-heal": "partition_heal",
    "mass-crash": "mass_crash",
    "cache-scale-up": "cache_scale_up",
    "cache-spiky": "cache_spiky",
    "cache-partition": "cache_partition",
    "semaphore-faults": "semaphore_faults",
    "kv-faults": "kv_faults",
}


@attrs.frozen
class ScenarioSpec:
    name: str
    description: str
    params: dict[str, tuple[Any, str]]
    run: Callable[..., Awaitable[None]]
    source: str

    def bind(self, overrides: Sequence[str] | dict[str, Any] = ()) -> dict[str, Any]:
        """Defaults with `overrides` ("key=value" strings or a dict) applied and typed."""
        values = {key: default for key, (default, _help) in self.params.items()}
        items = overrides.items() if isinstance(overrides, dict) else [_split(o) for o in overrides]
        for key, raw in items:
            if key not in self.params:
                allowed = ", ".join(sorted(self.params)) or "(none)"
                raise HedgeplugError(
                    f"scenario {self.name!r} has no parameter {key!r}; parameters: {allowed}"
                )
            values[key] = _convert(self.name, key, self.params[key][0], raw)
        return values


def _split(item: str) -> tuple[str, str]:
    key, eq, value = item.partition("=")
    if not eq or not key.strip():
        raise HedgeplugError(f"scenario parameter {item!r} is not key=value (e.g. k=50)")
    return key.strip(), value.strip()


def _convert(scenario: str, key: str, default: Any, raw: Any) -> Any:
    if not isinstance(raw, str):
        return raw
    try:
        if isinstance(default, bool):
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError
            return raw.lower() in ("1", "true", "yes", "on")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
    except ValueError:
        kind = "true or false" if isinstance(default, bool) else type(default).__name__
        raise HedgeplugError(
            f"scenario {scenario!r} parameter {key!r} expects {kind}, got {raw!r}"
        ) from None
    return raw


def _from_module(module: ModuleType, source: str) -> ScenarioSpec:
    missing = [a for a in ("NAME", "run") if not hasattr(module, a)]
    if missing:
        raise HedgeplugError(f"scenario module {source} lacks {', '.join(missing)}")
    return ScenarioSpec(
        name=module.NAME,
        description=getattr(module, "DESCRIPTION", ""),
        params=dict(getattr(module, "PARAMS", {})),
        run=module.run,
        source=source,
    )


def load_scenario(name_or_path: str) -> ScenarioSpec:
    """A built-in scenario by name, or a user's scenario module by file path."""
    if name_or_path in BUILTIN:
        module = importlib.import_module(f"{__name__}.{BUILTIN[name_or_path]}")
        return _from_module(module, name_or_path)
    if name_or_path.endswith(".py") or os.sep in name_or_path:
        if not os.path.isfile(name_or_path):
            raise HedgeplugError(f"scenario file {name_or_path} does not exist")
        spec = importlib.util.spec_from_file_location("hedgeplug_user_scenario", name_or_path)
        if spec is None or spec.loader is None:
            raise HedgeplugError(f"scenario file {name_or_path} cannot be imported")
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            raise HedgeplugError(
                f"scenario file {name_or_path} failed to import: {type(exc).__name__}: {exc}"
            ) from exc
        return _from_module(module, name_or_path)
    raise HedgeplugError(
        f"no scenario named {name_or_path!r}; built-in scenarios: {', '.join(BUILTIN)} "
        "(or give the path of a scenario .py file)"
    )


def builtin_scenarios() -> list[ScenarioSpec]:
    return [load_scenario(name) for name in BUILTIN]
