"""A node's life cycle: bind and start its tasks; leave, release and close
on a graceful stop, bounded by [node] stop_timeout; or die at once (kill)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio
from anyio.abc import TaskGroup

from ..config import Config
from ..events import EventHub
from ..keyring import start_keys
from ..registry import Observers
from .parts import NodeParts
from .services import Services

CLOSE_BUDGET = 2.0  # seconds for closing the transport and the lock


class Lifecycle:
    """Starts and stops one node's parts; `owner` is the node observers hear about."""

    def __init__(
        self,
        owner: Any,
        parts: NodeParts,
        config: Config,
        *,
        observers: Observers,
        events: EventHub,
        log: logging.Logger,
        on_bound: Callable[[str], None],
        services: Services,
    ) -> None:
        self.owner = owner
        self.parts = parts
        self.config = config
        self.observers = observers
        self.events = events
        self.log = log
        self.on_bound = on_bound
        self.services = services
        self.task_group: TaskGroup | None = None
        self.started_at = 0.0
        self.killed = False

    async def start(self, tg: TaskGroup) -> None:
        self.task_group = tg
        self.started_at = anyio.current_time()

        def spawn(coro: Any) -> None:
            tg.start_soon(_await, coro)

        self.events.spawn = spawn
        parts = self.parts
        address = await parts.transport.bind()
        self.on_bound(address)
        dispatcher = parts.dispatcher
        # Refuse to run exposed without a key; follow [node] key_file while running.
        start_keys(tg, parts.transport, address, dispatcher.codec, self.config.node, dispatcher.count)
        tg.start_soon(parts.transport.serve, dispatcher.on_frame, dispatcher.on_stream)
        tg.start_soon(parts.election.run)
        tg.start_soon(parts.membership.run)
        self.observers.call("hedgeplug_node_started", node=self.owner)

    async def stop(self) -> None:
        if self.killed:
            await _close_semaphores(self.owner, release=False, timeout=CLOSE_BUDGET)
            await self.close()
            return
        self.observers.call("hedgeplug_node_stopping", node=self.owner)
        budget = self.config.node.stop_timeout
        # Services hand their state off while the other members still see us.
        await self.services.close_all(budget / 3)
        with anyio.move_on_after(budget / 2):
            try:
                await self.parts.membership.leave()
            except Exception as exc:
                self.log.warning("membership leave failed: %s", exc)
        await self.parts.election.release(budget / 2)
        await _close_semaphores(self.owner, release=True, timeout=budget / 2)
        await self.close()

    async def close(self) -> None:
        with anyio.move_on_after(CLOSE_BUDGET):
            for closer in (self.parts.transport.aclose, self.parts.lock.aclose):
                try:
                    await closer()
                except Exception as exc:
                    self.log.debug("close failed: %s", exc)

    def kill(self) -> None:
        self.killed = True
        self.services.abandon_all()
        if self.task_group is not None:
            self.task_group.cancel_scope.cancel()


async def _close_semaphores(node: Any, *, release: bool, timeout: float) -> None:
    """Give back the semaphore slots the node holds (unless it was killed:
    their leases then expire) and close their store connections."""
    import sys

    state = sys.modules.get("hedgeplug.state.semaphore")  # loaded only if the node used one
    if state is not None:
        await state.close_semaphores(node, release=release, timeout=timeout)


async def _await(coro: Any) -> None:
    try:
        await coro
    except Exception:
        logging.getLogger("hedgeplug.events").exception("async event callback raised")
