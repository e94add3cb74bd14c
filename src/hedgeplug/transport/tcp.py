"""The `tcp` transport: pooled persistent connections, requests multiplexed by id.

Each node keeps at most one outgoing connection per peer address and sends
all its requests and one-way frames to that peer over it; replies come back
on the same connection tagged with the request's id, so many requests can be
in flight at once. Streams get a connection of their own, so their flow
control (TCP's) never stalls the shared one. Outgoing connections idle for
`idle_timeout` are closed; the serving side closes a connection only after
twice that (a request on a connection the peer just closed is retried once on
a fresh one).

Wire layout: see `_framing.py`. Frames are opaque bytes to this module.
"""

from __future__ import annotations

import itertools
import logging
import socket
from collections.abc import Callable
from typing import Any

import anyio
import attrs
from anyio.abc import SocketAttribute, SocketListener, SocketStream

from hedgeplug.config import Duration, Size
from hedgeplug.contracts import FrameHandler, NodeContext, StreamHandler, TransportStats
from hedgeplug.errors import FrameTooLarge, RequestTimeout, TransportError
from hedgeplug.hookspecs import hookimpl

from ._address import format_address, is_wildcard, parse_address
from ._framing import (
    HEADER_SIZE,
    MAX_REQUEST_ID,
    PURPOSE_FRAMES,
    PURPOSE_STREAM,
    FrameReader,
    FrameRejected,
    FrameType,
    encode_frame,
    preamble,
)
from ._mux import ReplyMux

_NETWORK_ERRORS = (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError)


def _check_bind(_inst: Any, _attr: attrs.Attribute, value: str) -> None:
    try:
        parse_address(value, what="bind address")
    except TransportError as exc:
        raise ValueError(str(exc)) from None


def _check_advertise(_inst: Any, _attr: attrs.Attribute, value: str) -> None:
    if value and (value.startswith("[") or value.count(":") == 1):
        try:
            parse_address(value, what="advertise address")
        except TransportError as exc:
            raise ValueError(str(exc)) from None


def _at_least(minimum: float) -> Callable[[Any, attrs.Attribute, Any], None]:
    def check(_inst: Any, attr: attrs.Attribute, value: Any) -> None:
        if value < minimum:
            raise ValueError(f"{attr.name} must be at least {minimum}, got {value}")

    return check


@attrs.frozen
class TcpOptions:
    """[transport] keys of the tcp transport."""

    bind: str = attrs.field(
        default="127.0.0.1:0",
        validator=_check_bind,
        metadata={"help": "host:port to listen on; port 0 picks a free one; IPv6 as [::1]:0"},
    )
    advertise: str = attrs.field(
        default="",
        validator=_check_advertise,
        metadata={"help": "address other nodes dial (host or host:port); default: the bound one"},
    )
    max_frame: Size = attrs.field(
        default=Size(1 << 20),
        validator=[_at_least(64), attrs.validators.le(Size(MAX_REQUEST_ID))],
        metadata={
            "help": "largest frame sent or accepted; larger incoming frames close the connection"
        },
    )
    connect_timeout: Duration = attrs.field(
        default=Duration(3.0),
        validator=_at_least(0.001),
        metadata={"help": "bound on opening a connection, a one-way send, a stalled write"},
    )
    idle_timeout: Duration = attrs.field(
        default=Duration(60.0),
        validator=_at_least(0.01),
        metadata={
            "help": "idle outgoing connections are closed after this, incoming ones after twice it"
        },
    )
    max_connections: int = attrs.field(
        default=1024,
        validator=_at_least(1),
        metadata={"help": "incoming connections served at once; more are refused and counted"},
    )
    max_inflight: int = attrs.field(
        default=64,
        validator=_at_least(1),
        metadata={"help": "handlers running at once per incoming connection; then reading pauses"},
    )


class _ConnectionLost(TransportError):
    """The peer closed or reset a connection before the reply came."""


