"""A node's life cycle: bind and start its tasks; leave, release and close
on a graceful stop, bounded by [node] stop_timeout; or die at once (kill)."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from typing import Any

import anyio
from anyio.abc import TaskGroup

from ..address import Address
from ..config import Config
from ..contracts import LocalOnly
from ..errors import ConfigError
from ..events import EventHub
from ..keyring import check_exposure, follow_key_file
from ..logs import current_node
from ..registry import Observers
from .asyncio_accept import tolerate_accept_race
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
        self.stopping = False
        self.bound = False
        self.health_address = ""  # host:port of the [health] endpoint, once listening
        self._health_listener: Any = None

    async def bind(self) -> None:
        """Bind the transport and check the advertised address against the
        lock (outside any task group, so a refusal is one plain error)."""
        tolerate_accept_race()  # before any listener exists (asyncio only)
        address = await self.parts.transport.bind()
        self.on_bound(address)
        self.bound = True
        try:
            check_local_store(self.parts.lock, address, self.config)
            # Refuse to run reachable beyond this host without a cluster key.
            check_exposure(
                self.parts.transport, address, self.parts.dispatcher.codec.keyring,
                self.config.node.insecure,
            )
            listen = self.config.health.listen
            if listen is not None:
                from ..health import open_listener  # only nodes that serve it load it

                self._health_listener, self.health_address = await open_listener(listen)
        except BaseException:
            await self.close()
            raise

    async def start(self, tg: TaskGroup) -> None:
        self.task_group = tg
        self.started_at = anyio.current_time()

        def spawn(coro: Any) -> None:
            tg.start_soon(_await, coro)

        self.events.spawn = spawn
        parts = self.parts
        if not self.bound:
            await self.bind()
        dispatcher = parts.dispatcher
        # Tasks copy the context they are started in: marked so, everything
        # they (and the tasks they start) log carries this node's fields.
        marked = current_node.set(self.owner)
        try:
            tg.start_soon(parts.transport.serve, dispatcher.on_frame, dispatcher.on_stream)
            tg.start_soon(parts.election.run)
            tg.start_soon(parts.membership.run)
            key_file = self.config.node.key_file
            if key_file:  # follow [node] key_file while running (a rotation step is an edit)
                tg.start_soon(follow_key_file, dispatcher.codec, key_file, dispatcher.count)
            if self._health_listener is not None:
                from ..health import serve_on

                tg.start_soon(serve_on, self.owner, self._health_listener)
                self._health_listener = None  # the serving task owns (and closes) it now
        finally:
            current_node.reset(marked)
        self.observers.call("hedgeplug_node_started", node=self.owner)

    async def stop(self) -> None:
        self.stopping = True
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
            if self._health_listener is not None:  # bound, never served
                await self._health_listener.aclose()
                self._health_listener = None
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


def check_local_store(lock: Any, address: str, config: Config) -> None:
    """Refuse a host-local lock (LocalOnly) when other hosts could reach this
    node: each host would have its own store and its own leader, silently.
    Checked once the transport has bound, when the advertised address is known."""
    if not isinstance(lock, LocalOnly) or config.election.shared_store or _loopback(address):
        return
    raise ConfigError(
        f"[lock] {config.lock.use!r} keeps the lease in a {lock.local_only()} on this host, "
        f"but this node advertises {address}, reachable from other hosts: nodes there would "
        f"each lead with their own store. Use a shared store (postgres, etcd, ...), bind to "
        f"loopback, or set [lock] shared_store = true if every node really uses this one store."
    )


def _loopback(address: str) -> bool:
    try:
        host = Address.parse(address).host
    except ValueError:
        return True  # not a host:port (an in-process network): no other host can reach it
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other hosts may resolve


async def _await(coro: Any) -> None:
    try:
        await coro
    except Exception:
        logging.getLogger("hedgeplug.events").exception("async event callback raised")
