"""The Node: one process's participant, as applications see it.

A node binds its transport, runs the election, the membership strategy and
the message dispatcher as tasks, and on exit leaves the membership, releases
its lease and closes everything, bounded by [node] stop_timeout. Create it
with `open_node` (opening.py), which drives its `lifecycle`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import anyio

from ..channels import NodeChannel, SealedStream
from ..config import Config
from ..contracts import Lease, Reply
from ..errors import HedgeplugError, NoLeader, RemoteError, RequestTimeout, TransportError
from ..events import Event, EventHub, LeaderChanged, MembersChanged, MemberUpdated
from ..registry import Observers, Registry
from ..state.kv import KeyValueLog
from ..streams import Stream, StreamBroadcast, StreamService
from ..versions import RESERVED_PREFIX, with_advertisement
from ..view import Member, View
from .context import NodeContext
from .handlers import APP_BROADCAST, APP_PREFIX, APP_SEND, AppHandlers, install_core_handlers
from .lifecycle import Lifecycle
from .metering import Meter, metered_call, metered_stream
from .parts import NodeParts, assemble
from .services import Services
from .status import node_status

if TYPE_CHECKING:  # the state layer is imported when first used, not by every node
    from ..cache import Cache
    from ..spill import SpillService, SpillStore
    from ..state import Semaphore

META_ENTRIES = 64
META_BYTES = 4096


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
        self._meter = Meter(self._observers, self)
        self._events = EventHub()
        self._view = View()
        self._app = AppHandlers()
        self.ctx = NodeContext(
            config,
            address=lambda: self.address,
            view=lambda: self._view,
            publish_view=self._publish_view,
            spawn=self.spawn,
        )
        self.parts: NodeParts = assemble(
            config,
            registry,
            self.ctx,
            counters=self.counters,
            address=lambda: self.address,
            on_leader_change=self._leader_changed,
            meter=self._meter,
        )
        self.kv = KeyValueLog(self.parts)  # the fenced key/value log (state/kv.py)
        install_core_handlers(self.parts.dispatcher, self, self._app)
        self.services = Services(lambda: self.lifecycle.task_group)
        self._streams = StreamService(self, self.parts.dispatcher.channel("streams"), self.parts.election.poke)
        self.lifecycle = Lifecycle(
            self,
            self.parts,
            config,
            observers=self._observers,
            events=self._events,
            log=self.ctx.log,
            on_bound=self._bound,
            services=self.services,
        )

    # ------------------------------------------------------------ public state

    @property
    def is_leader(self) -> bool:
        return self.parts.election.is_leader

    @property
    def leader(self) -> Lease | None:
        """The lease of the leader as this node knows it (None while unknown)."""
        return self.parts.election.leader

    @property
    def key_mismatch(self) -> str | None:
        """Why this node's keys cannot verify the lease's key fingerprint (it then
        does not contend and should not count as ready), or None when they can."""
        return self.parts.election.keys.mismatch_message

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

    def status(self) -> dict[str, Any]:
        return node_status(self)

    @property
    def observers(self) -> Observers:
        """The plugins' observer hooks, as this node calls them (for the core's servers)."""
        return self._observers

    def spawn(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run `fn(*args)` as a task of this node, cancelled when the node stops
        (for code built on the node: the state layer, applications)."""
        tg = self.lifecycle.task_group
        if tg is None:
            raise HedgeplugError("the node is not running: open it with `async with open_node(...)` first")
        tg.start_soon(fn, *args)

    # ------------------------------------------------------------ state layer

    def cache(self, name: str, **options: Any) -> Cache:
        """The partitioned cache `name` (made on first use; see docs/cache.md):
        ``node.cache("sessions", max_memory="64MiB", replicas=2, ttl=None)``."""
        from ..cache import Cache

        return self.services.attach("caches", name, lambda: Cache(self, name, **options))

    def spill(self, name: str, **options: Any) -> AbstractAsyncContextManager[SpillStore]:
        """The spill-over store `name`, written from this node (see docs/spill.md):
        ``async with node.spill("batch-7", ttl="10m") as store: ...``."""
        from ..spill import open_spill

        return open_spill(self, name, **options)

    def serve_spill(self, **limits: Any) -> AbstractAsyncContextManager[SpillService]:
        """Hold other writers' spill-over pieces within these limits:
        ``async with node.serve_spill(memory="256MiB", disk="4GiB"): ...``."""
        from ..spill import serve_spill

        return serve_spill(self, **limits)

    def semaphore(self, name: str, limit: int, *, watch: bool = True) -> Semaphore:
        """The cluster-wide semaphore `name` of `limit` slots, kept in the lock
        store: ``async with node.semaphore("jobs", 3) as permit: ...``, or
        acquire / try_acquire / release (see docs/semaphore.md)."""
        from ..state import semaphore

        return semaphore(self, name, limit, watch=watch)

    # ------------------------------------------------------------ handlers and events

    def on_send(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        """Install the leader-side handler for `send`: called with (payload, sender_id)."""
        self._app.send = handler
        return handler

    def on_broadcast(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        """Install the handler for broadcasts: called with (payload, sender_id)."""
        self._app.broadcast = handler
        return handler

    def on_leader_changed(self, callback: Callable[[LeaderChanged], Any]) -> None:
        self._events.on(LeaderChanged, callback)

    def on_members_changed(self, callback: Callable[[MembersChanged], Any]) -> None:
        self._events.on(MembersChanged, callback)

    def on_member_updated(self, callback: Callable[[MemberUpdated], Any]) -> None:
        """Called when a member that stays changes its metadata (or address)."""
        self._events.on(MemberUpdated, callback)

    def events(self) -> AsyncIterator[Event]:
        """Leader changes, membership changes and member updates from now on, as an async iterator."""
        return self._events.subscribe()

    async def set_meta(self, meta: Mapping[str, str]) -> None:
        """Replace this node's metadata; the membership strategy spreads it.

        Metadata is small (at most 63 entries, 4 KiB in all): it travels in
        views and heartbeats, so it is for labels, not data. Keys starting
        with "hp." are the node's own (the protocol versions it speaks)."""
        if not isinstance(meta, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
        ):
            raise HedgeplugError("metadata must be a mapping of strings to strings")
        reserved = sorted(k for k in meta if k.startswith(RESERVED_PREFIX))
        if reserved:
            raise HedgeplugError(f"metadata keys starting with {RESERVED_PREFIX!r} are the node's own: {reserved}")
        full = with_advertisement(meta, self.ctx.wire_version, self.ctx.control_version)
        if len(full) > META_ENTRIES or sum(len(k) + len(v) for k, v in full.items()) > META_BYTES:
            raise HedgeplugError(
                f"metadata is limited to {META_ENTRIES - len(full) + len(meta)} entries and 4 KiB in all"
            )
        self.ctx.meta = full
        spread = getattr(self.parts.membership, "set_meta", None)
        if spread is not None:
            await spread(dict(full))

    def channel(self, name: str) -> NodeChannel:
        """An application channel (namespaced so it never collides with strategies)."""
        return self.parts.dispatcher.channel(APP_PREFIX + name)

    async def open_stream(self, target: str, channel: str = "stream", payload: Any = None) -> SealedStream:
        """Open an ordered stream of values to a member (by id) or address; the
        peer's `node.channel(channel).handle_streams(handler)` receives it as
        handler(message, stream)."""
        member = self._view.get(target)
        address = member.address if member else target
        return await self.parts.dispatcher.open_stream(address, APP_PREFIX + channel, payload)

    async def stream_to_leader(self, channel: str = "stream", payload: Any = None, *, timeout: float = 10.0) -> Stream:
        """A stream to the current leader's `channel(channel).handle_streams` handler;
        fails on both ends with LeaderChangedError if the leader changes (docs/streams.md)."""
        return await self._streams.to_leader(channel, payload, timeout)

    async def stream_broadcast(
        self, channel: str = "stream", payload: Any = None, *, timeout: float = 5.0, include_self: bool = True
    ) -> StreamBroadcast:
        """One stream per live member, written together; per-member failures are reported."""
        return await self._streams.broadcast(channel, payload, timeout=timeout, include_self=include_self)

    # ------------------------------------------------------------ messaging

    async def wait_leader(self, timeout: float = 10.0) -> Lease:
        lease = self.leader
        if lease is not None:
            return lease  # the common case, without a timeout scope (every send asks)
        election = self.parts.election
        with anyio.move_on_after(timeout):
            while True:
                lease = self.leader
                if lease is not None:
                    return lease
                election.poke()
                with anyio.move_on_after(0.25):
                    await election.wait_change()
        raise NoLeader(f"no leader known after {timeout}s")

    @metered_call("send")
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
                return await self.parts.dispatcher.request(
                    lease.address, APP_SEND, payload, max(0.01, deadline - anyio.current_time())
                )
            except RemoteError as exc:
                if "not the leader" not in str(exc):
                    raise
                last = exc
            except (TransportError, TimeoutError, OSError) as exc:
                last = exc
            self.parts.election.poke()
            await anyio.sleep(min(delay, max(0.0, deadline - anyio.current_time())))
            delay = min(delay * 2, 1.0)
        if last is None:
            raise NoLeader(f"no leader known within {timeout}s")
        raise RequestTimeout(f"send to leader failed within {timeout}s: {last}")

    @metered_stream("broadcast")
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
        if self.id not in self._view and self.address:
            # The sender is always included, even before its view names it.
            members.append(Member(self.id, self.address, self.ctx.meta))
        if targets is not None:
            wanted = set(targets)
            members = [m for m in members if m.id in wanted]
        if not include_self:
            members = [m for m in members if m.id != self.id]
        async for reply in self.parts.broadcast.deliver(APP_BROADCAST, payload, members, timeout):
            yield reply

    async def broadcast_all(self, payload: Any, **kwargs: Any) -> list[Reply]:
        """`broadcast`, collected into a list."""
        return [r async for r in self.broadcast(payload, **kwargs)]

    # ------------------------------------------------------------ what the parts report

    def _publish_view(self, view: View) -> None:
        old = self._view
        self._view = view
        joined, left = old.diff(view)
        if joined or left:
            self._observers.call("hedgeplug_members_changed", node=self, view=view, joined=joined, left=left)
            self._events.emit(MembersChanged(view, joined, left))
        for member, previous in old.updated(view):
            self._observers.call("hedgeplug_member_updated", node=self, member=member, previous=previous)
            self._events.emit(MemberUpdated(member, previous, view))

    def _leader_changed(self, lease: Lease | None, previous: Lease | None) -> None:
        self._observers.call("hedgeplug_leader_changed", node=self, lease=lease, previous=previous)
        self._events.emit(LeaderChanged(lease, previous))

    # ------------------------------------------------------------ life cycle

    @property
    def started_at(self) -> float:
        return self.lifecycle.started_at

    def kill(self) -> None:
        """Stop at once without leaving or releasing (a crash, for tests and the simulator)."""
        self.lifecycle.kill()

    def _bound(self, address: str) -> None:
        self.address = address
