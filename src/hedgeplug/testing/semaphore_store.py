"""One semaphore walk-through on any lock store, for the store plugins' tests.

    await check_semaphore_on_store({"use": "postgres", "dsn": dsn}, cluster="pg-sem")

Two real nodes in this process (tcp on loopback) share semaphore "walk" of
limit 2 through the given store: both slots taken, a third caller refused
and timed out, the limit record refusing another limit, a release handing
the slot (with a higher fencing token) to a waiter woken before its retry
period, and the status read from the store. Raises AssertionError on the
first broken promise.
"""

from __future__ import annotations

from typing import Any

import anyio

from hedgeplug.node import open_node
from hedgeplug.state import (
    LimitMismatch,
    SemaphoreTimeout,
    close_semaphores,
    semaphore,
    semaphore_status,
)


def _config(node_id: str, cluster: str, lock: dict[str, Any], ttl: float) -> dict[str, Any]:
    return {
        "node": {"id": node_id, "cluster": cluster, "stop_timeout": "2s"},
        "lock": {**lock, "ttl": f"{ttl}s", "retry": f"{ttl}s"},
        "transport": {"use": "tcp", "bind": "127.0.0.1:0"},
        "membership": {"use": "heartbeat", "interval": "500ms"},
    }


async def check_semaphore_on_store(lock: dict[str, Any], *, cluster: str, ttl: float = 3.0) -> dict[str, float]:
    """Run the walk-through; returns how long the waiter waited after the release."""
    async with (
        open_node(_config("a", cluster, lock, ttl)) as a,
        open_node(_config("b", cluster, lock, ttl)) as b,
    ):
        try:
            return await _walk(a, b, ttl)
        finally:
            with anyio.CancelScope(shield=True):
                await close_semaphores(a)
                await close_semaphores(b)


async def _walk(a: Any, b: Any, ttl: float) -> dict[str, float]:
    first = await semaphore(a, "walk", 2).acquire(timeout=10)
    second = await semaphore(b, "walk", 2).acquire(timeout=10)
    assert {first.slot, second.slot} == {0, 1}, (first, second)
    assert await semaphore(a, "walk", 2).try_acquire() is None
    try:
        await semaphore(b, "walk", 2).acquire(timeout=0.5)
        raise AssertionError("a third holder got a slot of two")
    except SemaphoreTimeout:
        pass
    try:
        await semaphore(b, "walk", 5).try_acquire()
        raise AssertionError("a second limit for one name was accepted")
    except LimitMismatch:
        pass
    status = await semaphore_status(b, "walk")
    assert status["limit"] == 2 and status["held"] == 2, status
    assert sorted(h["token"] for h in status["holders"]) == sorted([first.token, second.token]), status

    # A waiter on b; then a releases. The retry period is a whole ttl, so a
    # prompt hand-over shows the store's watch (or b's own pass) at work.
    got: list[Any] = []

    async def wait() -> None:
        got.append(await semaphore(b, "walk", 2).acquire(timeout=4 * ttl))

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait)
        await anyio.sleep(0.5)
        released_at = anyio.current_time()
        await first.release()
    waited = anyio.current_time() - released_at
    third = got[0]
    assert third.slot == first.slot and third.token > first.token, (first, third)
    assert first.held is False and second.held and third.held
    await second.release()
    await third.release()
    status = await semaphore_status(a, "walk")
    assert status["held"] == 0, status
    return {"handover": waited}
