"""Matching replies to waiting requests by id, without a background task.

A transport's request() may be called before (or without) its serve() task,
so nothing owns a long-lived reader for outgoing connections. Instead the
waiters take turns: whichever waiter finds nobody reading becomes the reader
and delivers every reply it sees to its owner, until its own arrives; then it
wakes another waiter to take over. Reading must be cancellation-safe (a
cancelled read loses no bytes), which both users of this module guarantee.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio


class _Waiter:
    __slots__ = ("done", "reply", "error", "wake")

    def __init__(self) -> None:
        self.done = False
        self.reply: bytes = b""
        self.error: Exception | None = None
        self.wake: anyio.Event | None = None  # made only when it has to wait behind a reader


class ReplyMux:
    """Waiters for replies on one incoming channel (a connection or a socket).

    `read_one` reads one incoming unit and hands it to `deliver`/`fail_all`;
    it may raise to signal the channel is broken (after calling `fail_all`).
    """

    def __init__(self, read_one: Callable[[], Awaitable[None]]) -> None:
        self._read_one = read_one
        self._waiters: dict[int, _Waiter] = {}
        self._reading = False

    def __len__(self) -> int:
        return len(self._waiters)

    def __contains__(self, request_id: int) -> bool:
        return request_id in self._waiters

    def expect(self, request_id: int) -> None:
        """Register interest in a reply before the request leaves (it may come back fast)."""
        self._waiters[request_id] = _Waiter()

    def forget(self, request_id: int) -> None:
        self._waiters.pop(request_id, None)

    def deliver(self, request_id: int, reply: bytes = b"", error: Exception | None = None) -> bool:
        """Hand a reply to its waiter; False when nobody waits (late or unknown id)."""
        waiter = self._waiters.get(request_id)
        if waiter is None or waiter.done:
            return False
        waiter.done = True
        waiter.reply = reply
        waiter.error = error
        if waiter.wake is not None:
            waiter.wake.set()
        return True

    def fail_all(self, error: Exception) -> None:
        for request_id in list(self._waiters):
            self.deliver(request_id, error=error)

    async def wait(self, request_id: int) -> bytes:
        """The reply for `request_id` (registered with `expect`); raises the delivered error."""
        waiter = self._waiters[request_id]
        try:
            while not waiter.done:
                if self._reading:
                    waiter.wake = anyio.Event()
                    await waiter.wake.wait()
                    continue
                self._reading = True
                try:
                    while not waiter.done:
                        await self._read_one()
                finally:
                    self._reading = False
                    self._hand_over(waiter)
        finally:
            self._waiters.pop(request_id, None)
        if waiter.error is not None:
            raise waiter.error
        return waiter.reply

    def _hand_over(self, leaving: _Waiter) -> None:
        # Wake one other waiter still waiting so somebody keeps reading.
        for waiter in self._waiters.values():
            if waiter is not leaving and not waiter.done and waiter.wake is not None:
                waiter.wake.set()
                return
