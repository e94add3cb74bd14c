"""The udp transport: small frames as datagrams, everything else over tcp.

A node listens for datagrams and for tcp connections on the same port
number. A frame that fits in `max_datagram` (with its 8-byte header) travels
as one datagram; a larger frame, and every stream, goes over an internal tcp
transport. Requests and replies are matched by id; a lost datagram is not
resent, the request simply times out. A reply too large for a datagram is
parked on the serving side and fetched over tcp.

Layouts: see `datagram.py`.
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
import socket

import anyio

from hedgeplug.plugin import (
    Address,
    FrameHandler,
    FrameTooLarge,
    MessageStream,
    RequestTimeout,
    Size,
    StreamHandler,
    TransportError,
    TransportStats,
)

from ..tcp import TcpOptions, TcpTransport
from ..tcp.connection import peer_address
from .datagram import (
    HEADER_SIZE,
    MAX_REQUEST_ID,
    ONEWAY,
    REQUEST,
    TCP_FETCH,
    TCP_FRAME,
    encode_datagram,
)
from .options import UdpOptions
from .server import DatagramServer
from .sockets import ClientSocket, FetchOverTcp, Sender

BIND_ATTEMPTS = 20  # port 0: tries to find a number free for both tcp and udp


class LimitedStream:
    """A tcp stream held to this transport's frame limit (the inner tcp allows one byte more)."""

    def __init__(self, inner: MessageStream, max_frame: int) -> None:
        self._inner = inner
        self._max_frame = max_frame

    async def send(self, data: bytes) -> None:
        if len(data) > self._max_frame:
            raise FrameTooLarge(
                f"stream message of {len(data)} bytes exceeds the limit of {self._max_frame} bytes"
            )
        await self._inner.send(data)

    async def receive(self) -> bytes:
        return await self._inner.receive()

    async def aclose(self) -> None:
        await self._inner.aclose()


