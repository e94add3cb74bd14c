"""The tcp transport: pooled persistent connections, requests multiplexed by id.

Each node keeps at most one outgoing connection per peer address and sends
all its requests and one-way frames to that peer over it; replies come back
on the same connection tagged with the request's id, so many requests can be
in flight at once. Streams get a connection of their own, so their flow
control (TCP's) never stalls the shared one. Outgoing connections idle for
`idle_timeout` are closed; the serving side closes a connection only after
twice that (a request on a connection the peer just closed is retried once on
a fresh one).

Wire layout: see the `_framing` module. Frames are opaque bytes to this package.
"""

from __future__ import annotations

import itertools
import logging
import socket
from typing import TYPE_CHECKING

import anyio
from anyio.abc import SocketListener

from hedgeplug.plugin import (
    Address,
    ConfigError,
    FrameHandler,
    FrameTooLarge,
    RequestTimeout,
    StreamHandler,
    TransportError,
    TransportStats,
)

from .._framing import MAX_REQUEST_ID, PURPOSE_STREAM, FrameType
from .connection import ConnectionLost
from .options import TcpOptions
from .pool import ConnectionPool, dial
from .server import IncomingConnections
from .stream import TcpMessageStream

if TYPE_CHECKING:
    from .tls import TlsContexts


