"""The composition root: builds the plugins a config names and runs them.

    async with hedgeplug.open_node(config) as node:
        ...

A node binds its transport, runs the election, the membership strategy and
the message dispatcher as tasks, and on exit leaves the membership, releases
its lease and closes everything, bounded by [node] stop_timeout.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from random import Random
from typing import Any

import anyio
import attrs
from anyio.abc import TaskGroup

from .channels import Dispatcher, NodeChannel, SealedStream
from .config import Config, load_config
from .contracts import Lease, Reply
from .election import Election
from .errors import HedgeplugError, NoLeader, RemoteError, RequestTimeout, TransportError
from .events import Event, EventHub, LeaderChanged, MembersChanged
from .keyring import keyring_for, start_keys
from .registry import Observers, Registry
from .view import Member, View
from .wire import Codec

# Channel names used by the core; strategies pick their own names.
APP_SEND = "app.send"
APP_BROADCAST = "app.broadcast"
CONTROL = "control"
APP_PREFIX = "app:"


class _Context:
    """The NodeContext handed to plugins (see contracts.NodeContext)."""

    def __init__(self, node: Node) -> None:
        self._node = node
        cfg = node.config.node
        self.id = cfg.id
        self.cluster = cfg.cluster
        self.lock_name = cfg.lock
        self.meta = dict(cfg.meta)
        seed = cfg.seed if cfg.seed is not None else int.from_bytes(os.urandom(8), "big")
        self.random = Random(seed)
        self.log = logging.getLogger(f"hedgeplug.node.{cfg.id}")
        self.settings = node.config

    @property
    def address(self) -> str:
        return self._node.address

    def now(self) -> float:
        return anyio.current_time()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)

    @property
    def leader(self) -> Lease | None:
        return self._node.leader

    @property
    def is_leader(self) -> bool:
        return self._node.is_leader

    @property
    def newest_token(self) -> int:
        return self._node._election.newest_token if self._node._election else 0

    async def wait_leader_change(self) -> None:
        assert self._node._election is not None
        await self._node._election.wait_change()

    async def read_leader(self) -> Lease | None:
        return await self._node._lock.current()

    @property
    def view(self) -> View:
        return self._node.view

    def publish_view(self, view: View) -> None:
        self._node._publish_view(view)

    def channel(self, name: str) -> NodeChannel:
        return self._node._dispatcher.channel(name)

    def count(self, what: str, n: int = 1) -> None:
        self._node._dispatcher.count(what, n)

    def transport_for(self, member: Member) -> str:
        return member.address

    @property
    def stats(self) -> Any:
        return self._node._transport.stats


class Node:
    """One process's participant. Create it with `open_node`."""

    def __init__(self, config: Config, registry: Registry) -> None:
        self.config = config
        self.registry = registry
        self.id = config.node.id
        self.cluster = config.node.cluster
        self.address = ""
        self.counters: dict[str, int] = {}
        self._observers: Observers = registry.observers()
        self._events = EventHub()
        self._view = View()
        self.ctx = _Context(self)
        self._started_at = 0.0
        self._stopping = False
        self._killed = False
        self._tg: TaskGroup | None = None
        self._send_handler: Callable[..., Any] | None = None
        self._broadcast_handler: Callable[..., Any] | None = None

        def build(kind: str) -> Any:
            section = getattr(config, kind)
            impl = registry.get(kind, section.use)
            try:
                return impl.create(section.options, self.ctx)
            except HedgeplugError:
                raise
            except Exception as exc:
                raise HedgeplugError(
                    f"{kind} {section.use!r} from {impl.distribution} failed to start: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc

        self._lock = build("lock")
        self._transport = build("transport")
        codec = Codec(config.node.cluster, keyring_for(config.node), self._transport.max_frame)
        self._dispatcher = Dispatcher(self._transport, codec, self.id, self.counters, lambda: self.address)
        self._election: Election | None = None
        self._membership = build("membership")
        self._broadcast = build("broadcast")
        self._install_core_handlers()

    # ------------------------------------------------------------ public state

    @property
    def is_leader(self) -> bool:
        return self._election is not None and self._election.is_leader

    @property
    def leader(self) -> Lease | None:
        """The lease of the leader as this node knows it (None while unknown)."""
        return self._election.leader if self._election else None

    @property
    def token(self) -> int:
        lease = self.leader
        return lease.token if lease else 0

    @property
    def view(self) -> View:
        return self._view

    @property
    def members(self) -> tuple[Member, ...]:
        return self._view.live

    # ------------------------------------------------------------ handlers and events

    def on_send(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        """Install the leader-side handler for `send`: called with (payload, sender_id)."""
        self._send_handler = handler
        return handler

    def on_broadcast(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        """Install the handler for broadcasts: called with (payload, sender_id)."""
        self._broadcast_handler = handler
        return handler

    def on_leader_changed(self, callback: Callable[[LeaderChanged], Any]) -> None:
        self._events.on(LeaderChanged, callback)

    def on_members_changed(self, callback: Callable[[MembersChanged], Any]) -> None:
        self._events.on(MembersChanged, callback)

    def events(self) -> AsyncIterator[Event]:
        """Leader and membership changes from now on, as an async iterator."""
        return self._events.subscribe()

    async def set_meta(self, meta: Mapping[str, str]) -> None:
        """Replace this node's metadata; the membership strategy spreads it.

        Metadata is small (at most 64 entries, 4 KiB in all): it travels in
        views and heartbeats, so it is for labels, not data."""
        if not isinstance(meta, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
        ):
            raise HedgeplugError("metadata must be a mapping of strings to strings")
        if len(meta) > 64 or sum(len(k) + len(v) for k, v in meta.items()) > 4096:
            raise HedgeplugError("metadata is limited to 64 entries and 4 KiB in all")
        self.ctx.meta = dict(meta)
        spread = getattr(self._membership, "set_meta", None)
        if spread is not None:
            await spread(dict(meta))

    def channel(self, name: str) -> NodeChannel:
        """An application channel (namespaced so it never collides with strategies)."""
        return self._dispatcher.channel(APP_PREFIX + name)

    async def open_stream(self, target: str, channel: str = "stream", payload: Any = None) -> SealedStream:
        """Open an ordered stream of values to a member (by id) or address; the
        peer's `node.channel(channel).handle_streams(handler)` receives it as
        handler(message, stream)."""
        address = self._address_of(target)
        return await self._dispatcher.open_stream(address, APP_PREFIX + channel, payload)

    def _address_of(self, target: str) -> str:
        member = self._view.get(target)
        return member.address if member else target

    # ------------------------------------------------------------ messaging

    async def wait_leader(self, timeout: float = 10.0) -> Lease:
        with anyio.move_on_after(timeout):
            while True:
                lease = self.leader
                if lease is not None:
                    return lease
                assert self._election is not None
                self._election.poke()
                with anyio.move_on_after(0.25):
                    await self._election.wait_change()
        raise NoLeader(f"no leader known after {timeout}s")

    async def send(self, payload: Any, *, timeout: float = 10.0) -> Any:
        """Send `payload` to the leader and return its handler's reply.

        Waits for a known leader and retries through a failover, with backoff,
        until `timeout`; raises NoLeader or RequestTimeout then. RemoteError
        means the leader's handler raised (not retried).
        """
        deadline = anyio.current_time() + timeout
        delay = 0.05
        last: Exception | None = None
        while True:
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                break
            try:
                lease = await self.wait_leader(remaining)
            except NoLeader:
                break
            try:
                return await self._dispatcher.request(
                    lease.address, APP_SEND, payload, max(0.01, deadline - anyio.current_time())
                )
            except RemoteError as exc:
                if "not the leader" not in str(exc):
                    raise
                last = exc
            except (TransportError, TimeoutError, OSError) as exc:
                last = exc
            assert self._election is not None
            self._election.poke()
            await anyio.sleep(min(delay, max(0.0, deadline - anyio.current_time())))
            delay = min(delay * 2, 1.0)
        if last is None:
            raise NoLeader(f"no leader known within {timeout}s")
        raise RequestTimeout(f"send to leader failed within {timeout}s: {last}")

    async def broadcast(
        self,
        payload: Any,
        *,
        timeout: float = 5.0,
        include_self: bool = True,
        targets: Sequence[str] | None = None,
    ) -> AsyncIterator[Reply]:
        """Deliver to the current view (or the member ids in `targets`) and
        yield each member's Reply as it arrives."""
        members = list(self._view.live)
        if targets is not None:
            wanted = set(targets)
            members = [m for m in members if m.id in wanted]
        if not include_self:
            members = [m for m in members if m.id != self.id]
        async for reply in self._broadcast.deliver(APP_BROADCAST, payload, members, timeout):
            yield reply

    async def broadcast_all(self, payload: Any, **kwargs: Any) -> list[Reply]:
        """`broadcast`, collected into a list."""
        return [r async for r in self.broadcast(payload, **kwargs)]

    def _install_core_handlers(self) -> None:
        d = self._dispatcher

        async def on_send(msg: Any) -> Any:
            if not self.is_leader:
                raise HedgeplugError("not the leader")
            if self._send_handler is None:
                raise HedgeplugError("the leader has no send handler installed")
            return await _call(self._send_handler, msg.payload, msg.sender)

        async def on_broadcast(msg: Any) -> Any:
            if self._broadcast_handler is None:
                return None
            return await _call(self._broadcast_handler, msg.payload, msg.sender)

        async def on_control(msg: Any) -> Any:
            op = msg.payload.get("op") if isinstance(msg.payload, dict) else None
            if op == "status":
                return self.status()
            # send/broadcast on behalf of a shell client (`hedgeplug send|broadcast`).
            if op in ("send", "broadcast"):
                timeout = msg.payload.get("timeout", 5.0)
                if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not 0 < timeout <= 300:
                    raise HedgeplugError("control timeout must be a number of seconds in (0, 300]")
                if op == "send":
                    return await self.send(msg.payload.get("payload"), timeout=float(timeout))
                replies = await self.broadcast_all(msg.payload.get("payload"), timeout=float(timeout))
                return [attrs.asdict(r) for r in replies]
            raise HedgeplugError(f"unknown control operation {op!r}")

        d.channel(APP_SEND).handle(on_send)
        d.channel(APP_BROADCAST).handle(on_broadcast)
        d.channel(CONTROL).handle(on_control)

    # ------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        lease = self.leader
        view = self._view
        stats = self._transport.stats
        return {
            "id": self.id,
            "address": self.address,
            "cluster": self.cluster,
            "is_leader": self.is_leader,
            "leader": None if lease is None else {"id": lease.holder, "address": lease.address},
            "token": lease.token if lease else 0,
            "newest_token": self._election.newest_token if self._election else 0,
            "view_version": str(view.version),
            "view_digest": view.digest(),
            "members": [m.to_json() for m in view.live],
            "strategies": {
                "lock": self.config.lock.use,
                "transport": self.config.transport.use,
                "membership": self.config.membership.use,
                "broadcast": self.config.broadcast.use,
            },
            "uptime": round(anyio.current_time() - self._started_at, 3),
            "counters": dict(sorted(self.counters.items())),
            "transport": {
                "frames_in": stats.frames_in,
                "frames_out": stats.frames_out,
                "bytes_in": stats.bytes_in,
                "bytes_out": stats.bytes_out,
                "dropped": dict(stats.dropped),
            },
        }

    # ------------------------------------------------------------ internal hooks

    def _publish_view(self, view: View) -> None:
        old = self._view
        self._view = view
        joined, left = old.diff(view)
        if joined or left:
            self._observers.call("hedgeplug_members_changed", node=self, view=view, joined=joined, left=left)
            self._events.emit(MembersChanged(view, joined, left))

    def _leader_changed(self, lease: Lease | None, previous: Lease | None) -> None:
        self._observers.call("hedgeplug_leader_changed", node=self, lease=lease, previous=previous)
        self._events.emit(LeaderChanged(lease, previous))

    # ------------------------------------------------------------ life cycle

    async def _start(self, tg: TaskGroup) -> None:
        self._tg = tg
        self._started_at = anyio.current_time()

        def spawn(coro: Any) -> None:
            tg.start_soon(_await, coro)

        self._events.spawn = spawn
        self.address = await self._transport.bind()
        start_keys(tg, self._transport, self.address, self._dispatcher.codec, self.config.node, self._dispatcher.count)
        self._election = Election(
            self._lock,
            self.config.election,
            holder=self.id,
            address=lambda: self.address,
            now=anyio.current_time,
            on_change=self._leader_changed,
            count=self._dispatcher.count,
        )
        tg.start_soon(self._transport.serve, self._dispatcher.on_frame, self._dispatcher.on_stream)
        tg.start_soon(self._election.run)
        tg.start_soon(self._membership.run)
        self._observers.call("hedgeplug_node_started", node=self)

    async def _stop(self) -> None:
        if self._killed:
            await self._close_resources()
            return
        self._stopping = True
        self._observers.call("hedgeplug_node_stopping", node=self)
        budget = self.config.node.stop_timeout
        with anyio.move_on_after(budget / 2):
            try:
                await self._membership.leave()
            except Exception as exc:
                self.ctx.log.warning("membership leave failed: %s", exc)
        if self._election is not None:
            await self._election.release(budget / 2)
        await self._close_resources()

    async def _close_resources(self) -> None:
        with anyio.move_on_after(2):
            for closer in (self._transport.aclose, self._lock.aclose):
                try:
                    await closer()
                except Exception as exc:
                    self.ctx.log.debug("close failed: %s", exc)

    def kill(self) -> None:
        """Stop at once without leaving or releasing (a crash, for tests and the simulator)."""
        self._killed = True
        if self._tg is not None:
            self._tg.cancel_scope.cancel()


async def _await(coro: Any) -> None:
    try:
        await coro
    except Exception:
        logging.getLogger("hedgeplug.events").exception("async event callback raised")


async def _call(handler: Callable[..., Any], payload: Any, sender: str) -> Any:
    # A handler takes (payload) or (payload, sender): parameters with defaults don't count.
    required = [
        p for p in inspect.signature(handler).parameters.values()
        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    result = handler(payload, sender) if len(required) >= 2 else handler(payload)
    if inspect.isawaitable(result):
        result = await result
    return result


ConfigLike = Config | str | os.PathLike[str] | Mapping[str, Any] | None


def resolve_config(config: ConfigLike, registry: Registry, overrides: Sequence[str] = ()) -> Config:
    if isinstance(config, Config):
        if overrides:
            raise HedgeplugError("overrides apply when hedgeplug reads the configuration, not to a Config")
        return config
    if isinstance(config, Mapping):
        return load_config(data=config, overrides=list(overrides), registry=registry, env={})
    return load_config(config, overrides=list(overrides), registry=registry)


@asynccontextmanager
async def open_node(
    config: ConfigLike = None,
    *,
    registry: Registry | None = None,
    overrides: Sequence[str] = (),
) -> AsyncIterator[Node]:
    """Start a node and stop it gracefully when the block exits.

    `config` is a Config, a path to a TOML file, a dict shaped like the file,
    or None for the defaults (embedded sqlite lock, tcp, heartbeat, direct).
    """
    registry = registry or Registry.load()
    node = Node(resolve_config(config, registry, overrides), registry)
    async with anyio.create_task_group() as tg:
        try:
            await node._start(tg)
            yield node
        finally:
            with anyio.CancelScope(shield=True):
                await node._stop()
            tg.cancel_scope.cancel()
