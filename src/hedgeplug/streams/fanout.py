"""A stream broadcast: one framed stream per live member, written together.

`send` writes a value to every member still open and returns once each has
taken it, so the slowest member's window is the backpressure. A member whose
stream fails is dropped and reported in `failures` (and once in `replies()`),
never raised: the others go on, like broadcast replies.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import attrs

from ..errors import HedgeplugError
from .framed import Stream


@attrs.frozen
class StreamReply:
    """One value a member sent back, or (ok=False) why its stream failed."""

    member: str
    ok: bool
    value: Any = None
    error: str | None = None


class StreamBroadcast:
    def __init__(self, channel: str, streams: dict[str, Stream], failures: dict[str, HedgeplugError]) -> None:
        self.channel = channel
        self.streams = dict(streams)
        self.failures: dict[str, HedgeplugError] = dict(failures)
        self._reported: set[str] = set()

    @property
    def members(self) -> tuple[str, ...]:
        """Members whose stream is still open."""
        return tuple(self.streams)

    async def _each(self, member: str, stream: Stream, value: Any, eof: bool) -> None:
        try:
            if eof:
                await stream.send_eof()
            else:
                await stream.send(value)
        except HedgeplugError as exc:
            self._drop(member, exc)

    def _drop(self, member: str, exc: HedgeplugError) -> None:
        if self.streams.pop(member, None) is not None:
            self.failures[member] = exc

    async def _fan(self, value: Any, eof: bool) -> None:
        # One member after the other: a write only waits while that member's
        # window is full, and the others' windows drain meanwhile, so the
        # whole send waits as long as the slowest member does, without a
        # task per member per value.
        for member, stream in list(self.streams.items()):
            await self._each(member, stream, value, eof)

    async def send(self, value: Any) -> int:
        """Write `value` to every open member; returns how many took it."""
        await self._fan(value, False)
        return len(self.streams)

    async def send_eof(self) -> None:
        """Finish sending to everyone; replies can still be read."""
        await self._fan(None, True)

    async def replies(self) -> AsyncIterator[StreamReply]:
        """Values the members send back, merged as they arrive, until every
        member finished; a failed member appears once with ok=False."""
        send, receive = anyio.create_memory_object_stream[StreamReply](0)

        async def pump(member: str, stream: Stream, out: Any) -> None:
            async with out:
                try:
                    async for value in stream:
                        await out.send(StreamReply(member, True, value))
                except HedgeplugError as exc:
                    self._drop(member, exc)
                    await out.send(StreamReply(member, False, error=str(exc)))
                    self._reported.add(member)

        async with anyio.create_task_group() as tg:
            for member, exc in list(self.failures.items()):
                if member not in self._reported:
                    self._reported.add(member)
                    yield StreamReply(member, False, error=str(exc))
            async with send:
                for member, stream in list(self.streams.items()):
                    tg.start_soon(pump, member, stream, send.clone())
            async with receive:
                async for reply in receive:
                    yield reply

    async def aclose(self) -> None:
        for stream in list(self.streams.values()):
            await stream.aclose()

    async def abort(self) -> None:
        for stream in list(self.streams.values()):
            await stream.abort()

    async def __aenter__(self) -> StreamBroadcast:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is not None:
            await self.abort()
        else:
            await self.aclose()
