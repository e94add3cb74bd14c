"""In-memory transport: endpoints of one process talking over a `MemoryNetwork`.

For in-process tests and the simulator, never for anything that leaves a
process. The network (memory_network.py) decides each frame's fate; the
default one is lossless and in order. The simulator installs its
fault-injecting network under a name and this transport runs over it
unchanged. All time comes from `anyio.current_time()` / `anyio.sleep()`, so
under trio's MockClock a run is reproducible.

Frames in flight are tasks of the *receiving* endpoint: when a node dies, what
was travelling to it dies with it, what it had sent still arrives.

Endpoints reach one another only through a small public interface, the
peer side of an endpoint: `deliver` (a frame starts its journey here),
`take_reply` (the answer to one of my requests arrived), `accept_stream`
(a peer opens a stream to me), and `address`, `max_frame`, `closed`,
`serving`. None reads another's private state.
"""

from __future__ import annotations

from itertools import count
from typing import Any

import anyio
import attrs
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from hedgeplug.plugin import (
    FrameHandler,
    FrameTooLarge,
    RequestTimeout,
    Size,
    StreamHandler,
    TransportError,
    TransportStats,
    hookimpl,
)

from .memory_network import (
    MemoryNetwork,
    NetworkStats,
    get_network,
    install_network,
    reset_networks,
)
from .memory_stream import MemoryStream

__all__ = [
    "MemoryNetwork",
    "MemoryStream",
    "MemoryTransport",
    "NetworkStats",
    "get_network",
    "install_network",
    "reset_networks",
]

BACKLOG = 1024  # frames an endpoint holds between bind and serve
ACCEPT_WAIT = 5.0  # how long a stream open waits for a bound endpoint to start serving


# ---------------------------------------------------------------- transport


@attrs.define
class _Pending:
    done: anyio.Event = attrs.Factory(anyio.Event)
    reply: bytes = b""
    error: str | None = None


