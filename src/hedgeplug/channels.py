"""Named message channels over one transport, and the dispatcher that routes
incoming frames to them.

Every strategy and the application get their own channel; a frame for a
channel nobody handles is answered with an error, a frame that fails to
decode is dropped and counted.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from itertools import count
from typing import Any

import anyio

from .contracts import Handler, Message, MessageStream, Transport
from .errors import RemoteError, RequestTimeout, TransportError
from .versions import WireVersions
from .wire import Codec, Envelope, Kind, WireError

log = logging.getLogger("hedgeplug.channels")

StreamOpener = Callable[[Message, MessageStream], Any]


class Dispatcher:
    """Owns the codec and the channel table of one node.

    `versions` picks the wire version of each frame sent to an address
    (hedgeplug.versions); without it every frame goes in the codec's newest.
    A reply goes back in the version of its request."""

    def __init__(
        self,
        transport: Transport,
        codec: Codec,
        sender: str,
        counters: dict[str, int],
        self_address: Callable[[], str],
        versions: WireVersions | None = None,
    ) -> None:
        self.transport = transport
        self.codec = codec
        self.versions = versions
        self.sender = sender
        self.counters = counters
        self._self_address = self_address
        self._handlers: dict[str, Handler] = {}
        self._stream_handlers: dict[str, Callable[[Message, MessageStream], Any]] = {}
        self._channels: dict[str, NodeChannel] = {}
        self._ids = count(1)
        # Messages (not replies) per channel: [frames_in, bytes_in, frames_out, bytes_out].
        self.traffic: dict[str, list[int]] = {}

    def count(self, what: str, n: int = 1) -> None:
        self.counters[what] = self.counters.get(what, 0) + n

    def _tally(self, channel: str, direction: int, nbytes: int) -> None:
        tally = self.traffic.get(channel) or self.traffic.setdefault(channel, [0, 0, 0, 0])
        tally[direction] += 1
        tally[direction + 1] += nbytes

    def channel(self, name: str) -> NodeChannel:
        ch = self._channels.get(name)
        if ch is None:
            ch = self._channels[name] = NodeChannel(self, name)
        return ch

    def next_id(self) -> int:
        return next(self._ids)

    def envelope(
        self,
        channel: str,
        payload: Any,
        kind: Kind = Kind.MESSAGE,
        msg_id: int | None = None,
        version: int | None = None,
    ) -> bytes:
        return self.codec.encode(
            Envelope(self.codec.cluster, self.sender, channel, msg_id or self.next_id(), kind, payload),
            version,
        )

    def version_for(self, address: str) -> int | None:
        """The wire version of frames to `address` (None: the codec's newest)."""
        return None if self.versions is None else self.versions.for_address(address)

    # ------------------------------------------------------------ inbound

    async def on_frame(self, data: bytes, peer: str) -> bytes | None:
        try:
            env = self.codec.decode(data)
        except WireError as exc:
            self.count(f"drop.{exc.reason}")
            log.debug("dropped frame from %s: %s", peer, exc)
            return None
        if env.kind is not Kind.MESSAGE:
            self.count("drop.unexpected-reply")
            return None
        version = env.version  # the reply goes back in the request's version
        handler = self._handlers.get(env.channel)
        if handler is None:
            self.count("drop.no-handler")
            return self.envelope(
                env.channel, f"no handler for channel {env.channel!r}", Kind.ERROR, env.msg_id, version
            )
        self._tally(env.channel, 0, len(data))  # only handled channels: senders cannot grow the table
        msg = Message(env.sender, env.channel, env.payload, env.msg_id)
        try:
            result = handler(msg)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            self.count("handler-errors")
            log.warning("handler for channel %r raised: %r", env.channel, exc)
            return self.envelope(env.channel, f"{type(exc).__name__}: {exc}", Kind.ERROR, env.msg_id, version)
        try:
            return self.envelope(env.channel, result, Kind.REPLY, env.msg_id, version)
        except Exception as exc:  # unencodable or oversized reply
            self.count("reply-errors")
            return self.envelope(env.channel, f"reply could not be sent: {exc}", Kind.ERROR, env.msg_id, version)

    async def on_stream(self, stream: MessageStream) -> None:
        try:
            with anyio.fail_after(10):
                first = await stream.receive()
            env = self.codec.decode(first)
        except WireError as exc:
            self.count(f"drop.{exc.reason}")
            await stream.aclose()
            return
        except Exception:
            self.count("drop.stream-open")
            await stream.aclose()
            return
        handler = self._stream_handlers.get(env.channel)
        if handler is None:
            self.count("drop.no-stream-handler")
            await stream.aclose()
            return
        try:
            sealed = SealedStream(stream, self, env.channel, env.version)
            result = handler(Message(env.sender, env.channel, env.payload, env.msg_id), sealed)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            self.count("handler-errors")
            log.warning("stream handler for channel %r raised: %r", env.channel, exc)
        finally:
            await stream.aclose()

    # ------------------------------------------------------------ outbound

    async def request(self, address: str, channel: str, payload: Any, timeout: float) -> Any:
        msg_id = self.next_id()
        if address == self._self_address():
            return await self._local(channel, payload, msg_id)
        frame = self.envelope(channel, payload, Kind.MESSAGE, msg_id, self.version_for(address))
        self._tally(channel, 2, len(frame))
        raw = await self.transport.request(address, frame, timeout)
        if not raw:
            raise RemoteError(f"{address} sent no reply on channel {channel!r}")
        try:
            env = self.codec.decode(raw)
        except WireError as exc:
            self.count(f"drop.{exc.reason}")
            raise TransportError(f"unreadable reply from {address}: {exc}") from None
        if env.kind is Kind.ERROR:
            raise RemoteError(f"{address}: {env.payload}")
        return env.payload

    async def _local(self, channel: str, payload: Any, msg_id: int, sender: str | None = None) -> Any:
        handler = self._handlers.get(channel)
        if handler is None:
            raise RemoteError(f"no handler for channel {channel!r}")
        try:
            result = handler(Message(sender or self.sender, channel, payload, msg_id))
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            raise RemoteError(f"{type(exc).__name__}: {exc}") from exc
        return result

    async def send(self, address: str, channel: str, payload: Any) -> None:
        if address == self._self_address():
            handler = self._handlers.get(channel)
            if handler is not None:
                try:
                    result = handler(Message(self.sender, channel, payload, self.next_id()))
                    if inspect.isawaitable(result):
                        await result
                except Exception as exc:
                    log.warning("local handler for %r raised: %r", channel, exc)
            return
        try:
            frame = self.envelope(channel, payload, version=self.version_for(address))
        except Exception as exc:
            self.count("send-errors")
            log.warning("cannot send on %r: %s", channel, exc)
            return
        self._tally(channel, 2, len(frame))
        await self.transport.send(address, frame)

    async def open_stream(self, address: str, channel: str, payload: Any = None) -> SealedStream:
        stream = await self.transport.open_stream(address)
        version = self.version_for(address)
        await stream.send(self.envelope(channel, payload, version=version))
        return SealedStream(stream, self, channel, version)


class SealedStream:
    """A transport stream whose every message is an envelope of the node's
    codec: with a cluster key, stream data is encrypted and authenticated like
    any frame. Messages are msgpack-able values, not raw bytes; both ends
    write in the wire version the opener chose."""

    def __init__(
        self, stream: MessageStream, dispatcher: Dispatcher, channel: str, version: int | None = None
    ) -> None:
        self._stream = stream
        self._d = dispatcher
        self.channel = channel
        self.version = version

    async def send(self, payload: Any) -> None:
        await self._stream.send(self._d.envelope(self.channel, payload, version=self.version))

    async def receive(self) -> Any:
        """The next value; anyio.EndOfStream when the peer closed."""
        raw = await self._stream.receive()
        try:
            env = self._d.codec.decode(raw)
        except WireError as exc:
            self._d.count(f"drop.{exc.reason}")
            await self._stream.aclose()
            raise TransportError(f"stream on {self.channel!r} sent an unreadable message: {exc}") from None
        return env.payload

    def __aiter__(self) -> SealedStream:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def __aenter__(self) -> SealedStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class NodeChannel:
    """The Channel a plugin or the application gets from `context.channel(name)`."""

    def __init__(self, dispatcher: Dispatcher, name: str) -> None:
        self._d = dispatcher
        self.name = name

    def handle(self, handler: Handler) -> None:
        self._d._handlers[self.name] = handler

    def handle_streams(self, handler: Callable[[Message, MessageStream], Any]) -> None:
        self._d._stream_handlers[self.name] = handler

    @property
    def stream_handler(self) -> Callable[[Message, MessageStream], Any] | None:
        """The handler `handle_streams` installed (None when there is none)."""
        return self._d._stream_handlers.get(self.name)

    async def request(self, address: str, payload: Any, timeout: float) -> Any:
        try:
            return await self._d.request(address, self.name, payload, timeout)
        except TimeoutError as exc:
            if isinstance(exc, RequestTimeout):
                raise
            raise RequestTimeout(f"no reply from {address} on {self.name!r} within {timeout}s") from None

    async def send(self, address: str, payload: Any) -> None:
        await self._d.send(address, self.name, payload)

    async def deliver_here(self, payload: Any, sender: str) -> Any:
        """This node's own handler, as if `sender` had sent `payload` (relayed messages)."""
        return await self._d._local(self.name, payload, self._d.next_id(), sender)

    async def open_stream(self, address: str, payload: Any = None) -> SealedStream:
        """An ordered stream to `address`; the peer's `handle_streams` handler gets it."""
        return await self._d.open_stream(address, self.name, payload)
