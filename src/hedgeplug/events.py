"""Events a node emits to the application: as callbacks and as an async iterator."""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import attrs
from anyio.streams.memory import MemoryObjectSendStream

from .contracts import Lease
from .view import Member, View

log = logging.getLogger("hedgeplug.events")


@attrs.frozen
class LeaderChanged:
    lease: Lease | None
    previous: Lease | None


@attrs.frozen
class MembersChanged:
    view: View
    joined: tuple[Member, ...]
    left: tuple[Member, ...]


@attrs.frozen
class MemberUpdated:
    """A member that stayed changed its metadata (or address): `previous` is
    how it was, `member` how it is now in `view`."""

    member: Member
    previous: Member
    view: View


Event = LeaderChanged | MembersChanged | MemberUpdated


class EventHub:
    """Fans events out to callbacks and subscribers; a slow subscriber loses
    events (counted) instead of blocking the node."""

    def __init__(self, buffer: int = 1024) -> None:
        self._callbacks: list[tuple[type, Callable[[Any], Any]]] = []
        self._subscribers: list[MemoryObjectSendStream[Event]] = []
        self._buffer = buffer
        self.lost = 0
        # Set by the node: runs an async callback's coroutine as a task.
        self.spawn: Callable[[Any], None] | None = None

    def on(self, kind: type, callback: Callable[[Any], Any]) -> None:
        self._callbacks.append((kind, callback))

    def emit(self, event: Event) -> None:
        for kind, cb in list(self._callbacks):
            if isinstance(event, kind):
                try:
                    result = cb(event)
                    if inspect.isawaitable(result):
                        if self.spawn is None:
                            close = getattr(result, "close", None)  # never started: no warning
                            if close is not None:
                                close()
                        else:
                            self.spawn(result)
                except Exception:
                    log.exception("event callback %r raised", cb)
        for sub in list(self._subscribers):
            try:
                sub.send_nowait(event)
            except anyio.WouldBlock:
                self.lost += 1
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._subscribers.remove(sub)

    async def subscribe(self) -> AsyncIterator[Event]:
        send, receive = anyio.create_memory_object_stream[Event](self._buffer)
        self._subscribers.append(send)
        try:
            async with receive:
                async for event in receive:
                    yield event
        finally:
            if send in self._subscribers:
                self._subscribers.remove(send)
            send.close()