class MemoryTransport:
    """A transport endpoint on a `MemoryNetwork`."""

    def __init__(
        self, network: MemoryNetwork, address: str, max_frame: int, stream_buffer: int = 16
    ) -> None:
        self.network = network
        self.address = address
        self.max_frame = max_frame
        self.stream_buffer = stream_buffer
        self.stats = TransportStats()
        self._tg: TaskGroup | None = None
        self._on_frame: FrameHandler | None = None
        self._on_stream: StreamHandler | None = None
        self._pending: dict[int, _Pending] = {}
        self._ids = count(1)
        self._streams: set[MemoryStream] = set()
        self._backlog: list[tuple[MemoryTransport, Any, int | None, float]] = []
        self._served = False  # serve ran and ended
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def serving(self) -> bool:
        return self._tg is not None and not self._closed

    async def bind(self) -> str:
        if self._closed:
            raise TransportError("transport is closed")
        self.network.attach(self)
        return self.address

    async def serve(self, on_frame: FrameHandler, on_stream: StreamHandler) -> None:
        self._on_frame, self._on_stream = on_frame, on_stream
        async with anyio.create_task_group() as tg:
            self._tg = tg
            try:
                backlog, self._backlog = self._backlog, []
                for item in backlog:
                    tg.start_soon(self._arrive, *item)
                await anyio.sleep_forever()
            finally:
                # The group takes no new tasks from here on: frames now are lost.
                self._tg = None
                self._served = True

    def _check_size(self, data: bytes) -> None:
        if len(data) > self.max_frame:
            raise FrameTooLarge(
                f"frame of {len(data)} bytes exceeds the limit of {self.max_frame} bytes"
            )

    def _peer(self, address: str) -> MemoryTransport | None:
        """The open endpoint bound at `address` on our network, if any."""
        target = self.network.endpoint(address)
        return target if isinstance(target, MemoryTransport) else None

    def inject(self, payload: Any, src: str) -> None:
        """Take `payload` (anything, even not bytes) as if it came off the wire from `src`."""
        self.deliver(
            MemoryTransport(self.network, src, 1 << 30), payload, None, anyio.current_time()
        )

    # ------------------------------------------------------------ the peer side

    def deliver(self, source: MemoryTransport, data: Any, rid: int | None, at: float) -> None:
        """Peer side: start a frame's journey from `source` to this endpoint,
        arriving at virtual time `at` (`rid`: the request it carries, if any).
        Bound but not yet serving, it waits in a bounded backlog, like
        connections on a listening socket."""
        if self._tg is not None:
            self._tg.start_soon(self._arrive, source, data, rid, at)
        elif self._served:
            self.stats.drop("closed")  # its serve task has ended
        elif len(self._backlog) < BACKLOG:
            self._backlog.append((source, data, rid, at))
        else:
            self.stats.drop("backlog-full")

    async def request(self, address: str, data: bytes, timeout: float) -> bytes:
        self._check_size(data)
        if self._closed:
            raise TransportError("transport is closed")
        rid = next(self._ids)
        pending = self._pending[rid] = _Pending()
        self.stats.frames_out += 1
        self.stats.bytes_out += len(data)
        try:
            with anyio.fail_after(timeout):
                arrivals = self.network.route(self.address, address)
                target = self._peer(address)
                if arrivals and target is None:
                    # Nobody listens there: a refused connection, noticed after one trip.
                    await anyio.sleep_until(arrivals[0])
                    raise TransportError(f"nothing listens at {address}")
                for at in arrivals:
                    assert target is not None
                    target.deliver(self, data, rid, at)
                await pending.done.wait()
        except TimeoutError:
            raise RequestTimeout(f"no reply from {address} within {timeout}s") from None
        finally:
            self._pending.pop(rid, None)
        if pending.error is not None:
            raise TransportError(pending.error)
        return pending.reply

    async def send(self, address: str, data: bytes) -> None:
        try:
            self._check_size(data)
        except FrameTooLarge:
            self.stats.drop("too-large")
            return
        if self._closed:
            self.stats.drop("closed")
            return
        self.stats.frames_out += 1
        self.stats.bytes_out += len(data)
        arrivals = self.network.route(self.address, address)
        target = self._peer(address)
        if target is None:
            if arrivals:
                self.stats.drop("no-endpoint")
            return
        for at in arrivals:
            target.deliver(self, data, None, at)

    async def _arrive(
        self, source: MemoryTransport, data: bytes, rid: int | None, at: float
    ) -> None:
        network = self.network
        if network.is_frozen(source.address):  # a paused sender has not sent yet
            pause_began = anyio.current_time()
            await network.wait_thawed(source.address)
            at += anyio.current_time() - pause_began
        await anyio.sleep_until(at)
        if not network.reachable(source.address, self.address):
            network.stats.drop("partition")  # cut while in flight
            return
        await network.wait_thawed(self.address)  # a paused receiver reads it later
        if self._closed or self._on_frame is None:
            return
        if not isinstance(data, bytes | bytearray):
            self.stats.drop("malformed")  # only bytes travel; anything else is garbage
            return
        if len(data) > self.max_frame:
            self.stats.drop("too-large")
            if rid is not None:
                await self._reply(
                    source,
                    rid,
                    b"",
                    f"{self.address} refused a frame of {len(data)} bytes (limit {self.max_frame})",
                )
            return
        network.stats.delivered += 1
        self.stats.frames_in += 1
        self.stats.bytes_in += len(data)
        try:
            reply = await self._on_frame(bytes(data), source.address)
        except Exception as exc:
            self.stats.drop("handler-error")
            if rid is not None:
                await self._reply(
                    source,
                    rid,
                    b"",
                    f"handler at {self.address} failed: {type(exc).__name__}: {exc}",
                )
            return
        if rid is not None:
            await self._reply(source, rid, reply or b"")

    async def _reply(
        self, requester: MemoryTransport, rid: int, reply: bytes, error: str | None = None
    ) -> None:
        network = self.network
        if len(reply) > requester.max_frame:
            self.stats.drop("too-large")
            reply, error = b"", f"reply of {len(reply)} bytes exceeds the requester's limit"
        arrivals = network.route(self.address, requester.address)
        if not arrivals:
            return
        self.stats.frames_out += 1
        self.stats.bytes_out += len(reply)
        await anyio.sleep_until(arrivals[0])  # a duplicated reply changes nothing for the requester
        if not network.reachable(self.address, requester.address):
            network.stats.drop("partition")
            return
        await network.wait_thawed(requester.address)
        if requester.take_reply(rid, reply, error):
            network.stats.delivered += 1

    def take_reply(self, rid: int, reply: bytes, error: str | None) -> bool:
        """Peer side: the answer to our request `rid` arrived. False when that
        request has timed out or was already answered (the answer is dropped)."""
        pending = self._pending.get(rid)
        if pending is None or pending.done.is_set():
            return False
        self.stats.frames_in += 1
        self.stats.bytes_in += len(reply)
        pending.reply = reply
        pending.error = error
        pending.done.set()
        return True

    def accept_stream(
        self,
        peer: str,
        outbound: MemoryObjectSendStream[bytes],
        inbound: MemoryObjectReceiveStream[bytes],
    ) -> bool:
        """Peer side: `peer` opens a stream to us over these two channels; our
        stream handler gets our end. False when we do not serve streams (yet)."""
        tg, on_stream = self._tg, self._on_stream
        if tg is None or on_stream is None:
            return False
        ours = MemoryStream(self, peer, outbound, inbound)
        self._streams.add(ours)
        tg.start_soon(on_stream, ours)  # type: ignore[arg-type]
        return True

    def forget_stream(self, stream: MemoryStream) -> None:
        """One of our streams closed."""
        self._streams.discard(stream)

    async def open_stream(self, address: str) -> MemoryStream:
        if self._closed:
            raise TransportError("transport is closed")
        arrivals = self.network.route(self.address, address)
        if not arrivals:
            raise TransportError(f"cannot open a stream to {address}: unreachable")
        await anyio.sleep_until(arrivals[0])
        target = self._peer(address)
        if target is not None and not target.serving:
            with anyio.move_on_after(ACCEPT_WAIT):  # bound, not serving yet: a queued connect
                while not target.serving and not target.closed:
                    await anyio.sleep(0.001)
        if target is None:
            raise TransportError(f"cannot open a stream to {address}: nothing listens there")
        to_peer, peer_in = anyio.create_memory_object_stream[bytes](self.stream_buffer)
        to_us, our_in = anyio.create_memory_object_stream[bytes](self.stream_buffer)
        if not target.accept_stream(self.address, to_us, peer_in):
            for end in (to_peer, peer_in, to_us, our_in):
                end.close()
            raise TransportError(f"cannot open a stream to {address}: nothing listens there")
        ours = MemoryStream(self, address, to_peer, our_in)
        self._streams.add(ours)
        return ours

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.network.detach(self)
        for pending in self._pending.values():
            pending.error = "transport closed"
            pending.done.set()
        for stream in list(self._streams):
            await stream.aclose()
        if self._tg is not None:
            self._tg.cancel_scope.cancel()


# ---------------------------------------------------------------- plugin


@attrs.frozen
class MemoryTransportOptions:
    network: str = attrs.field(
        default="default", metadata={"help": "name of the in-process network"}
    )
    name: str = attrs.field(default="", metadata={"help": "address; default mem://<node id>"})
    max_frame: Size = attrs.field(
        default=Size(1 << 20), metadata={"help": "largest frame accepted"}
    )
    stream_buffer: int = attrs.field(
        default=16, metadata={"help": "messages buffered per stream direction"}
    )


def make(options: MemoryTransportOptions, ctx: Any) -> MemoryTransport:
    """The endpoint on the network named in the options (the simulator may have installed it)."""
    if options.stream_buffer < 0:
        raise ValueError("stream_buffer must not be negative")
    address = options.name or f"mem://{ctx.id}"
    return MemoryTransport(
        get_network(options.network), address, options.max_frame, options.stream_buffer
    )


@hookimpl
def hedgeplug_register_transports(register: Any) -> None:
    register("memory", make, MemoryTransportOptions)
