"""In-memory transport: endpoints of one process talking over a `MemoryNetwork`.

For in-process tests and the simulator, never for anything that leaves a
process. The network (memory_network.py) decides each frame's fate; the
default one is lossless and in order. The simulator installs its
fault-injecting network under a name and this transport runs over it
unchanged. All time comes from `anyio.current_time()` / `anyio.sleep()`, so
under trio's MockClock a run is reproducible.

Frames in flight are tasks of the *receiving* endpoint: when a node dies, what
was travelling to it dies with it, what it had sent still arrives.
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


# ---------------------------------------------------------------- streams


class MemoryStream:
    """One end of an ordered in-memory stream; the bounded buffer gives backpressure."""

    def __init__(
        self,
        owner: MemoryTransport,
        peer: str,
        outbound: MemoryObjectSendStream[bytes],
        inbound: MemoryObjectReceiveStream[bytes],
    ) -> None:
        self._owner = owner
        self._peer = peer
        self._out = outbound
        self._in = inbound

    async def send(self, data: bytes) -> None:
        owner = self._owner
        if len(data) > owner.max_frame:
            raise FrameTooLarge(f"stream message of {len(data)} bytes exceeds {owner.max_frame}")
        network = owner.network
        await network.wait_thawed(owner.address)
        if not network.reachable(owner.address, self._peer):
            raise TransportError(f"stream to {self._peer} broken: unreachable")
        # One delay per message, slept by the sender, keeps the order.
        await anyio.sleep(network.stream_delay(owner.address, self._peer))
        try:
            await self._out.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            raise TransportError(f"stream to {self._peer} closed") from None
        owner.stats.frames_out += 1
        owner.stats.bytes_out += len(data)

    async def receive(self) -> bytes:
        try:
            data = await self._in.receive()
        except anyio.ClosedResourceError:
            raise anyio.EndOfStream from None
        await self._owner.network.wait_thawed(self._owner.address)
        self._owner.stats.frames_in += 1
        self._owner.stats.bytes_in += len(data)
        return data

    async def aclose(self) -> None:
        self._out.close()
        self._in.close()
        self._owner._streams.discard(self)


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
        self._deliver(MemoryTransport(self.network, src, 1 << 30), payload, None, anyio.current_time())

    def _deliver(self, source: MemoryTransport, data: Any, rid: int | None, at: float) -> None:
        """Start a frame's journey to this endpoint. Bound but not yet serving,
        it waits in a bounded backlog, like connections on a listening socket."""
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
                    target._deliver(self, data, rid, at)
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
            target._deliver(self, data, None, at)

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
        pending = requester._pending.get(rid)
        if pending is None or pending.done.is_set():
            return  # timed out or already answered
        network.stats.delivered += 1
        requester.stats.frames_in += 1
        requester.stats.bytes_in += len(reply)
        pending.reply = reply
        pending.error = error
        pending.done.set()

    async def open_stream(self, address: str) -> MemoryStream:
        if self._closed:
            raise TransportError("transport is closed")
        arrivals = self.network.route(self.address, address)
        if not arrivals:
            raise TransportError(f"cannot open a stream to {address}: unreachable")
        await anyio.sleep_until(arrivals[0])
        target = self._peer(address)
        if target is not None and target._tg is None:
            with anyio.move_on_after(ACCEPT_WAIT):  # bound, not serving yet: a queued connect
                while target._tg is None and not target._closed:
                    await anyio.sleep(0.001)
        if target is None or target._tg is None or target._on_stream is None:
            raise TransportError(f"cannot open a stream to {address}: nothing listens there")
        to_peer, peer_in = anyio.create_memory_object_stream[bytes](self.stream_buffer)
        to_us, our_in = anyio.create_memory_object_stream[bytes](self.stream_buffer)
        ours = MemoryStream(self, address, to_peer, our_in)
        theirs = MemoryStream(target, self.address, to_us, peer_in)
        self._streams.add(ours)
        target._streams.add(theirs)
        target._tg.start_soon(target._on_stream, theirs)  # type: ignore[arg-type]
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
