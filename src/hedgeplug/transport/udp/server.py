"""The serving side: datagrams in, handlers run, replies out (or parked for tcp).

A reply too large for a datagram is parked here and the requester fetches it
over tcp with the ticket it got instead, so a handler never runs twice for
one request.
"""

from __future__ import annotations

import itertools
import logging
from collections import OrderedDict
from typing import Any

import anyio

from hedgeplug.plugin import Address, FrameHandler, TransportError, TransportStats

from .datagram import (
    ERROR,
    HEADER_SIZE,
    ONEWAY,
    REPLY,
    REPLY_BY_TCP,
    REQUEST,
    decode_datagram,
    encode_datagram,
)
from .sockets import Sender

PARKED_REPLIES = 256  # most replies waiting to be fetched; the oldest goes first
PARKED_SECONDS = 30.0
HANDLERS_AT_ONCE = 256


class ParkedReplies:
    """Replies too large for a datagram, waiting to be fetched over tcp by ticket."""

    def __init__(self, stats: TransportStats) -> None:
        self.stats = stats
        self._tickets = itertools.count(1)
        self._parked: OrderedDict[bytes, tuple[bytes, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._parked)

    def park(self, reply: bytes) -> bytes:
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

    def unpark(self, ticket: bytes) -> bytes:
        found = self._parked.pop(ticket, None)
        if found is None:
            self.stats.drop("unknown-ticket")
            raise TransportError("that reply is no longer parked")  # becomes an error reply
        return found[0]


class DatagramServer:
    """Reads the bound socket and answers each request from the same socket."""

    def __init__(
        self,
        server: Sender,
        max_frame: int,
        max_datagram: int,
        stats: TransportStats,
        log: logging.Logger,
    ) -> None:
        self.sender = server
        self.max_frame = max_frame
        self.max_datagram = max_datagram
        self.stats = stats
        self.log = log
        self.parked = ParkedReplies(stats)

    def fits(self, data: bytes) -> bool:
        return HEADER_SIZE + len(data) <= self.max_datagram

    async def receive_loop(self, on_frame: FrameHandler, tg: Any) -> None:
        slots = anyio.Semaphore(HANDLERS_AT_ONCE)
        while True:
            try:
                data, (host, port, *_) = await self.sender.sock.receive()
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
            tg.start_soon(self._handle, kind, request_id, body, host, port, on_frame, slots)

    async def _handle(
        self,
        kind: int,
        request_id: int,
        body: bytes,
        host: str,
        port: int,
        on_frame: FrameHandler,
        slots: anyio.Semaphore,
    ) -> None:
        peer = str(Address(host, port))
        try:
            try:
                reply = await on_frame(body, peer)
            except Exception as exc:
                self.stats.drop("handler-error")
                self.log.warning("frame handler raised for a datagram from %s: %r", peer, exc)
                if kind == REQUEST:
                    message = f"handler failed: {type(exc).__name__}"
                    await self._answer(ERROR, request_id, message.encode(), host, port)
                return
            if kind != REQUEST:
                return
            reply = reply or b""
            if len(reply) > self.max_frame:
                self.stats.drop("reply-too-large")
                message = (
                    f"reply of {len(reply)} bytes exceeds the frame limit of {self.max_frame} bytes"
                )
                await self._answer(ERROR, request_id, message.encode(), host, port)
            elif self.fits(reply):
                await self._answer(REPLY, request_id, reply, host, port)
            else:
                await self._answer(REPLY_BY_TCP, request_id, self.parked.park(reply), host, port)
        finally:
            slots.release()

    async def _answer(self, kind: int, request_id: int, body: bytes, host: str, port: int) -> None:
        try:
            await self.sender.sendto(encode_datagram(kind, request_id, body), host, port)
        except (OSError, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self.stats.drop("reply-failed")
