"""One TCP connection carrying frames, and the socket details every side shares.

On trio, a frame is first written straight to the non-blocking socket and
the reader first takes what the kernel already holds, each a plain system
call: most small frames need no trip through the event loop (the anyio
stream's send and receive each pass two checkpoints and several wrappers,
which cost more than the rest of a message). Only what the kernel cannot
take or give at once waits on the event loop. Elsewhere (asyncio buffers
writes in its transport, so writing around it could reorder bytes) the
anyio stream does everything.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import sniffio
from anyio.abc import ByteReceiveStream, ByteStream, SocketAttribute, SocketStream

from hedgeplug.plugin import Address, AddressError, TransportError, TransportStats

from .._framing import HEADER_SIZE, FrameReader, FrameType, encode_frame

NETWORK_ERRORS = (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError)


def peer_address(text: str) -> Address:
    """A peer's host:port as the caller gave it; a malformed one is a TransportError."""
    try:
        return Address.parse(text, what="peer address")
    except AddressError as exc:
        raise TransportError(str(exc)) from None


class ConnectionLost(TransportError):
    """The peer closed or reset a connection before the reply came."""


# Reads that found data at once in a row before the reader yields anyway,
# so a peer that never stops sending cannot starve the other tasks.
_EAGER_READS = 16


def raw_socket_if_trio(stream: ByteStream) -> socket.socket | None:
    """The socket under `stream` when running on trio (see the module docstring);
    None for a TLS stream, whose bytes must all pass through its ssl object."""
    if not isinstance(stream, SocketStream):
        return None
    try:
        if sniffio.current_async_library() != "trio":
            return None
        return stream.extra(SocketAttribute.raw_socket)
    except (sniffio.AsyncLibraryNotFoundError, anyio.TypedAttributeLookupError):
        return None


class EagerReceive(ByteReceiveStream):
    """A receive stream for FrameReader that first takes what the kernel holds."""

    def __init__(self, stream: SocketStream, sock: socket.socket) -> None:
        self._stream = stream
        self._sock = sock
        self._eager = 0

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if self._eager < _EAGER_READS:
            try:
                data = self._sock.recv(max_bytes)
            except BlockingIOError:
                pass
            else:
                if not data:
                    raise anyio.EndOfStream
                self._eager += 1
                return data
        self._eager = 0
        while True:
            await anyio.wait_readable(self._sock)
            try:
                data = self._sock.recv(max_bytes)
            except BlockingIOError:
                continue  # woken for nothing (another reader took it)
            if not data:
                raise anyio.EndOfStream
            return data

    async def aclose(self) -> None:
        await self._stream.aclose()


class EagerSocketStream(ByteStream):
    """The byte stream under a TLS stream on trio: reads like EagerReceive and
    writes straight to the socket first, so the TLS records of a small frame
    need no trip through the event loop either (see the module docstring)."""

    def __init__(self, stream: SocketStream, sock: socket.socket) -> None:
        self._stream = stream
        self._sock = sock
        self._receiver = EagerReceive(stream, sock)

    async def receive(self, max_bytes: int = 65536) -> bytes:
        return await self._receiver.receive(max_bytes)

    async def send(self, item: bytes) -> None:
        try:
            sent = self._sock.send(item)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise anyio.BrokenResourceError(str(exc)) from exc
        if sent < len(item):
            await self._stream.send(item[sent:])

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return self._stream.extra_attributes


def eager_transport(stream: ByteStream) -> ByteStream:
    """What a TLS stream over `stream` should write to and read from."""
    sock = raw_socket_if_trio(stream)
    if sock is None:
        return stream
    assert isinstance(stream, SocketStream)
    return EagerSocketStream(stream, sock)


def frame_source(stream: ByteStream) -> ByteStream | EagerReceive:
    """What a FrameReader on `stream` should read from."""
    sock = raw_socket_if_trio(stream)
    if sock is None:
        return stream
    assert isinstance(stream, SocketStream)
    return EagerReceive(stream, sock)


class FramedSocket:
    """One TCP connection carrying frames: a reader and a serialised writer.

    With `stall_timeout` set (connections shared by many requests), a frame once
    started is written whole even if its caller is cancelled, so one request's
    timeout never cuts the stream for the others; a write stalled that long
    closes the connection. Without it (streams, whose senders must wait out
    backpressure), a send interrupted by cancellation closes the connection.
    """

    def __init__(
        self,
        stream: ByteStream,
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
        self._sock = raw_socket_if_trio(stream)

    async def write(self, kind: FrameType, request_id: int, body: bytes) -> None:
        frame = encode_frame(kind, request_id, body)
        if self._sock is not None and not self._send_lock.locked():
            await anyio.lowlevel.checkpoint_if_cancelled()  # before any byte: no harm
            if not self._send_lock.locked():
                await self._write_now(frame)
                return
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

    async def _write_now(self, frame: bytes) -> None:
        """Write `frame` straight to the socket; what it cannot take at once is
        sent as the rest of a started frame (shielded, bounded, see write)."""
        assert self._sock is not None
        self._send_lock.acquire_nowait()  # free, and nothing awaited since we looked
        try:
            if self.broken is not None:
                raise self.broken
            try:
                sent = self._sock.send(frame)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                lost = ConnectionLost(f"connection to {self.peer} failed while sending: {exc}")
                await self.close(lost)
                raise lost from None
            if sent < len(frame):
                await self._send_rest(frame[sent:])
        finally:
            self._send_lock.release()
        self.stats.frames_out += 1
        self.stats.bytes_out += len(frame)

    async def _send_rest(self, rest: bytes) -> None:
        """The same as write's slow path, for the part the socket did not take."""
        if self._stall_timeout is None:
            await self._send_or_close(rest)
            return
        deadline = anyio.current_time() + self._stall_timeout
        with anyio.CancelScope(shield=True, deadline=deadline) as guard:
            await self._send_or_close(rest)
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

    async def _send_or_close(self, frame: bytes) -> None:
        sent = False
        try:
            await self.stream.send(frame)
            sent = True
        except NETWORK_ERRORS as exc:
            lost = ConnectionLost(f"connection to {self.peer} failed while sending: {exc}")
            await self.close(lost)
            raise lost from None
        finally:
            if not sent and self.broken is None:
                # Interrupted mid-frame: a half-written frame would corrupt everything
                # after it. Not a ConnectionLost: the peer may have our earlier frames.
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


def set_nodelay(stream: ByteStream) -> None:
    # Small request frames must not wait for Nagle's algorithm.
    try:
        stream.extra(SocketAttribute.raw_socket).setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
        )
    except (OSError, anyio.TypedAttributeLookupError):
        pass


def remote_name(stream: ByteStream) -> str:
    """The peer of an accepted connection as host:port text (for logs and handlers)."""
    try:
        address = stream.extra(SocketAttribute.remote_address)
    except anyio.TypedAttributeLookupError:
        return "tcp:?"
    if isinstance(address, tuple):
        return str(Address(str(address[0]), int(address[1])))
    return str(address)
