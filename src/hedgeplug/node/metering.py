"""The timing hooks of one node: store calls, send and broadcast.

A node asks once, when it is built, whether any plugin implements
`hedgeplug_store_call` / `hedgeplug_messaging_call`. When none does, the
lock goes to the election unwrapped and `send`/`broadcast` run without a
clock reading: the cost is one attribute test per call. Times come from the
node's clock (anyio.current_time), so the simulator's runs stay replayable.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any, TypeVar, cast

import anyio

from ..lease_keys import takes_fingerprints
from ..registry import Observers

Report = Callable[[str, float, "str | None"], None]
F = TypeVar("F", bound=Callable[..., Any])

STORE_OPERATIONS = ("acquire", "renew", "release", "current")


def error_kind(exc: BaseException) -> str:
    """How a failed call is named to the timing hooks."""
    if isinstance(exc, anyio.get_cancelled_exc_class()):
        return "cancelled"
    if type(exc) is TimeoutError:
        return "timeout"
    return type(exc).__name__


async def timed(operation: str, call: Awaitable[Any], report: Report) -> Any:
    """Await `call`, then report how long it took and how it ended."""
    started = anyio.current_time()
    error: str | None = "cancelled"
    try:
        result = await call
        error = None
        return result
    except Exception as exc:
        error = error_kind(exc)
        raise
    finally:
        report(operation, anyio.current_time() - started, error)


async def timed_stream(operation: str, items: AsyncIterator[Any], report: Report) -> AsyncIterator[Any]:
    """Yield what `items` yields; report once it is exhausted, failed or closed."""
    started = anyio.current_time()
    error: str | None = "closed"
    try:
        async with aclosing(items):  # type: ignore[type-var]
            async for item in items:
                yield item
        error = None
    except GeneratorExit:
        raise
    except Exception as exc:
        error = error_kind(exc)
        raise
    except BaseException:
        error = "cancelled"
        raise
    finally:
        report(operation, anyio.current_time() - started, error)


class MeteredLock:
    """The lock backend as the election sees it when store calls are observed:
    every contract call is timed; anything else (watch, rows) is the backend's own."""

    def __init__(self, lock: Any, report: Report) -> None:
        self._lock = lock
        self._report = report
        if takes_fingerprints(lock):
            # Offer the keyword exactly when the backend takes it (lease_keys asks).
            self.acquire = self._acquire_fingerprinted  # type: ignore[method-assign]

    async def acquire(self, holder: str, address: str, ttl: float) -> Any:
        return await timed("acquire", self._lock.acquire(holder, address, ttl), self._report)

    async def _acquire_fingerprinted(
        self, holder: str, address: str, ttl: float, *, fingerprint: str = ""
    ) -> Any:
        call = self._lock.acquire(holder, address, ttl, fingerprint=fingerprint)
        return await timed("acquire", call, self._report)

    async def renew(self, lease: Any, ttl: float) -> Any:
        return await timed("renew", self._lock.renew(lease, ttl), self._report)

    async def release(self, lease: Any) -> None:
        await timed("release", self._lock.release(lease), self._report)

    async def current(self) -> Any:
        return await timed("current", self._lock.current(), self._report)

    async def aclose(self) -> None:
        await self._lock.aclose()

    def __getattr__(self, name: str) -> Any:  # watch() only when the backend has it
        return getattr(self._lock, name)


class Meter:
    """Calls the timing hooks of one node, only when a plugin implements them."""

    def __init__(self, observers: Observers, node: Any) -> None:
        self._observers = observers
        self._node = node
        self.store = observers.wants("hedgeplug_store_call")
        self.messaging = observers.wants("hedgeplug_messaging_call")

    def lock(self, lock: Any) -> Any:
        """The lock the election should call: `lock` itself unless store calls are observed."""
        return MeteredLock(lock, self.store_call) if self.store else lock

    def store_call(self, operation: str, seconds: float, error: str | None) -> None:
        self._observers.call(
            "hedgeplug_store_call", node=self._node, operation=operation, seconds=seconds, error=error
        )

    def messaging_call(self, operation: str, seconds: float, error: str | None) -> None:
        self._observers.call(
            "hedgeplug_messaging_call", node=self._node, operation=operation, seconds=seconds, error=error
        )


def metered_call(operation: str) -> Callable[[F], F]:
    """Decorate a Node coroutine method so its duration reaches `hedgeplug_messaging_call`."""

    def decorate(method: F) -> F:
        @functools.wraps(method)
        async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            meter: Meter = self._meter
            if not meter.messaging:
                return await method(self, *args, **kwargs)
            return await timed(operation, method(self, *args, **kwargs), meter.messaging_call)

        return cast(F, wrapper)

    return decorate


def metered_stream(operation: str) -> Callable[[F], F]:
    """Decorate a Node async-generator method the same way (timed until its last item)."""

    def decorate(method: F) -> F:
        @functools.wraps(method)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            items = method(self, *args, **kwargs)
            meter: Meter = self._meter
            if not meter.messaging:
                return items  # type: ignore[no-any-return]
            return timed_stream(operation, items, meter.messaging_call)

        return cast(F, wrapper)

    return decorate
