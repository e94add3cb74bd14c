"""Running one blocking psycopg call in a worker thread without blocking the event loop.

The call holds the backend's CapacityLimiter(1) for its whole run, so one
connection is never used by two threads. When the caller's scope is cancelled
the running query is cancelled on the server (from yet another thread, since
sending a cancel request blocks too) and the caller is released as soon as the
worker thread has returned; statement_timeout bounds the case where even the
cancel request cannot get through.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import anyio

T = TypeVar("T")

CANCEL_REQUEST_BOUND = 2.0  # seconds we wait for the server to take a cancel request


async def run_cancellable(
    call: Callable[[], T],
    *,
    limiter: anyio.CapacityLimiter,
    cancel: Callable[[], None],
) -> T:
    """Run `call()` in a worker thread; `cancel()` is invoked if our caller gives up mid-call."""
    running = False
    abandoned = False
    outcome: list[tuple[bool, Any]] = []

    def in_thread() -> None:
        nonlocal running
        running = True
        try:
            outcome.append((True, call()))
        except BaseException as exc:  # handed back to the event loop below
            outcome.append((False, exc))
        finally:
            running = False

    async def cancel_if_abandoned() -> None:
        nonlocal abandoned
        try:
            await anyio.sleep_forever()
        finally:
            if running:
                abandoned = True
                with anyio.CancelScope(shield=True), anyio.move_on_after(CANCEL_REQUEST_BOUND):
                    await anyio.to_thread.run_sync(_quietly(cancel), abandon_on_cancel=True)

    async with anyio.create_task_group() as tg:
        tg.start_soon(cancel_if_abandoned)
        # Not abandonable: the call returns (or fails with "canceled") before we go on.
        await anyio.to_thread.run_sync(in_thread, limiter=limiter)
        running = False
        tg.cancel_scope.cancel()
    if abandoned:
        # Our caller was cancelled; whatever the call ended with (typically the
        # "canceled" error we caused) must not escape in place of the cancellation.
        await anyio.sleep_forever()
    ok, value = outcome[0]
    if ok:
        return value
    raise value


def _quietly(cancel: Callable[[], None]) -> Callable[[], None]:
    def attempt() -> None:
        try:
            cancel()
        except Exception:  # the query may have ended meanwhile; nothing to cancel then
            pass

    return attempt
