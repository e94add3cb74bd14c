"""One end of an in-memory stream between two memory transport endpoints."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from hedgeplug.plugin import FrameTooLarge, TransportError

if TYPE_CHECKING:
    from .memory import MemoryTransport


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
        self._owner.forget_stream(self)
