"""Outgoing connections: dialling, and the pool that keeps one per peer.

Each node keeps at most one outgoing frame connection per peer address and
sends all its requests and one-way frames to that peer over it; replies come
back on the same connection tagged with the request's id.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio
from anyio.abc import ByteStream

from hedgeplug.plugin import TransportError, TransportStats

from .._framing import PURPOSE_FRAMES, FrameReader, FrameRejected, FrameType, preamble
from .._mux import ReplyMux
from .connection import (
    NETWORK_ERRORS,
    ConnectionLost,
    FramedSocket,
    frame_source,
    peer_address,
    set_nodelay,
)

if TYPE_CHECKING:
    import ssl


async def dial(
    address: str,
    purpose: bytes,
    timeout: float,
    max_frame: int,
    tls: ssl.SSLContext | None = None,
    stats: TransportStats | None = None,
) -> tuple[ByteStream, FrameReader]:
    """A new connection to `address` that announced its purpose, within `timeout`;
    with `tls`, the TLS handshake is part of opening it (and of the timeout)."""
    peer = peer_address(address)
    stream: ByteStream | None = None
    with anyio.move_on_after(timeout):
        try:
            stream = await anyio.connect_tcp(peer.host, peer.port)
            set_nodelay(stream)
            if tls is not None:
                stream = await _secure(stream, tls, address, timeout, stats)
            await stream.send(preamble(purpose))
        except NETWORK_ERRORS as exc:
            if stream is not None:
                await anyio.aclose_forcefully(stream)
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise TransportError(f"cannot connect to {address}: {reason}") from None
        return stream, FrameReader(frame_source(stream), max_frame)
    if stream is not None:
        await anyio.aclose_forcefully(stream)
    raise TransportError(f"cannot connect to {address}: no answer within {timeout:g}s")


async def _secure(
    stream: ByteStream,
    tls: ssl.SSLContext,
    address: str,
    timeout: float,
    stats: TransportStats | None,
) -> ByteStream:
    from .tls import HandshakeFailed, handshake  # loaded only when TLS is configured

    try:
        return await handshake(stream, tls, server_side=False, timeout=timeout)
    except HandshakeFailed as exc:
        await anyio.aclose_forcefully(stream)
        if stats is not None:
            stats.drop(exc.reason)
        raise TransportError(f"TLS handshake with {address} failed: {exc}") from None


class OutgoingConnection(FramedSocket):
    """A pooled connection to one peer; replies are matched to requests by id."""

    def __init__(
        self,
        stream: ByteStream,
        reader: FrameReader,
        peer: str,
        stats: TransportStats,
        on_closed: Callable[[OutgoingConnection], None],
        stall_timeout: float,
    ) -> None:
        super().__init__(stream, reader, peer, stats, stall_timeout)
        self.mux = ReplyMux(self._read_one)
        self.last_used = anyio.current_time()
        self._on_closed = on_closed

    def touch(self) -> None:
        self.last_used = anyio.current_time()

    async def _read_one(self) -> None:
        try:
            kind, request_id, body = await self.reader.read()
        except FrameRejected as exc:
            self.stats.drop(exc.reason)
            error: TransportError = TransportError(f"unreadable reply from {self.peer}: {exc}")
        except anyio.EndOfStream:
            error = ConnectionLost(f"connection to {self.peer} was closed by the peer")
        except NETWORK_ERRORS as exc:
            error = ConnectionLost(f"connection to {self.peer} failed: {exc}")
        else:
            self.count_in(body)
            if kind is FrameType.REPLY:
                delivered = self.mux.deliver(request_id, body)
            elif kind is FrameType.ERROR:
                text = body.decode("utf-8", "replace")
                delivered = self.mux.deliver(
                    request_id, error=TransportError(f"{self.peer} could not answer: {text}")
                )
            else:
                self.stats.drop("unexpected-frame")
                return
            if not delivered:
                self.stats.drop("late-reply")  # its request timed out already
            return
        await self.close(error)

    async def close(self, reason: TransportError) -> None:
        first = self.broken is None
        await super().close(reason)
        if first:
            self.mux.fail_all(reason)
            self._on_closed(self)


class ConnectionPool:
    """At most one open frame connection per peer address, opened on demand."""

    def __init__(
        self,
        stats: TransportStats,
        connect_timeout: float,
        max_frame: int,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.stats = stats
        self.tls = tls
        self.connect_timeout = connect_timeout
        self.max_frame = max_frame
        self.closed = False
        self._open: dict[str, OutgoingConnection] = {}
        self._connect_locks: dict[str, anyio.Lock] = {}
        self._connect_failures: dict[str, tuple[float, str]] = {}  # address -> (when, why)

    def __len__(self) -> int:
        return len(self._open)

    def connections(self) -> list[OutgoingConnection]:
        return list(self._open.values())

    async def connection(self, address: str) -> tuple[OutgoingConnection, bool]:
        """The pooled connection to `address` and whether it was opened just now."""
        conn = self._open.get(address)
        if conn is not None and conn.broken is None:
            return conn, False
        lock = self._connect_locks.setdefault(address, anyio.Lock())
        asked_at = anyio.current_time()
        async with lock:
            conn = self._open.get(address)
            if conn is not None and conn.broken is None:
                return conn, False
            failed = self._connect_failures.get(address)
            if failed is not None and failed[0] >= asked_at:
                # The attempt we queued behind just failed: share its answer
                # instead of each waiter spending a full connect_timeout again.
                raise TransportError(failed[1])
            if self.closed:
                raise TransportError("tcp transport is closed")
            try:
                stream, reader = await dial(
                    address,
                    PURPOSE_FRAMES,
                    self.connect_timeout,
                    self.max_frame,
                    tls=self.tls,
                    stats=self.stats,
                )
            except TransportError as exc:
                self._connect_failures[address] = (anyio.current_time(), str(exc))
                raise
            self._connect_failures.pop(address, None)
            conn = OutgoingConnection(
                stream,
                reader,
                address,
                self.stats,
                self._forget,
                stall_timeout=self.connect_timeout,
            )
            self._open[address] = conn
            return conn, True

    def _forget(self, conn: OutgoingConnection) -> None:
        if self._open.get(conn.peer) is conn:
            del self._open[conn.peer]

    async def close_idle(self, idle_timeout: float) -> None:
        """Close connections with no request waiting that nobody used for `idle_timeout`."""
        cutoff = anyio.current_time() - idle_timeout
        for conn in list(self._open.values()):
            if len(conn.mux) == 0 and conn.last_used < cutoff:
                await conn.close(ConnectionLost(f"idle connection to {conn.peer} closed"))
        for address, lock in list(self._connect_locks.items()):
            if address not in self._open and not lock.locked():
                del self._connect_locks[address]
                self._connect_failures.pop(address, None)

    async def close_all(self, reason: TransportError) -> None:
        self.closed = True
        for conn in list(self._open.values()):
            await conn.close(reason)
