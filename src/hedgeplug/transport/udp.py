"""The `udp` transport: small frames as datagrams, everything else over tcp.

A node listens for datagrams and for tcp connections on the same port
number. A frame that fits in `max_datagram` (with its 8-byte header) travels
as one datagram; a larger frame, and every stream, goes over an internal tcp
transport. Requests and replies are matched by id; a lost datagram is not
resent, the request simply times out.

A reply too large for a datagram is parked on the serving side and the
requester fetches it over tcp, so a handler never runs twice for one request.

Datagram layout: b"HU", layout version, datagram type, request id (uint32,
big endian), body. Over the internal tcp transport every frame gets one
leading byte: 0 = a frame for the handler, 1 = fetch a parked reply.
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
import socket
import struct
from collections import OrderedDict
from typing import Any

import anyio
import attrs
from anyio.abc import SocketAttribute, UDPSocket

from hedgeplug.config import Duration, Size
from hedgeplug.contracts import (
    FrameHandler,
    MessageStream,
    NodeContext,
    StreamHandler,
    TransportStats,
)
from hedgeplug.errors import FrameTooLarge, RequestTimeout, TransportError
from hedgeplug.hookspecs import hookimpl

from ._address import is_wildcard, parse_address
from ._mux import ReplyMux
from .tcp import TcpOptions, TcpTransport, _at_least, _check_advertise, _check_bind

MAGIC = b"HU"
LAYOUT_VERSION = 1
HEADER = struct.Struct("!2sBBI")
HEADER_SIZE = HEADER.size
MAX_REQUEST_ID = 0xFFFFFFFF

ONEWAY, REQUEST, REPLY, ERROR, REPLY_BY_TCP = 1, 2, 3, 4, 5
_TYPES = frozenset((ONEWAY, REQUEST, REPLY, ERROR, REPLY_BY_TCP))

TCP_FRAME, TCP_FETCH = b"\x00", b"\x01"

PARKED_REPLIES = 256  # most replies waiting to be fetched; the oldest goes first
PARKED_SECONDS = 30.0
BIND_ATTEMPTS = 20  # port 0: tries to find a number free for both tcp and udp
HANDLERS_AT_ONCE = 256


@attrs.frozen
class UdpOptions:
    """[transport] keys of the udp transport."""

    bind: str = attrs.field(
        default="127.0.0.1:0",
        validator=_check_bind,
        metadata={"help": "host:port for datagrams and tcp alike; port 0 picks a free one"},
    )
    advertise: str = attrs.field(
        default="",
        validator=_check_advertise,
        metadata={"help": "address other nodes dial (host or host:port); default: the bound one"},
    )
    max_datagram: Size = attrs.field(
        default=Size(1400),
        validator=[_at_least(64), attrs.validators.le(Size(65000))],
        metadata={"help": "largest datagram sent; larger frames go over tcp"},
    )
    max_frame: Size = attrs.field(
        default=Size(1 << 20),
        validator=[_at_least(64), attrs.validators.le(Size(0xFFFFFFF0))],
        metadata={"help": "largest frame sent or accepted (over tcp)"},
    )
    connect_timeout: Duration = attrs.field(
        default=Duration(3.0),
        validator=_at_least(0.001),
        metadata={"help": "bound on opening a tcp connection"},
    )
    idle_timeout: Duration = attrs.field(
        default=Duration(60.0),
        validator=_at_least(0.01),
        metadata={"help": "an outgoing tcp connection unused this long is closed"},
    )


def encode_datagram(kind: int, request_id: int, body: bytes) -> bytes:
    return HEADER.pack(MAGIC, LAYOUT_VERSION, kind, request_id) + body


def decode_datagram(data: bytes) -> tuple[int, int, bytes] | None:
    """(type, request id, body), or None for anything that is not ours."""
    if len(data) < HEADER_SIZE:
        return None
    magic, version, kind, request_id = HEADER.unpack_from(data)
    if magic != MAGIC or version != LAYOUT_VERSION or kind not in _TYPES:
        return None
    return kind, request_id, data[HEADER_SIZE:]


class _FetchOverTcp(Exception):
    """The reply was parked on the serving side; fetch it with this ticket."""

    def __init__(self, ticket: bytes) -> None:
        super().__init__("reply parked")
        self.ticket = ticket


class _Sender:
    """A datagram socket with serialised sends (anyio allows one sender at a time)."""

    def __init__(self, sock: UDPSocket, stats: TransportStats) -> None:
        self.sock = sock
        self.stats = stats
        self._lock = anyio.Lock()

    async def sendto(self, datagram: bytes, host: str, port: int) -> None:
        async with self._lock:
            await self.sock.sendto(datagram, host, port)
        self.stats.frames_out += 1
        self.stats.bytes_out += len(datagram)


class _ClientSocket(_Sender):
    """The socket requests leave from; its replies are matched by id."""

    def __init__(self, sock: UDPSocket, stats: TransportStats) -> None:
        super().__init__(sock, stats)
        self.mux = ReplyMux(self._read_one)

    async def _read_one(self) -> None:
        try:
            data, source = await self.sock.receive()
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            self.mux.fail_all(TransportError("udp transport is closed"))
            return
        except OSError:
            self.stats.drop("receive-failed")
            await anyio.sleep(0.01)  # never spin on a failing socket
            return
        decoded = decode_datagram(data)
        if decoded is None:
            self.stats.drop("bad-datagram")
            return
        self.stats.frames_in += 1
        self.stats.bytes_in += len(data)
        kind, request_id, body = decoded
        if kind == REPLY:
            delivered = self.mux.deliver(request_id, body)
        elif kind == ERROR:
            peer = f"{source[0]}:{source[1]}"
            text = body.decode("utf-8", "replace")
            delivered = self.mux.deliver(
                request_id, error=TransportError(f"{peer} could not answer: {text}")
            )
        elif kind == REPLY_BY_TCP:
            delivered = self.mux.deliver(request_id, error=_FetchOverTcp(body))
        else:
            self.stats.drop("unexpected-datagram")
            return
        if not delivered:
            self.stats.drop("late-reply")


class _LimitedStream:
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
        self._server: _Sender | None = None
        self._clients: dict[int, _ClientSocket] = {}
        self._client_lock = anyio.Lock()
        self._resolved: dict[str, tuple[int, str, int]] = {}
        self._ids = itertools.count(1)
        self._tickets = itertools.count(1)
        self._parked: OrderedDict[bytes, tuple[bytes, float]] = OrderedDict()
        self._serve_scope: anyio.CancelScope | None = None
        self._closed = False

    def _new_tcp(self, bind: str) -> TcpTransport:
        options = TcpOptions(
            bind=bind,
            advertise=self.options.advertise,
            max_frame=Size(self.max_frame + 1),  # the leading kind byte
            connect_timeout=self.options.connect_timeout,
            idle_timeout=self.options.idle_timeout,
        )
        return TcpTransport(options, log=self.log, stats=self.stats)

    # ------------------------------------------------------------ life cycle

    async def bind(self) -> str:
        host, port = parse_address(self.options.bind, what="[transport] bind address")
        last_error: OSError | None = None
        for _ in range(BIND_ATTEMPTS if port == 0 else 1):
            address = await self.tcp.bind()
            family = self.tcp._listeners[0].extra(SocketAttribute.family)
            try:
                sock = await anyio.create_udp_socket(
                    family, local_host=host or None, local_port=self.tcp.port  # type: ignore[arg-type]
                )
            except OSError as exc:
                last_error = exc
                # That number is taken for udp; start over with a new tcp port.
                await self.tcp.aclose()
                self.tcp = self._new_tcp(self.options.bind)
                continue
            self._server = _Sender(sock, self.stats)
            self.address = address
            return address
        reason = (last_error.strerror if last_error else None) or str(last_error)
        raise TransportError(f"cannot bind udp on {self.options.bind}: {reason}")

    async def serve(self, on_frame: FrameHandler, on_stream: StreamHandler) -> None:
        if self._server is None:
            raise TransportError("udp transport: serve() called before bind()")

        async def from_tcp(data: bytes, peer: str) -> bytes | None:
            kind, body = data[:1], data[1:]
            if kind == TCP_FRAME:
                return await on_frame(body, peer)
            if kind == TCP_FETCH:
                return self._unpark(body)
            self.stats.drop("bad-frame")
            return None

        async with anyio.create_task_group() as tg:
            self._serve_scope = tg.cancel_scope
            if self._closed:
                tg.cancel_scope.cancel()
            tg.start_soon(self.tcp.serve, from_tcp, on_stream)
            tg.start_soon(self._receive_loop, self._server, on_frame, tg)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.tcp.aclose()
        sockets = [c.sock for c in self._clients.values()]
        if self._server is not None:
            sockets.append(self._server.sock)
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
        host, port = parse_address(address)
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

    async def _client(self, version: int) -> _ClientSocket:
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
                client = self._clients[version] = _ClientSocket(sock, self.stats)
            return client

    def _source_host(self, version: int) -> str | None:
        """Send from the bound host if it is an address of that IP version, else let the OS pick."""
        host, _ = parse_address(self.options.bind)
        try:
            matches = ipaddress.ip_address(host).version == version
        except ValueError:
            return None
        return None if is_wildcard(host) or not matches else host

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
            except _FetchOverTcp as parked:
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
        return _LimitedStream(await self.tcp.open_stream(address), self.max_frame)

    # ------------------------------------------------------------ incoming

    async def _receive_loop(self, server: _Sender, on_frame: FrameHandler, tg: Any) -> None:
        slots = anyio.Semaphore(HANDLERS_AT_ONCE)
        while True:
            try:
                data, (host, port, *_) = await server.sock.receive()
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                return
            except OSError as exc:
                self.stats.drop("receive-failed")
                self.log.debug("udp receive failed: %s", exc)
                await anyio.sleep(0.01)
                continue
            decoded = decode_datagram(data)
            if decoded is None:
                self.stats.drop("bad-datagram")
                continue
            kind, request_id, body = decoded
            if len(body) > self.max_frame:
                self.stats.drop("frame-too-large")
                continue
            self.stats.frames_in += 1
            self.stats.bytes_in += len(data)
            if kind not in (ONEWAY, REQUEST):
                self.stats.drop("unexpected-datagram")
                continue
            # At the limit the loop waits; the kernel then drops excess datagrams.
            await slots.acquire()
            tg.start_soon(self._handle, server, kind, request_id, body, host, port, on_frame, slots)

    async def _handle(
        self,
        server: _Sender,
        kind: int,
        request_id: int,
        body: bytes,
        host: str,
        port: int,
        on_frame: FrameHandler,
        slots: anyio.Semaphore,
    ) -> None:
        peer = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            try:
                reply = await on_frame(body, peer)
            except Exception as exc:
                self.stats.drop("handler-error")
                self.log.warning("frame handler raised for a datagram from %s: %r", peer, exc)
                if kind == REQUEST:
                    await self._answer(
                        server,
                        ERROR,
                        request_id,
                        f"handler failed: {type(exc).__name__}".encode(),
                        host,
                        port,
                    )
                return
            if kind != REQUEST:
                return
            reply = reply or b""
            if len(reply) > self.max_frame:
                self.stats.drop("reply-too-large")
                message = (
                    f"reply of {len(reply)} bytes exceeds the frame limit of {self.max_frame} bytes"
                )
                await self._answer(server, ERROR, request_id, message.encode(), host, port)
            elif self._fits(reply):
                await self._answer(server, REPLY, request_id, reply, host, port)
            else:
                await self._answer(server, REPLY_BY_TCP, request_id, self._park(reply), host, port)
        finally:
            slots.release()

    async def _answer(
        self, server: _Sender, kind: int, request_id: int, body: bytes, host: str, port: int
    ) -> None:
        try:
            await server.sendto(encode_datagram(kind, request_id, body), host, port)
        except (OSError, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self.stats.drop("reply-failed")

    def _park(self, reply: bytes) -> bytes:
        now = anyio.current_time()
        while self._parked:
            ticket, (_, expires) = next(iter(self._parked.items()))
            if expires > now and len(self._parked) < PARKED_REPLIES:
                break
            del self._parked[ticket]
            self.stats.drop("parked-reply-expired")
        ticket = next(self._tickets).to_bytes(8, "big")
        self._parked[ticket] = (reply, now + PARKED_SECONDS)
        return ticket

    def _unpark(self, ticket: bytes) -> bytes:
        found = self._parked.pop(ticket, None)
        if found is None:
            self.stats.drop("unknown-ticket")
            raise TransportError("that reply is no longer parked")  # becomes an error reply
        return found[0]


def make(options: UdpOptions, ctx: NodeContext) -> UdpTransport:
    return UdpTransport(options, log=ctx.log)


@hookimpl
def hedgeplug_register_transports(register: Any) -> None:
    register("udp", make, UdpOptions)
