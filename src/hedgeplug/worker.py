"""Run one blocking call (a store client's query) in a worker thread without
blocking the event loop, and interrupt it when the caller gives up.

Blocking store clients never run on the event loop. The call holds
`limiter` for its whole run, so a connection guarded by a
CapacityLimiter(1) is never used by two threads at once. When the caller's
scope is cancelled mid-call, `interrupt()` is invoked (sqlite's
`Connection.interrupt`, a PostgreSQL cancel request...) and the caller is
released once the worker thread has returned; whatever the interrupted call
raised does not escape in place of the cancellation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import anyio

T = TypeVar("T")

INTERRUPT_BOUND = 2.0  # seconds a blocking interrupt (a cancel request) may take


async def run_in_worker(
    call: Callable[[], T],
    *,
    limiter: anyio.CapacityLimiter | None = None,
    interrupt: Callable[[], None] | None = None,
    interrupt_blocks: bool = False,
) -> T:
    """`call()` in a worker thread; `interrupt()` if our caller is cancelled meanwhile.

    `interrupt_blocks=True` runs the interrupt itself in another worker thread,
    bounded by INTERRUPT_BOUND (for clients whose cancel is a network request).
    """
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

    async def interrupt_if_abandoned() -> None:
        nonlocal abandoned
        try:
            await anyio.sleep_forever()
        finally:
            if running and interrupt is not None:
                abandoned = True
                if interrupt_blocks:
                    with anyio.CancelScope(shield=True), anyio.move_on_after(INTERRUPT_BOUND):
                        await anyio.to_thread.run_sync(_quietly(interrupt), abandon_on_cancel=True)
                else:
                    _quietly(interrupt)()

    async with anyio.create_task_group() as tg:
        tg.start_soon(interrupt_if_abandoned)
        # Not abandonable: the call returns (or fails, interrupted) before we go on.
        await anyio.to_thread.run_sync(in_thread, limiter=limiter)
        running = False
        tg.cancel_scope.cancel()
    if abandoned:
        # Our caller was cancelled; the error we caused must not replace the cancellation.
        await anyio.sleep_forever()
    ok, value = outcome[0]
    if ok:
        return value
    raise value


def _quietly(interrupt: Callable[[], None]) -> Callable[[], None]:
    def attempt() -> None:
        try:
            interrupt()
        except Exception:  # the call may have ended meanwhile; nothing to interrupt then
            pass

    return attempt
