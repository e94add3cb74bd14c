"""The node's stream service: opens framed streams to a member or to the
leader, accepts them for the application's stream handlers, and fails leader
streams on both ends when the leader changes.

One opening message names the application channel, its payload and, for a
leader stream, the fencing token the opener believes leads; the accepting
side answers ACCEPT or an ERROR marker (no handler, not the leader) before
the application's handler runs.
"""

from __future__ import annotations

import functools
import inspect
import logging
import weakref
from collections.abc import Callable
from typing import Any, Protocol

import anyio

from ..channels import NodeChannel, SealedStream
from ..contracts import Lease, Message
from ..errors import (
    HedgeplugError,
    LeaderChangedError,
    NoLeader,
    RequestTimeout,
    StreamClosed,
    TransportError,
)
from ..events import LeaderChanged
from ..view import View
from .fanout import StreamBroadcast
from .framed import ACCEPT, BROKEN, ERROR, NOTIFY_BUDGET, Stream, error_from_marker

log = logging.getLogger("hedgeplug.streams")

SERVICE_CHANNEL = "streams"


class StreamNode(Protocol):
    """What the service needs of its node."""

    id: str

    @property
    def is_leader(self) -> bool: ...

    @property
    def leader(self) -> Lease | None: ...

    @property
    def view(self) -> View: ...

    def channel(self, name: str) -> NodeChannel: ...

    def on_leader_changed(self, callback: Callable[[LeaderChanged], Any]) -> None: ...

    async def wait_leader(self, timeout: float = ...) -> Lease: ...


class _NotLeader(StreamClosed):
    """The member asked for a leader stream is not (or no longer) the leader."""


