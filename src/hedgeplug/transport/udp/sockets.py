"""Datagram sockets: the serialised sender, and the client socket replies come back to."""

from __future__ import annotations

import anyio
from anyio.abc import UDPSocket

from hedgeplug.plugin import Address, TransportError, TransportStats

from .._mux import ReplyMux
from .datagram import ERROR, REPLY, REPLY_BY_TCP, decode_datagram


class FetchOverTcp(Exception):
    """The reply was parked on the serving side; fetch it with this ticket."""

    def __init__(self, ticket: bytes) -> None:
        super().__init__("reply parked")
        self.ticket = ticket


class Sender:
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


class ClientSocket(Sender):
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
            peer = Address(str(source[0]), int(source[1]))
            text = body.decode("utf-8", "replace")
            delivered = self.mux.deliver(
                request_id, error=TransportError(f"{peer} could not answer: {text}")
            )
        elif kind == REPLY_BY_TCP:
            delivered = self.mux.deliver(request_id, error=FetchOverTcp(body))
        else:
            self.stats.drop("unexpected-datagram")
            return
        if not delivered:
            self.stats.drop("late-reply")