class UdpTransport:
    """Implements hedgeplug.contracts.Transport with datagrams, falling back to tcp."""

    def __init__(
        self,
        options: UdpOptions | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        self.options = options or UdpOptions()
        self.max_frame = int(self.options.max_frame)
        self.max_datagram = int(self.options.max_datagram)
        self.stats = TransportStats()
        self.address = ""
        self.log = log or logging.getLogger("hedgeplug.transport.udp")
        self.tcp = self._new_tcp(self.options.bind)
        self._server: DatagramServer | None = None
        self._clients: dict[int, ClientSocket] = {}
        self._client_lock = anyio.Lock()
        self._resolved: dict[str, tuple[int, str, int]] = {}
        self._ids = itertools.count(1)
        self._serve_scope: anyio.CancelScope | None = None
        self._closed = False

    def _new_tcp(self, bind: Address) -> TcpTransport:
        options = TcpOptions(
            bind=bind,
            advertise=self.options.advertise,
            max_frame=Size(self.max_frame + 1),  # the leading kind byte
            connect_timeout=self.options.connect_timeout,
            idle_timeout=self.options.idle_timeout,
        )
        return TcpTransport(options, log=self.log, stats=self.stats)

    @property
    def parked_replies(self) -> int:
        """Large replies waiting for their requester to fetch them over tcp."""
        return 0 if self._server is None else len(self._server.parked)

    # ------------------------------------------------------------ life cycle

    async def bind(self) -> str:
        bind = self.options.bind
        last_error: OSError | None = None
        for _ in range(BIND_ATTEMPTS if bind.port == 0 else 1):
            address = await self.tcp.bind()
            try:
                sock = await anyio.create_udp_socket(
                    self.tcp.family, local_host=bind.host or None, local_port=self.tcp.port  # type: ignore[arg-type]
                )
            except OSError as exc:
                last_error = exc
                # That number is taken for udp; start over with a new tcp port.
                await self.tcp.aclose()
                self.tcp = self._new_tcp(self.options.bind)
                continue
            self._server = DatagramServer(
                Sender(sock, self.stats), self.max_frame, self.max_datagram, self.stats, self.log
            )
            self.address = address
            return address
        reason = (last_error.strerror if last_error else None) or str(last_error)
        raise TransportError(f"cannot bind udp on {bind}: {reason}")

    async def serve(self, on_frame: FrameHandler, on_stream: StreamHandler) -> None:
        server = self._server
        if server is None:
            raise TransportError("udp transport: serve() called before bind()")

        async def from_tcp(data: bytes, peer: str) -> bytes | None:
            kind, body = data[:1], data[1:]
            if kind == TCP_FRAME:
                return await on_frame(body, peer)
            if kind == TCP_FETCH:
                return server.parked.unpark(body)
            self.stats.drop("bad-frame")
            return None

        async with anyio.create_task_group() as tg:
            self._serve_scope = tg.cancel_scope
            if self._closed:
                tg.cancel_scope.cancel()
            tg.start_soon(self.tcp.serve, from_tcp, on_stream)
            tg.start_soon(server.receive_loop, on_frame, tg)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.tcp.aclose()
        sockets = [c.sock for c in self._clients.values()]
        if self._server is not None:
            sockets.append(self._server.sender.sock)
        for sock in sockets:
            await anyio.aclose_forcefully(sock)
        for client in self._clients.values():
            client.mux.fail_all(TransportError("udp transport is closed"))
        if self._serve_scope is not None:
            self._serve_scope.cancel()

    # ------------------------------------------------------------ outgoing

    def _check_open(self) -> None:
        if self._closed:
            raise TransportError("udp transport is closed")

    def _fits(self, data: bytes) -> bool:
        return HEADER_SIZE + len(data) <= self.max_datagram

    async def _target(self, address: str) -> tuple[int, str, int]:
        """(family, ip, port) of `address`, resolved once."""
        found = self._resolved.get(address)
        if found is not None:
            return found
        peer = peer_address(address)
        host, port = peer.host, peer.port
        try:
            found = (ipaddress.ip_address(host).version, host, port)
        except ValueError:
            try:
                infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
            except OSError as exc:
                raise TransportError(f"cannot resolve {address}: {exc}") from None
            family, _, _, _, sockaddr = infos[0]
            found = (6 if family == socket.AF_INET6 else 4, str(sockaddr[0]), port)
        self._resolved[address] = found
        return found

    async def _client(self, version: int) -> ClientSocket:
        client = self._clients.get(version)
        if client is not None:
            return client
        async with self._client_lock:
            client = self._clients.get(version)
            if client is None:
                self._check_open()
                family = socket.AF_INET6 if version == 6 else socket.AF_INET
                try:
                    sock = await anyio.create_udp_socket(
                        family, local_host=self._source_host(version)  # type: ignore[arg-type]
                    )
                except OSError as exc:
                    raise TransportError(f"cannot open a udp socket: {exc}") from None
                client = self._clients[version] = ClientSocket(sock, self.stats)
            return client

    def _source_host(self, version: int) -> str | None:
        """Send from the bound host if it is an address of that IP version, else let the OS pick."""
        bind = self.options.bind
        try:
            matches = ipaddress.ip_address(bind.host).version == version
        except ValueError:
            return None
        return None if bind.is_wildcard or not matches else bind.host

    def _next_id(self) -> int:
        return next(self._ids) % MAX_REQUEST_ID + 1

    async def request(self, address: str, data: bytes, timeout: float) -> bytes:
        self._check_open()
        if len(data) > self.max_frame:
            raise FrameTooLarge(
                f"request of {len(data)} bytes to {address} exceeds"
                f" the frame limit of {self.max_frame} bytes"
            )
        if not self._fits(data):
            return await self.tcp.request(address, TCP_FRAME + data, timeout)
        deadline = anyio.current_time() + timeout
        with anyio.move_on_after(timeout):
            version, host, port = await self._target(address)
            client = await self._client(version)
            request_id = self._next_id()
            client.mux.expect(request_id)
            try:
                await client.sendto(encode_datagram(REQUEST, request_id, data), host, port)
                return await client.mux.wait(request_id)
            except FetchOverTcp as parked:
                remaining = max(deadline - anyio.current_time(), 0.001)
                return await self.tcp.request(address, TCP_FETCH + parked.ticket, remaining)
            except OSError as exc:
                raise TransportError(f"cannot send to {address}: {exc}") from None
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                raise TransportError("udp transport is closed") from None
            finally:
                client.mux.forget(request_id)
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
        if not self._fits(data):
            await self.tcp.send(address, TCP_FRAME + data)
            return
        try:
            version, host, port = await self._target(address)
            client = await self._client(version)
            await client.sendto(encode_datagram(ONEWAY, 0, data), host, port)
        except (
            TransportError,
            OSError,
            anyio.ClosedResourceError,
            anyio.BrokenResourceError,
        ) as exc:
            self.stats.drop("send-failed")
            self.log.debug("one-way datagram to %s dropped: %s", address, exc)

    async def open_stream(self, address: str) -> MessageStream:
        self._check_open()
        return LimitedStream(await self.tcp.open_stream(address), self.max_frame)
