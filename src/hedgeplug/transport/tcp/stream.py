"""A message stream over a connection of its own."""

from __future__ import annotations

from collections.abc import Callable

import anyio
from anyio.abc import ByteStream

from hedgeplug.plugin import FrameTooLarge, TransportError, TransportStats

from .._framing import FrameReader, FrameRejected, FrameType
from .connection import NETWORK_ERRORS, ConnectionLost, FramedSocket


class TcpMessageStream:
    """A MessageStream over a dedicated connection; TCP's flow control is the backpressure."""

    def __init__(
        self,
        stream: ByteStream,
        reader: FrameReader,
        peer: str,
        stats: TransportStats,
        max_frame: int,
        on_close: Callable[[TcpMessageStream], None] | None = None,
    ) -> None:
        self._socket = FramedSocket(stream, reader, peer, stats)
        self._max_frame = max_frame
        self._on_close = on_close
        self._receive_lock = anyio.Lock()
        self.peer = peer

    async def send(self, data: bytes) -> None:
        if len(data) > self._max_frame:
            raise FrameTooLarge(
                f"stream message of {len(data)} bytes to {self.peer} exceeds"
                f" the limit of {self._max_frame} bytes"
            )
        try:
            await self._socket.write(FrameType.STREAM, 0, data)
        except ConnectionLost as exc:
            raise TransportError(f"stream to {self.peer} is broken: {exc}") from None

    async def receive(self) -> bytes:
        async with self._receive_lock:
            if self._socket.broken is not None:
                raise anyio.EndOfStream
            try:
                kind, _, body = await self._socket.reader.read()
            except FrameRejected as exc:
                self._socket.stats.drop(exc.reason)
                await self._socket.close(TransportError(str(exc)))
                raise TransportError(f"bad message on stream from {self.peer}: {exc}") from None
            except anyio.EndOfStream:
                raise
            except NETWORK_ERRORS as exc:
                raise TransportError(f"stream from {self.peer} failed: {exc}") from None
        if kind is not FrameType.STREAM:
            self._socket.stats.drop("unexpected-frame")
            await self._socket.close(TransportError("unexpected frame type on a stream"))
            raise TransportError(f"stream from {self.peer} sent a {kind.name} frame")
        self._socket.count_in(body)
        return body

    async def aclose(self) -> None:
        if self._on_close is not None:
            self._on_close(self)
        await self._socket.close(TransportError(f"stream to {self.peer} is closed"))
