"""Byte layout of the tcp transport and a cancellation-safe frame reader.

A connection starts with a 5-byte preamble: b"HPT", the layout version, and
the connection's purpose (b"F" multiplexed frames, b"S" one message stream).
Then frames follow, each a 9-byte header (body length: uint32, frame type:
uint8, request id: uint32, big endian) and the body. The length is checked
against the limit before any of the body is read.
"""

from __future__ import annotations

import enum
import struct

import anyio
from anyio.abc import ByteReceiveStream

MAGIC = b"HPT"
LAYOUT_VERSION = 1
PURPOSE_FRAMES = b"F"
PURPOSE_STREAM = b"S"
PREAMBLE_SIZE = len(MAGIC) + 2

HEADER = struct.Struct("!IBI")
HEADER_SIZE = HEADER.size
MAX_REQUEST_ID = 0xFFFFFFFF
_CHUNK = 1 << 16


class FrameType(enum.IntEnum):
    ONEWAY = 1
    REQUEST = 2
    REPLY = 3
    ERROR = 4  # the serving side could not answer; body is a utf-8 description
    STREAM = 5  # one message of a stream connection


def preamble(purpose: bytes) -> bytes:
    return MAGIC + bytes((LAYOUT_VERSION,)) + purpose


def encode_frame(kind: FrameType, request_id: int, body: bytes) -> bytes:
    return HEADER.pack(len(body), kind, request_id) + body


class FrameRejected(Exception):
    """An incoming frame cannot be accepted; `reason` names the drop counter.

    `kind` and `request_id` are set when the header was readable, so the
    receiver can still answer a refused request with an error frame.
    """

    def __init__(self, reason: str, detail: str, kind: int = 0, request_id: int = 0) -> None:
        super().__init__(detail)
        self.reason = reason
        self.kind = kind
        self.request_id = request_id


class FrameReader:
    """Reads preambles and frames from a byte stream.

    Bytes are buffered here and only consumed once a whole unit is present, so
    a read cancelled by a timeout loses nothing and the next read resumes.
    """

    def __init__(self, stream: ByteReceiveStream, max_frame: int) -> None:
        self._stream = stream
        self._max_frame = max_frame
        self._buffer = bytearray()
        self.bytes_read = 0

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    async def _fill(self) -> None:
        try:
            chunk = await self._stream.receive(_CHUNK)
        except anyio.EndOfStream:
            if self._buffer:
                raise FrameRejected(
                    "truncated-frame",
                    f"connection closed inside a frame ({len(self._buffer)} bytes)",
                ) from None
            raise
        self.bytes_read += len(chunk)
        self._buffer += chunk

    async def read_preamble(self) -> bytes:
        """The connection's purpose byte; FrameRejected when the peer does not speak this layout."""
        while len(self._buffer) < PREAMBLE_SIZE:
            if self._buffer and not MAGIC.startswith(bytes(self._buffer[: len(MAGIC)])):
                break  # already wrong, no need to wait for more
            await self._fill()
        head = bytes(self._buffer[:PREAMBLE_SIZE])
        if head[: len(MAGIC)] != MAGIC:
            raise FrameRejected("bad-preamble", f"connection does not start with {MAGIC!r}")
        if head[len(MAGIC)] != LAYOUT_VERSION:
            raise FrameRejected(
                "bad-preamble", f"unsupported tcp layout version {head[len(MAGIC)]}"
            )
        purpose = head[len(MAGIC) + 1 :]
        if purpose not in (PURPOSE_FRAMES, PURPOSE_STREAM):
            raise FrameRejected("bad-preamble", f"unknown connection purpose {purpose!r}")
        del self._buffer[:PREAMBLE_SIZE]
        return purpose

    async def read(self) -> tuple[FrameType, int, bytes]:
        """Next (type, request id, body); anyio.EndOfStream at a clean end."""
        while True:
            if len(self._buffer) >= HEADER_SIZE:
                length, kind, request_id = HEADER.unpack_from(self._buffer)
                if kind not in _KNOWN_TYPES:
                    raise FrameRejected("bad-frame", f"unknown frame type {kind}")
                if length > self._max_frame:
                    raise FrameRejected(
                        "frame-too-large",
                        f"frame of {length} bytes exceeds the limit of {self._max_frame} bytes",
                        kind,
                        request_id,
                    )
                end = HEADER_SIZE + length
                if len(self._buffer) >= end:
                    body = bytes(self._buffer[HEADER_SIZE:end])
                    del self._buffer[:end]
                    return FrameType(kind), request_id, body
            await self._fill()


_KNOWN_TYPES = frozenset(int(t) for t in FrameType)