class StreamService:
    def __init__(self, node: StreamNode, service_channel: NodeChannel, poke: Callable[[], None]) -> None:
        self.node = node
        self._channel = service_channel
        self._poke = poke
        # Open leader streams and the lease each was opened under.
        self._as_leader: weakref.WeakKeyDictionary[Stream, Lease] = weakref.WeakKeyDictionary()
        self._to_leader: weakref.WeakKeyDictionary[Stream, Lease] = weakref.WeakKeyDictionary()
        service_channel.handle_streams(self._accept)
        node.on_leader_changed(self._leader_changed)

    # ------------------------------------------------------------ opening

    async def open(
        self, address: str, peer: str, name: str, payload: Any, *, leader: int | None, timeout: float
    ) -> Stream:
        describe = f"stream {name!r} to {peer}"
        sealed = await self._channel.open_stream(address, {"channel": name, "payload": payload, "leader": leader})
        try:
            with anyio.fail_after(timeout):
                answer = await sealed.receive()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await sealed.aclose()
            raise
        if answer == [ACCEPT]:
            return Stream(sealed, peer=peer, describe=describe)
        await sealed.aclose()
        if isinstance(answer, list) and len(answer) == 3 and answer[0] == ERROR:
            if answer[1] == "not-leader":
                raise _NotLeader(f"{describe}: {answer[2]}")
            raise error_from_marker(answer[1], answer[2], describe)
        raise StreamClosed(f"{describe}: unexpected answer {answer!r:.80}")

    async def to_leader(self, name: str, payload: Any, timeout: float) -> Stream:
        """Open a stream to the current leader, retrying through a failover until `timeout`."""
        require_text(name)
        deadline = anyio.current_time() + timeout
        delay = 0.05
        last: Exception | None = None
        while (remaining := deadline - anyio.current_time()) > 0:
            try:
                lease = await self.node.wait_leader(remaining)
            except NoLeader:
                break
            try:
                stream = await self.open(
                    lease.address, lease.holder, name, payload, leader=lease.token, timeout=max(0.01, remaining)
                )
            except (_NotLeader, TransportError, TimeoutError, OSError) as exc:
                if isinstance(exc, StreamClosed) and not isinstance(exc, _NotLeader):
                    raise  # no handler, or the handler refused: retrying will not help
                last = exc
                self._poke()
                await anyio.sleep(min(delay, max(0.0, deadline - anyio.current_time())))
                delay = min(delay * 2, 1.0)
                continue
            stream.describe = f"stream {name!r} to leader {lease.holder} (token {lease.token})"
            stream.explain_abrupt = functools.partial(self._leader_gone, stream, lease)
            self._to_leader[stream] = lease
            current = self.node.leader
            if current is not None and current.token != lease.token:
                stream.fail(self._changed(lease, current))
            return stream
        if last is None:
            raise NoLeader(f"no leader known within {timeout}s to open stream {name!r}")
        raise RequestTimeout(f"stream {name!r} to the leader could not be opened within {timeout}s: {last}")

    async def broadcast(
        self, name: str, payload: Any, *, timeout: float, include_self: bool = True
    ) -> StreamBroadcast:
        """Open a stream to every live member at once; members that cannot be
        reached or refuse are reported in `failures`."""
        require_text(name)
        members = [m for m in self.node.view.live if include_self or m.id != self.node.id]
        streams: dict[str, Stream] = {}
        failures: dict[str, HedgeplugError] = {}

        async def one(member_id: str, address: str) -> None:
            try:
                streams[member_id] = await self.open(address, member_id, name, payload, leader=None, timeout=timeout)
            except HedgeplugError as exc:
                failures[member_id] = exc
            except (TimeoutError, OSError) as exc:
                failures[member_id] = StreamClosed(f"stream {name!r} to {member_id} could not be opened: {exc!r}")

        async with anyio.create_task_group() as tg:
            for member in members:
                tg.start_soon(one, member.id, member.address)
        ordered = {m.id: streams[m.id] for m in members if m.id in streams}
        return StreamBroadcast(name, ordered, failures)

    def _leader_gone(self, stream: Stream, lease: Lease) -> StreamClosed:
        current = self.node.leader
        if current is not None and current.token != lease.token:
            return self._changed(lease, current)
        return StreamClosed(
            f"{stream.describe}: the leader closed it before finishing (it stopped, crashed or cancelled)"
        )

    @staticmethod
    def _changed(old: Lease, new: Lease | None) -> LeaderChangedError:
        now = f"{new.holder} (token {new.token})" if new is not None else "nobody known"
        return LeaderChangedError(
            f"the leader changed from {old.holder} (token {old.token}) to {now} while the stream was open"
        )

    # ------------------------------------------------------------ accepting

    async def _accept(self, message: Message, sealed: Any) -> None:
        # `sealed` is the dispatcher's SealedStream (typed as the handler contract allows).
        request = message.payload
        name = request.get("channel") if isinstance(request, dict) else None
        leader = request.get("leader") if isinstance(request, dict) else None
        if not isinstance(name, str) or not (leader is None or isinstance(leader, int)):
            await _refuse(sealed, "closed", f"malformed stream opening {request!r:.80}")
            return
        handler = self.node.channel(name).stream_handler
        if handler is None:
            await _refuse(sealed, "closed", f"{self.node.id} has no stream handler for channel {name!r}")
            return
        lease = self.node.leader
        if leader is not None and not (self.node.is_leader and lease is not None and lease.token == leader):
            await _refuse(sealed, "not-leader", f"{self.node.id} is not the leader with token {leader}")
            return
        stream = Stream(sealed, peer=message.sender, describe=f"stream {name!r} from {message.sender}")
        if leader is not None and lease is not None:
            stream.describe = f"leader stream {name!r} from {message.sender}"
            self._as_leader[stream] = lease
        await sealed.send([ACCEPT])
        try:
            result = handler(Message(message.sender, name, request.get("payload"), message.msg_id), stream)
            if inspect.isawaitable(result):
                await result
        except StreamClosed:
            pass  # the handler let the stream's own failure out: the other side knows
        except Exception as exc:
            log.warning("stream handler for %r raised: %r", name, exc)
            await _refuse(sealed, "handler", f"{type(exc).__name__}: {exc}")
            return
        finally:
            self._as_leader.pop(stream, None)
        await stream.aclose()

    # ------------------------------------------------------------ the guard

    async def _leader_changed(self, event: LeaderChanged) -> None:
        new = event.lease
        failing: list[Stream] = []
        for stream, lease in list(self._as_leader.items()):
            if new is None or new.holder != self.node.id or new.token != lease.token:
                stream.fail(
                    LeaderChangedError(
                        f"{self.node.id} stopped leading (token {lease.token}) while {stream.describe} was open"
                    )
                )
                failing.append(stream)
        if new is not None:
            for stream, lease in list(self._to_leader.items()):
                if new.token != lease.token:
                    stream.fail(self._changed(lease, new))
                    failing.append(stream)
        for stream in failing:
            self._as_leader.pop(stream, None)
            self._to_leader.pop(stream, None)
            await stream.notify_and_close()


async def _refuse(sealed: SealedStream, kind: str, text: str) -> None:
    with anyio.move_on_after(NOTIFY_BUDGET):
        try:
            await sealed.send([ERROR, kind, text])
        except BROKEN:
            pass


def require_text(name: Any, what: str = "stream channel") -> str:
    if not isinstance(name, str) or not name:
        raise HedgeplugError(f"{what} must be a non-empty string, not {name!r:.40}")
    return name
