"""Streams for threaded programs: each call blocks the calling thread while
the node's event loop (a BlockingNode's portal) does the work."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
from anyio.from_thread import BlockingPortal

from .fanout import StreamBroadcast, StreamReply
from .framed import Stream


class BlockingStream:
    """A `Stream` used from a thread: send, send_eof, receive, iterate, close."""

    def __init__(self, portal: BlockingPortal, stream: Stream) -> None:
        self._portal = portal
        self.stream = stream
        self.peer = stream.peer

    def send(self, value: Any) -> None:
        self._portal.call(self.stream.send, value)

    def send_eof(self) -> None:
        self._portal.call(self.stream.send_eof)

    def receive(self) -> Any:
        """The next value; anyio.EndOfStream once the other side finished."""
        return self._portal.call(self.stream.receive)

    def __iter__(self) -> Iterator[Any]:
        while True:
            try:
                yield self.receive()
            except anyio.EndOfStream:
                return

    def close(self) -> None:
        self._portal.call(self.stream.aclose)

    def abort(self) -> None:
        self._portal.call(self.stream.abort)

    def __enter__(self) -> BlockingStream:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()


class BlockingStreamBroadcast:
    """A `StreamBroadcast` used from a thread; `replies()` collects them all."""

    def __init__(self, portal: BlockingPortal, fan: StreamBroadcast) -> None:
        self._portal = portal
        self.fan = fan

    @property
    def members(self) -> tuple[str, ...]:
        return self.fan.members

    @property
    def failures(self) -> dict[str, Any]:
        return self.fan.failures

    def send(self, value: Any) -> int:
        return self._portal.call(self.fan.send, value)

    def send_eof(self) -> None:
        self._portal.call(self.fan.send_eof)

    def replies(self) -> list[StreamReply]:
        async def collect() -> list[StreamReply]:
            return [reply async for reply in self.fan.replies()]

        return self._portal.call(collect)

    def close(self) -> None:
        self._portal.call(self.fan.aclose)

    def __enter__(self) -> BlockingStreamBroadcast:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        self._portal.call(self.fan.abort if exc_type is not None else self.fan.aclose)