class TcpTransport:
    """Implements hedgeplug.contracts.Transport over TCP."""

    def __init__(
        self,
        options: TcpOptions | None = None,
        log: logging.Logger | None = None,
        stats: TransportStats | None = None,
    ) -> None:
        self.options = options or TcpOptions()
        self.max_frame = int(self.options.max_frame)
        self.stats = stats if stats is not None else TransportStats()
        self.address = ""
        self.log = log or logging.getLogger("hedgeplug.transport.tcp")
        self.tls = self._tls_contexts()
        self.pool = ConnectionPool(
            self.stats,
            self.options.connect_timeout,
            self.max_frame,
            tls=None if self.tls is None else self.tls.client,
        )
        self.incoming: IncomingConnections | None = None  # after bind()
        self._streams: set[TcpMessageStream] = set()  # outgoing, until closed
        self._ids = itertools.count(1)
        self._serve_scope: anyio.CancelScope | None = None
        self._closed = False

    def _tls_contexts(self) -> TlsContexts | None:
        options = self.options
        if not options.tls_enabled:
            return None
        from .tls import build_contexts  # loads ssl only when TLS is configured

        try:
            return build_contexts(
                options.tls_cert, options.tls_key, options.tls_ca, options.tls_client_auth
            )
        except ValueError as exc:  # the files changed since the configuration was read
            raise ConfigError(f"[transport] {exc}") from None

    @property
    def authenticates_peers(self) -> bool:
        """Whether every peer must prove membership before a byte of hedgeplug
        traffic is exchanged (mutual TLS): the node's secure-default check
        accepts this in place of a cluster key."""
        return self.tls is not None and self.tls.mutual

    # ------------------------------------------------------------ life cycle

    def _bound(self) -> IncomingConnections:
        if self.incoming is None:
            raise TransportError("tcp transport is not bound yet")
        return self.incoming

    @property
    def port(self) -> int:
        """The bound port (after bind)."""
        return self._bound().port

    @property
    def family(self) -> socket.AddressFamily:
        """The bound address family (after bind)."""
        return self._bound().family

    @property
    def accepted(self) -> int:
        """Incoming connections accepted so far."""
        return 0 if self.incoming is None else self.incoming.accepted

    async def bind(self) -> str:
        bind = self.options.bind
        try:
            listener = await anyio.create_tcp_listener(
                local_host=bind.host or None, local_port=bind.port
            )
        except OSError as exc:
            raise TransportError(f"cannot listen on {bind}: {exc.strerror or exc}") from None
        listeners: list[SocketListener] = list(listener.listeners)  # type: ignore[attr-defined,arg-type]
        self.incoming = IncomingConnections(
            listeners,
            self.options,
            self.stats,
            self.log,
            tls=None if self.tls is None else self.tls.server,
        )
        self.address = str(self._advertised(bind))
        return self.address

    def _advertised(self, bound: Address) -> Address:
        advertise = self.options.advertise
        if advertise is not None:
            return advertise if advertise.port else advertise.with_port(self.port)
        if bound.is_wildcard:
            self.log.warning(
                "tcp transport bound to all interfaces; advertising loopback"
                " (set [transport] advertise)"
            )
            return Address("::1" if bound.host == "::" else "127.0.0.1", self.port)
        return bound.with_port(self.port)

    async def serve(self, on_frame: FrameHandler, on_stream: StreamHandler) -> None:
        if self.incoming is None:
            raise TransportError("tcp transport: serve() called before bind()")
        async with anyio.create_task_group() as tg:
            self._serve_scope = tg.cancel_scope
            if self._closed:
                tg.cancel_scope.cancel()
            self.incoming.start(tg, on_frame, on_stream)
            tg.start_soon(self._sweep_idle)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        closed = TransportError("tcp transport is closed")
        await self.pool.close_all(closed)
        if self.incoming is not None:
            await self.incoming.aclose()
        for message_stream in list(self._streams):
            await message_stream.aclose()
        if self._serve_scope is not None:
            self._serve_scope.cancel()

    # ------------------------------------------------------------ outgoing

    def _next_id(self) -> int:
        return next(self._ids) % MAX_REQUEST_ID + 1

    def _check_open(self) -> None:
        if self._closed:
            raise TransportError("tcp transport is closed")

    async def request(self, address: str, data: bytes, timeout: float) -> bytes:
        self._check_open()
        if len(data) > self.max_frame:
            raise FrameTooLarge(
                f"request of {len(data)} bytes to {address} exceeds"
                f" the frame limit of {self.max_frame} bytes"
            )
        with anyio.move_on_after(timeout):
            for attempt in range(2):
                conn, fresh = await self.pool.connection(address)
                request_id = self._next_id()
                conn.mux.expect(request_id)
                try:
                    await conn.write(FrameType.REQUEST, request_id, data)
                    return await conn.mux.wait(request_id)
                except ConnectionLost as exc:
                    # A pooled connection the peer dropped while idle fails on first
                    # use; one retry on a fresh connection hides that.
                    if fresh or attempt:
                        raise TransportError(str(exc)) from None
                finally:
                    conn.mux.forget(request_id)
                    conn.touch()
        raise RequestTimeout(f"no reply from {address} within {timeout:g}s")

    async def send(self, address: str, data: bytes) -> None:
        if self._closed:
            self.stats.drop("closed")
            return
        if len(data) > self.max_frame:
            self.stats.drop("frame-too-large")
            self.log.warning(
                "not sending %d bytes to %s: over the frame limit of %d",
                len(data),
                address,
                self.max_frame,
            )
            return
        # Bounded so a peer that stopped reading cannot hold the caller forever.
        with anyio.move_on_after(self.options.connect_timeout * 2) as scope:
            try:
                conn, _ = await self.pool.connection(address)
                await conn.write(FrameType.ONEWAY, 0, data)
                conn.touch()
            except TransportError as exc:
                self.stats.drop("send-failed")
                self.log.debug("one-way frame to %s dropped: %s", address, exc)
        if scope.cancelled_caught:
            self.stats.drop("send-timeout")

    async def open_stream(self, address: str) -> TcpMessageStream:
        self._check_open()
        stream, reader = await dial(
            address,
            PURPOSE_STREAM,
            self.options.connect_timeout,
            self.max_frame,
            tls=self.pool.tls,
            stats=self.stats,
        )
        message_stream = TcpMessageStream(
            stream, reader, address, self.stats, self.max_frame, on_close=self._streams.discard
        )
        self._streams.add(message_stream)  # closed with the transport if still open
        return message_stream

    async def _sweep_idle(self) -> None:
        period = max(self.options.idle_timeout / 2, 0.01)
        while True:
            await anyio.sleep(period)
            await self.close_idle()

    async def close_idle(self) -> None:
        """Close outgoing connections nobody used for `idle_timeout`, and incoming
        ones quiet for twice that."""
        await self.pool.close_idle(self.options.idle_timeout)
        if self.incoming is not None:
            await self.incoming.close_idle(self.options.idle_timeout)
