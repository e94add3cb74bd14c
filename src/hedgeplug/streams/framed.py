"""A stream of values with an end marker, error markers and a guard.

Every message on the wire is a small list: ``[DATA, value]``, ``[END]`` (the
sender finished sending; the reader's iteration stops cleanly), ``[ERROR,
kind, text]`` (the sender gives up, naming why) or ``[ACCEPT]`` (the answer
to an open). A stream whose connection closes without ``[END]`` was
cancelled or crashed: the reader gets `StreamClosed`, never a silent end.

The guard: `fail(error)` (called when the leader changes) interrupts any
send or receive in progress and makes every later one raise `error`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import sniffio

from ..errors import HedgeplugError, LeaderChangedError, RemoteError, StreamClosed, TransportError

DATA, END, ERROR, ACCEPT = 0, 1, 2, 3
NOTIFY_BUDGET = 0.5  # how long a failing side tries to tell the other why

T = TypeVar("T")
BROKEN = (TransportError, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)


def cancel_scope_factory() -> Callable[[], Any]:
    """The cheapest cancel scope of the running backend. Every send and receive
    runs in one (the guard), and anyio's scope on trio wraps trio's own: using
    trio's directly halves what the guard costs per message there."""
    try:
        trio_running = sniffio.current_async_library() == "trio"
    except sniffio.AsyncLibraryNotFoundError:
        trio_running = False
    if trio_running:
        import trio

        return trio.CancelScope
    return anyio.CancelScope


def error_from_marker(kind: Any, text: Any, describe: str) -> StreamClosed:
    text = str(text)
    if kind == "leader-changed":
        return LeaderChangedError(text)
    if kind == "handler":
        return _RemoteStreamError(f"{describe}: the other side's handler raised {text}")
    return StreamClosed(f"{describe}: {text}")


class _RemoteStreamError(StreamClosed, RemoteError):
    """The peer's stream handler raised (catchable as StreamClosed or RemoteError)."""


class Stream:
    """An open stream of msgpack-able values, one per `send`, in order.

    `async for value in stream` reads until the other side calls `send_eof`
    (or its handler returns); `send_eof` finishes our direction while we keep
    reading. Leaving `async with` finishes cleanly; cancelling it closes the
    connection, which the other side sees at once as `StreamClosed`.
    """

    def __init__(self, sealed: Any, *, peer: str, describe: str) -> None:
        self._sealed = sealed
        self.peer = peer
        self.describe = describe
        self.sent_eof = False
        self.got_eof = False
        self.closed = False
        self.failure: StreamClosed | None = None
        self._scopes: set[Any] = set()  # the scopes of the operations in progress
        self._new_scope = cancel_scope_factory()
        # What an abrupt close from the other side means (leader streams refine it).
        self.explain_abrupt: Callable[[], StreamClosed] = lambda: StreamClosed(
            f"{self.describe}: the other side closed it before finishing (cancelled, stopped or crashed)"
        )

    # ------------------------------------------------------------ the guard

    def fail(self, error: StreamClosed) -> None:
        """Interrupt what is in progress and make every later operation raise `error`."""
        if self.failure is None:
            self.failure = error
        for scope in list(self._scopes):
            scope.cancel()

    async def notify_and_close(self) -> None:
        """Tell the other side why we fail (bounded), then close."""
        error = self.failure
        if error is not None and not self.closed:
            kind = "leader-changed" if isinstance(error, LeaderChangedError) else "closed"
            with anyio.move_on_after(NOTIFY_BUDGET, shield=True):
                try:
                    await self._sealed.send([ERROR, kind, str(error)])
                except Exception:  # the connection may be gone already
                    pass
        await self._close()

    async def _guarded(self, op: Callable[[], Awaitable[T]]) -> T:
        if self.failure is not None:
            await self._close()
            raise self.failure
        with self._new_scope() as scope:
            self._scopes.add(scope)
            try:
                return await op()
            except BROKEN as exc:
                if self.failure is not None:
                    raise self.failure from None
                if isinstance(exc, StreamClosed):
                    raise
                error = self.explain_abrupt()
                self.failure = error
                raise error from None
            finally:
                self._scopes.discard(scope)
        # Only reached when fail() cancelled the operation.
        await self.notify_and_close()
        assert self.failure is not None
        raise self.failure

    # ------------------------------------------------------------ values

    async def send(self, value: Any) -> None:
        """Send one value; waits while the other side is slow (backpressure)."""
        if self.sent_eof:
            raise HedgeplugError(f"{self.describe}: send after send_eof")
        await self._guarded(lambda: self._sealed.send([DATA, value]))

    async def send_eof(self) -> None:
        """Finish sending; the other side's iteration ends, ours can go on."""
        if not self.sent_eof and self.failure is None and not self.closed:
            await self._guarded(lambda: self._sealed.send([END]))
            self.sent_eof = True

    async def receive(self) -> Any:
        """The next value; anyio.EndOfStream once the other side finished."""
        if self.got_eof:
            raise anyio.EndOfStream
        return await self._guarded(self._receive)

    async def _receive(self) -> Any:
        try:
            message = await self._sealed.receive()
        except anyio.EndOfStream:
            raise anyio.BrokenResourceError from None  # closed without END: abrupt
        if not isinstance(message, list) or not message:
            raise StreamClosed(f"{self.describe}: malformed stream message {message!r:.80}")
        tag = message[0]
        if tag == DATA and len(message) == 2:
            return message[1]
        if tag == END:
            self.got_eof = True
            raise anyio.EndOfStream
        if tag == ERROR and len(message) == 3:
            error = error_from_marker(message[1], message[2], self.describe)
            self.failure = error
            raise error
        raise StreamClosed(f"{self.describe}: unexpected stream message {message!r:.80}")

    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    # ------------------------------------------------------------ closing

    async def _close(self) -> None:
        if not self.closed:
            self.closed = True
            with anyio.CancelScope(shield=True):
                await self._sealed.aclose()

    async def aclose(self) -> None:
        """Finish (END, bounded) and close; under cancellation just close."""
        try:
            if not self.closed and self.failure is None and not self.sent_eof:
                with anyio.move_on_after(NOTIFY_BUDGET):
                    try:
                        await self._sealed.send([END])
                        self.sent_eof = True
                    except Exception:
                        pass
        finally:
            await self._close()

    async def abort(self) -> None:
        """Close without finishing: the other side sees StreamClosed."""
        await self._close()

    async def __aenter__(self) -> Stream:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is not None:
            await self.abort()
        else:
            await self.aclose()
