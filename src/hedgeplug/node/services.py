"""The services a node runs beside its plugins: the state layer (caches, and
whatever else is built on the agreed view), by kind and name.

A service runs as a task of the node, hands its state off on a graceful stop
(bounded by a share of [node] stop_timeout, before the node leaves the
membership, so other members still answer), is dropped at once on a crash,
and reports counters for `status --json`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import anyio
from anyio.abc import TaskGroup

from ..errors import HedgeplugError


class Service(Protocol):
    async def run(self) -> None: ...

    async def close(self, timeout: float | None = None) -> None: ...

    def abandon(self) -> None: ...

    def stats(self) -> dict[str, Any]: ...


S = TypeVar("S", bound=Service)


class Services:
    """Every service of one node, by kind ("caches", ...) and name."""

    def __init__(self, task_group: Callable[[], TaskGroup | None]) -> None:
        self._task_group = task_group
        self._by_kind: dict[str, dict[str, Service]] = {}

    def attach(self, kind: str, name: str, make: Callable[[], S]) -> S:
        """The running service `kind`/`name`, made and started on first use."""
        named = self._by_kind.setdefault(kind, {})
        existing = named.get(name)
        if existing is not None:
            return existing  # type: ignore[return-value]
        tg = self._task_group()
        if tg is None:
            raise HedgeplugError(f"{kind} {name!r}: the node is not running (use it inside open_node)")
        service = make()
        named[name] = service
        tg.start_soon(service.run)
        return service

    async def close_all(self, timeout: float) -> None:
        services = [s for named in self._by_kind.values() for s in named.values()]
        if not services:
            return
        async with anyio.create_task_group() as tg:
            for service in services:
                tg.start_soon(service.close, timeout)

    def abandon_all(self) -> None:
        for named in self._by_kind.values():
            for service in named.values():
                service.abandon()

    def stats(self) -> dict[str, dict[str, Any]]:
        return {
            kind: {name: service.stats() for name, service in sorted(named.items())}
            for kind, named in sorted(self._by_kind.items())
        }
