"""The serving side: accepting connections and running handlers for their frames."""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING, Any

import anyio
import attrs
from anyio.abc import ByteStream, SocketAttribute, SocketListener

from hedgeplug.plugin import FrameHandler, StreamHandler, TransportError, TransportStats

from .._framing import PURPOSE_FRAMES, PURPOSE_STREAM, FrameReader, FrameRejected, FrameType
from .connection import NETWORK_ERRORS, FramedSocket, frame_source, remote_name
from .options import TcpOptions
from .stream import TcpMessageStream

if TYPE_CHECKING:
    import ssl


@attrs.define
class _Served:
    """An incoming frame connection as the idle sweep sees it."""

    link: FramedSocket
    slots: anyio.Semaphore
    last_active: float


_Job = tuple[FramedSocket, FrameType, int, bytes, FrameHandler, anyio.Semaphore]


class _Parked:
    """A handler task waiting for its next frame."""

    __slots__ = ("_job", "_ready")

    def __init__(self) -> None:
        self._job: _Job | None = None
        self._ready = anyio.Event()

    def hand(self, job: _Job | None) -> None:
        """The next frame to handle, or None: no more frames, stop."""
        self._job = job
        self._ready.set()

    async def next_job(self) -> _Job | None:
        await self._ready.wait()
        return self._job


class _ParkingLot(list[_Parked]):
    """The parked handler tasks of one connection; `closed` once it has no more frames."""

    closed = False

    def close(self) -> None:
        self.closed = True
        while self:
            self.pop().hand(None)


class IncomingConnections:
    """Accepts on the bound listeners and serves each connection by its purpose."""

    def __init__(
        self,
        listeners: list[SocketListener],
        options: TcpOptions,
        stats: TransportStats,
        log: logging.Logger,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.options = options
        self.tls = tls
        self.max_frame = int(options.max_frame)
        self.stats = stats
        self.log = log
        self.accepted = 0  # incoming connections accepted so far (tests check pooling with it)
        self._listeners = listeners
        self._incoming: set[ByteStream] = set()  # as accepted (under TLS, if any)
        self._served: dict[ByteStream, _Served] = {}  # incoming frame connections

    @property
    def port(self) -> int:
        return int(self._listeners[0].extra(SocketAttribute.local_port))

    @property
    def family(self) -> socket.AddressFamily:
        return self._listeners[0].extra(SocketAttribute.family)

    def __len__(self) -> int:
        """Connections open right now."""
        return len(self._incoming)

    def start(self, tg: Any, on_frame: FrameHandler, on_stream: StreamHandler) -> None:
        """Accept in `tg` until closed; each connection is served in `tg` too."""
        for listener in self._listeners:
            tg.start_soon(self._accept_loop, listener, tg, on_frame, on_stream)

    async def close_idle(self, idle_timeout: float) -> None:
        """Close connections quiet for twice `idle_timeout`: a client closes its own
        idle connections first, so one still open is abandoned (or hostile) and
        only holds a slot."""
        cutoff = anyio.current_time() - 2 * idle_timeout
        for served in list(self._served.values()):
            handlers_running = served.slots.value < self.options.max_inflight
            if served.last_active < cutoff and not handlers_running:
                self.log.debug("closing idle connection from %s", served.link.peer)
                await served.link.close(TransportError("idle"))

    async def aclose(self) -> None:
        for listener in self._listeners:
            await anyio.aclose_forcefully(listener)
        for stream in list(self._incoming):
            await anyio.aclose_forcefully(stream)

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
        self, accepted: ByteStream, on_frame: FrameHandler, on_stream: StreamHandler
    ) -> None:
        peer = remote_name(accepted)
        stream = accepted
        if self.tls is not None:
            secured = await self._secure(accepted, peer, self.tls)
            if secured is None:
                return
            stream = secured
        reader = FrameReader(frame_source(stream), self.max_frame)
        try:
            with anyio.fail_after(self.options.connect_timeout):
                purpose = await reader.read_preamble()
        except FrameRejected as exc:
            self.stats.drop(exc.reason)
            self.log.debug("closing connection from %s: %s", peer, exc)
            purpose = None
        except (TimeoutError, anyio.EndOfStream, *NETWORK_ERRORS):
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
            self._incoming.discard(accepted)
            self._served.pop(stream, None)
            await anyio.aclose_forcefully(stream)

    async def _secure(
        self, accepted: ByteStream, peer: str, tls: ssl.SSLContext
    ) -> ByteStream | None:
        """The connection under TLS, or None (counted, logged, closed) when the
        peer fails the handshake or does not finish it within connect_timeout."""
        from .tls import HandshakeFailed, handshake  # loaded only when TLS is configured

        try:
            return await handshake(
                accepted, tls, server_side=True, timeout=self.options.connect_timeout
            )
        except HandshakeFailed as exc:
            self.stats.drop(exc.reason)
            self.log.info("refused a TLS connection from %s: %s", peer, exc)
            self._incoming.discard(accepted)
            await anyio.aclose_forcefully(accepted)
            return None

    async def _serve_frames(
        self, stream: ByteStream, reader: FrameReader, peer: str, on_frame: FrameHandler
    ) -> None:
        # Replies need no shield: only closing the transport cancels a handler, and
        # a reply stalled because the requester stopped reading ends when its idle
        # connection is closed.
        link = FramedSocket(stream, reader, peer, self.stats)
        slots = anyio.Semaphore(self.options.max_inflight)
        served = _Served(link, slots, anyio.current_time())
        self._served[stream] = served
        # Handler tasks that finished wait here for the next frame: handing a
        # frame to a parked task costs less than starting a task per frame.
        # At most max_inflight of them, like the handlers running.
        parked = _ParkingLot()
        async with anyio.create_task_group() as handlers:
            try:
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
                    except NETWORK_ERRORS:
                        break
                    link.count_in(body)
                    served.last_active = anyio.current_time()
                    if kind is FrameType.ONEWAY or kind is FrameType.REQUEST:
                        try:
                            slots.acquire_nowait()
                        except anyio.WouldBlock:
                            await slots.acquire()  # at the limit, stop reading: TCP pushes back
                        job = (link, kind, request_id, body, on_frame, slots)
                        if parked:
                            parked.pop().hand(job)
                        else:
                            handlers.start_soon(self._worker, job, parked)
                    else:
                        self.stats.drop("unexpected-frame")
            finally:
                parked.close()  # no more frames: parked handler tasks end

    async def _worker(self, job: _Job | None, parked: _ParkingLot) -> None:
        """Run `job`, then park and run whatever frame is handed over next,
        until the connection has no more frames."""
        while job is not None:
            await self._handle(*job)
            if parked.closed:
                return
            place = _Parked()
            parked.append(place)
            job = await place.next_job()

    async def _handle(
        self,
        link: FramedSocket,
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
        self, link: FramedSocket, kind: FrameType, request_id: int, body: bytes
    ) -> None:
        try:
            await link.write(kind, request_id, body)
        except TransportError:
            self.stats.drop("reply-failed")  # the requester went away
