"""Prompt wake-ups for a semaphore's waiters.

While at least one caller of a node waits for semaphore NAME, the node
watches up to MAX_WATCHED of its slots on stores that can notify changes
(one watcher per slot per node, shared by all its waiters; it stops when
the last waiter is served). A waiter takes the current `event` BEFORE its
pass over the slots and waits on it afterwards, so a change that happens
during the pass is not lost. Stores without notification fall back to the
waiter's own jittered retry period.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio

from hedgeplug.contracts import Watchable

MAX_WATCHED = 4  # slots watched per node and name: every watch may cost a store connection


class SlotWatch:
    def __init__(self, slot: Callable[[int], Any], settings: Any, random: Any) -> None:
        self._slot = slot
        self._settings = settings
        self._random = random
        self._waiters = 0
        self._scope: anyio.CancelScope | None = None
        self.event = anyio.Event()

    def _changed(self) -> None:
        self.event.set()
        self.event = anyio.Event()

    @asynccontextmanager
    async def waiting(
        self, limit: int, spawn: Callable[[Any], None], *, enabled: bool = True
    ) -> AsyncIterator[SlotWatch]:
        if not enabled:
            yield self
            return
        self._waiters += 1
        try:
            if self._waiters == 1 and self._scope is None:
                scope = self._scope = anyio.CancelScope()
                chosen = sorted(self._random.sample(range(limit), min(limit, MAX_WATCHED)))

                async def run() -> None:
                    with scope:
                        async with anyio.create_task_group() as tg:
                            for index in chosen:
                                tg.start_soon(self._watch_one, index)

                spawn(run)
            yield self
        finally:
            self._waiters -= 1
            if self._waiters == 0 and self._scope is not None:
                self._scope.cancel()
                self._scope = None

    async def _watch_one(self, index: int) -> None:
        while True:
            try:
                backend = self._slot(index)
                if not isinstance(backend, Watchable):
                    return
                async for _ in backend.watch():
                    self._changed()
            except Exception:  # store trouble: waiters still retry on their own period
                pass
            await anyio.sleep(self._settings.retry_every)