class _FramedSocket:
    """One TCP connection carrying frames: a reader and a serialised writer.

    With `stall_timeout` set (connections shared by many requests), a frame once
    started is written whole even if its caller is cancelled, so one request's
    timeout never cuts the stream for the others; a write stalled that long
    closes the connection. Without it (streams, whose senders must wait out
    backpressure), a send interrupted by cancellation closes the connection.
    """

    def __init__(
        self,
        stream: SocketStream,
        reader: FrameReader,
        peer: str,
        stats: TransportStats,
        stall_timeout: float | None = None,
    ) -> None:
        self.stream = stream
        self.reader = reader
        self.peer = peer
        self.stats = stats
        self.broken: TransportError | None = None
        self._stall_timeout = stall_timeout
        self._send_lock = anyio.Lock()

    async def write(self, kind: FrameType, request_id: int, body: bytes) -> None:
        frame = encode_frame(kind, request_id, body)
        async with self._send_lock:
            if self.broken is not None:
                raise self.broken
            if self._stall_timeout is None:
                await anyio.lowlevel.checkpoint_if_cancelled()  # before any byte: no harm
                await self._send_or_close(frame)
            else:
                await anyio.lowlevel.checkpoint_if_cancelled()
                # Shielded from the caller, bounded by its own deadline.
                deadline = anyio.current_time() + self._stall_timeout
                with anyio.CancelScope(shield=True, deadline=deadline) as guard:
                    await self._send_or_close(frame)
                if guard.cancelled_caught:
                    with anyio.CancelScope(shield=True):
                        await self.close(
                            TransportError(
                                f"connection to {self.peer} stalled: a frame could not be"
                                f" written within {self._stall_timeout:g}s"
                            )
                        )
                if self.broken is not None:
                    raise self.broken
        self.stats.frames_out += 1
        self.stats.bytes_out += len(frame)

    async def _send_or_close(self, frame: bytes) -> None:
        sent = False
        try:
            await self.stream.send(frame)
            sent = True
        except _NETWORK_ERRORS as exc:
            lost = _ConnectionLost(f"connection to {self.peer} failed while sending: {exc}")
            await self.close(lost)
            raise lost from None
        finally:
            if not sent and self.broken is None:
                # Interrupted mid-frame: a half-written frame would corrupt everything
                # after it. Not a _ConnectionLost: the peer may have our earlier frames.
                await self.close(
                    TransportError(f"connection to {self.peer} closed: a frame was cut short")
                )

    def count_in(self, body: bytes) -> None:
        self.stats.frames_in += 1
        self.stats.bytes_in += HEADER_SIZE + len(body)

    async def close(self, reason: TransportError) -> None:
        if self.broken is None:
            self.broken = reason
        await anyio.aclose_forcefully(self.stream)


class _Outgoing(_FramedSocket):
    """A pooled connection to one peer; replies are matched to requests by id."""

    def __init__(
        self,
        stream: SocketStream,
        reader: FrameReader,
        peer: str,
        stats: TransportStats,
        on_closed: Callable[[_Outgoing], None],
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
            error = _ConnectionLost(f"connection to {self.peer} was closed by the peer")
        except _NETWORK_ERRORS as exc:
            error = _ConnectionLost(f"connection to {self.peer} failed: {exc}")
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


@attrs.define
class _Served:
    """An incoming frame connection as the idle sweep sees it."""

    link: _FramedSocket
    slots: anyio.Semaphore
    last_active: float


class TcpMessageStream:
    """A MessageStream over a dedicated connection; TCP's flow control is the backpressure."""

    def __init__(
        self,
        stream: SocketStream,
        reader: FrameReader,
        peer: str,
        stats: TransportStats,
        max_frame: int,
        on_close: Callable[[TcpMessageStream], None] | None = None,
    ) -> None:
        self._socket = _FramedSocket(stream, reader, peer, stats)
        self._max_frame = max_frame
        self._on_close = on_close
        self._receive_lock = anyio.Lock()
        self.peer = peer

    async def send(self, data: bytes) -> None:
        if len(data) > self._max_frame:
            raise FrameTooLarge(
                f"stream message of {len(data)} bytes to {self.peer} exceeds"
                f" the limit of {self._max_frame} bytes"
            )
        try:
            await self._socket.write(FrameType.STREAM, 0, data)
        except _ConnectionLost as exc:
            raise TransportError(f"stream to {self.peer} is broken: {exc}") from None

    async def receive(self) -> bytes:
        async with self._receive_lock:
            if self._socket.broken is not None:
                raise anyio.EndOfStream
            try:
                kind, _, body = await self._socket.reader.read()
            except FrameRejected as exc:
                self._socket.stats.drop(exc.reason)
                await self._socket.close(TransportError(str(exc)))
                raise TransportError(f"bad message on stream from {self.peer}: {exc}") from None
            except anyio.EndOfStream:
                raise
            except _NETWORK_ERRORS as exc:
                raise TransportError(f"stream from {self.peer} failed: {exc}") from None
        if kind is not FrameType.STREAM:
            self._socket.stats.drop("unexpected-frame")
            await self._socket.close(TransportError("unexpected frame type on a stream"))
            raise TransportError(f"stream from {self.peer} sent a {kind.name} frame")
        self._socket.count_in(body)
        return body

    async def aclose(self) -> None:
        if self._on_close is not None:
            self._on_close(self)
        await self._socket.close(TransportError(f"stream to {self.peer} is closed"))


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
        self.accepted = 0  # incoming connections accepted so far (tests check pooling with it)
        self._listeners: list[SocketListener] = []
        self._pool: dict[str, _Outgoing] = {}
        self._connect_locks: dict[str, anyio.Lock] = {}
        self._connect_failures: dict[str, tuple[float, str]] = {}  # address -> (when, why)
        self._incoming: set[SocketStream] = set()
        self._served: dict[SocketStream, _Served] = {}  # incoming frame connections
        self._streams: set[TcpMessageStream] = set()  # outgoing, until closed
        self._ids = itertools.count(1)
        self._serve_scope: anyio.CancelScope | None = None
        self._closed = False

    # ------------------------------------------------------------ life cycle

    @property
    def port(self) -> int:
        """The bound port (after bind)."""
        return int(self._listeners[0].extra(SocketAttribute.local_port))

    async def bind(self) -> str:
        host, port = parse_address(self.options.bind, what="[transport] bind address")
        try:
            listener = await anyio.create_tcp_listener(local_host=host or None, local_port=port)
        except OSError as exc:
            raise TransportError(
                f"cannot listen on {self.options.bind}: {exc.strerror or exc}"
            ) from None
        self._listeners = list(listener.listeners)  # type: ignore[attr-defined,arg-type]
        self.address = self._advertised(host)
        return self.address

    def _advertised(self, bound_host: str) -> str:
        advertise = self.options.advertise.strip()
        if advertise.startswith("[") or advertise.count(":") == 1:
            return advertise
        if advertise:
            return format_address(advertise, self.port)
        if is_wildcard(bound_host):
            self.log.warning(
                "tcp transport bound to all interfaces; advertising loopback"
                " (set [transport] advertise)"
            )
            return format_address("::1" if bound_host == "::" else "127.0.0.1", self.port)
        return format_address(bound_host, self.port)

    async def serve(self, on_frame: FrameHandler, on_stream: StreamHandler) -> None:
        if not self._listeners:
            raise TransportError("tcp transport: serve() called before bind()")
        async with anyio.create_task_group() as tg:
            self._serve_scope = tg.cancel_scope
            if self._closed:
                tg.cancel_scope.cancel()
            for listener in self._listeners:
                tg.start_soon(self._accept_loop, listener, tg, on_frame, on_stream)
            tg.start_soon(self._sweep_idle)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        closed = TransportError("tcp transport is closed")
        for listener in self._listeners:
            await anyio.aclose_forcefully(listener)
        for conn in list(self._pool.values()):
            await conn.close(closed)
        for stream in list(self._incoming):
            await anyio.aclose_forcefully(stream)
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

    async def _connect(self, address: str, purpose: bytes) -> tuple[SocketStream, FrameReader]:
        host, port = parse_address(address)
        timeout = self.options.connect_timeout
        stream: SocketStream | None = None
        with anyio.move_on_after(timeout):
            try:
                stream = await anyio.connect_tcp(host, port)
                await stream.send(preamble(purpose))
            except _NETWORK_ERRORS as exc:
                if stream is not None:
                    await anyio.aclose_forcefully(stream)
                reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
                raise TransportError(f"cannot connect to {address}: {reason}") from None
            _set_nodelay(stream)
            return stream, FrameReader(stream, self.max_frame)
        if stream is not None:
            await anyio.aclose_forcefully(stream)
        raise TransportError(f"cannot connect to {address}: no answer within {timeout:g}s")

    async def _connection(self, address: str) -> tuple[_Outgoing, bool]:
        """The pooled connection to `address` and whether it was opened just now."""
        conn = self._pool.get(address)
        if conn is not None and conn.broken is None:
            return conn, False
        lock = self._connect_locks.setdefault(address, anyio.Lock())
        asked_at = anyio.current_time()
        async with lock:
            conn = self._pool.get(address)
            if conn is not None and conn.broken is None:
                return conn, False
            failed = self._connect_failures.get(address)
            if failed is not None and failed[0] >= asked_at:
                # The attempt we queued behind just failed: share its answer
                # instead of each waiter spending a full connect_timeout again.
                raise TransportError(failed[1])
            self._check_open()
            try:
                stream, reader = await self._connect(address, PURPOSE_FRAMES)
            except TransportError as exc:
                self._connect_failures[address] = (anyio.current_time(), str(exc))
                raise
            self._connect_failures.pop(address, None)
            conn = _Outgoing(
                stream,
                reader,
                address,
                self.stats,
                self._forget_connection,
                stall_timeout=self.options.connect_timeout,
            )
            self._pool[address] = conn
            return conn, True

    def _forget_connection(self, conn: _Outgoing) -> None:
        if self._pool.get(conn.peer) is conn:
            del self._pool[conn.peer]

    async def request(self, address: str, data: bytes, timeout: float) -> bytes:
        self._check_open()
        if len(data) > self.max_frame:
            raise FrameTooLarge(
                f"request of {len(data)} bytes to {address} exceeds"
                f" the frame limit of {self.max_frame} bytes"
            )
        with anyio.move_on_after(timeout):
            for attempt in range(2):
                conn, fresh = await self._connection(address)
                request_id = self._next_id()
                conn.mux.expect(request_id)
                try:
                    await conn.write(FrameType.REQUEST, request_id, data)
                    return await conn.mux.wait(request_id)
                except _ConnectionLost as exc:
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
                conn, _ = await self._connection(address)
                await conn.write(FrameType.ONEWAY, 0, data)
                conn.touch()
            except TransportError as exc:
                self.stats.drop("send-failed")
                self.log.debug("one-way frame to %s dropped: %s", address, exc)
        if scope.cancelled_caught:
            self.stats.drop("send-timeout")

    async def open_stream(self, address: str) -> TcpMessageStream:
        self._check_open()
        stream, reader = await self._connect(address, PURPOSE_STREAM)
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
        ones quiet for twice that: a client closes its own idle connections
        first, so one still open is abandoned (or hostile) and only holds a slot."""
        now = anyio.current_time()
        cutoff = now - self.options.idle_timeout
        for conn in list(self._pool.values()):
            if len(conn.mux) == 0 and conn.last_used < cutoff:
                await conn.close(_ConnectionLost(f"idle connection to {conn.peer} closed"))
        incoming_cutoff = now - 2 * self.options.idle_timeout
        for served in list(self._served.values()):
            handlers_running = served.slots.value < self.options.max_inflight
            if served.last_active < incoming_cutoff and not handlers_running:
                self.log.debug("closing idle connection from %s", served.link.peer)
                await served.link.close(TransportError("idle"))
        for address, lock in list(self._connect_locks.items()):
            if address not in self._pool and not lock.locked():
                del self._connect_locks[address]
                self._connect_failures.pop(address, None)

    # ------------------------------------------------------------ incoming

    async def _accept_loop(
        self, listener: SocketListener, tg: Any, on_frame: FrameHandler, on_stream: StreamHandler
    ) -> None:
        while True:
            try:
                stream = await listener.accept()
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                return  # the listener was closed by aclose()
            except OSError as exc:
                # Out of file descriptors and the like: wait a little rather than spin.
                self.stats.drop("accept-failed")
                self.log.warning("tcp accept failed: %s", exc)
                await anyio.sleep(0.1)
                continue
            if len(self._incoming) >= self.options.max_connections:
                self.stats.drop("too-many-connections")
                await anyio.aclose_forcefully(stream)
                continue
            self.accepted += 1
            self._incoming.add(stream)
            tg.start_soon(self._serve_connection, stream, on_frame, on_stream)

    async def _serve_connection(
        self, stream: SocketStream, on_frame: FrameHandler, on_stream: StreamHandler
    ) -> None:
        peer = _remote(stream)
        reader = FrameReader(stream, self.max_frame)
        try:
            with anyio.fail_after(self.options.connect_timeout):
                purpose = await reader.read_preamble()
        except FrameRejected as exc:
            self.stats.drop(exc.reason)
            self.log.debug("closing connection from %s: %s", peer, exc)
            purpose = None
        except (TimeoutError, anyio.EndOfStream, *_NETWORK_ERRORS):
            self.stats.drop("no-preamble")
            purpose = None
        try:
            if purpose == PURPOSE_FRAMES:
                await self._serve_frames(stream, reader, peer, on_frame)
            elif purpose == PURPOSE_STREAM:
                message_stream = TcpMessageStream(stream, reader, peer, self.stats, self.max_frame)
                try:
                    await on_stream(message_stream)
                except Exception as exc:
                    self.stats.drop("stream-handler-error")
                    self.log.warning("stream handler for %s raised: %r", peer, exc)
        finally:
            self._incoming.discard(stream)
            self._served.pop(stream, None)
            await anyio.aclose_forcefully(stream)

    async def _serve_frames(
        self, stream: SocketStream, reader: FrameReader, peer: str, on_frame: FrameHandler
    ) -> None:
        # Replies need no shield: only closing the transport cancels a handler, and
        # a reply stalled because the requester stopped reading ends when its idle
        # connection is closed.
        link = _FramedSocket(stream, reader, peer, self.stats)
        slots = anyio.Semaphore(self.options.max_inflight)
        served = _Served(link, slots, anyio.current_time())
        self._served[stream] = served
        async with anyio.create_task_group() as handlers:
            while True:
                try:
                    kind, request_id, body = await reader.read()
                except anyio.EndOfStream:
                    break
                except FrameRejected as exc:
                    self.stats.drop(exc.reason)
                    self.log.info("closing connection from %s: %s", peer, exc)
                    if exc.kind == FrameType.REQUEST:
                        await self._try_write(
                            link, FrameType.ERROR, exc.request_id, str(exc).encode()
                        )
                    break
                except _NETWORK_ERRORS:
                    break
                link.count_in(body)
                served.last_active = anyio.current_time()
                if kind is FrameType.ONEWAY or kind is FrameType.REQUEST:
                    await slots.acquire()  # at the limit, stop reading: TCP pushes back
                    handlers.start_soon(self._handle, link, kind, request_id, body, on_frame, slots)
                else:
                    self.stats.drop("unexpected-frame")

    async def _handle(
        self,
        link: _FramedSocket,
        kind: FrameType,
        request_id: int,
        body: bytes,
        on_frame: FrameHandler,
        slots: anyio.Semaphore,
    ) -> None:
        try:
            try:
                reply = await on_frame(body, link.peer)
            except Exception as exc:
                self.stats.drop("handler-error")
                self.log.warning("frame handler raised for a frame from %s: %r", link.peer, exc)
                if kind is FrameType.REQUEST:
                    message = f"handler failed: {type(exc).__name__}"
                    await self._try_write(link, FrameType.ERROR, request_id, message.encode())
                return
            if kind is not FrameType.REQUEST:
                return
            reply = reply or b""
            if len(reply) > self.max_frame:
                self.stats.drop("reply-too-large")
                message = (
                    f"reply of {len(reply)} bytes exceeds the frame limit of {self.max_frame} bytes"
                )
                await self._try_write(link, FrameType.ERROR, request_id, message.encode())
                return
            await self._try_write(link, FrameType.REPLY, request_id, reply)
        finally:
            slots.release()

    async def _try_write(
        self, link: _FramedSocket, kind: FrameType, request_id: int, body: bytes
    ) -> None:
        try:
            await link.write(kind, request_id, body)
        except TransportError:
            self.stats.drop("reply-failed")  # the requester went away


def _set_nodelay(stream: SocketStream) -> None:
    # Small request frames must not wait for Nagle's algorithm.
    try:
        stream.extra(SocketAttribute.raw_socket).setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
        )
    except (OSError, anyio.TypedAttributeLookupError):
        pass


def _remote(stream: SocketStream) -> str:
    try:
        address = stream.extra(SocketAttribute.remote_address)
    except anyio.TypedAttributeLookupError:
        return "tcp:?"
    if isinstance(address, tuple):
        return format_address(str(address[0]), int(address[1]))
    return str(address)


def make(options: TcpOptions, ctx: NodeContext) -> TcpTransport:
    return TcpTransport(options, log=ctx.log)


@hookimpl
def hedgeplug_register_transports(register: Any) -> None:
    register("tcp", make, TcpOptions)
