"""Byte layout of the udp transport's datagrams and of its frames over tcp.

A datagram is b"HU", the layout version, the datagram type and the request
id (uint32, big endian), then the body. Over the internal tcp transport every
frame gets one leading byte: 0 = a frame for the handler, 1 = fetch a parked
reply.
"""

from __future__ import annotations

import struct

MAGIC = b"HU"
LAYOUT_VERSION = 1
HEADER = struct.Struct("!2sBBI")
HEADER_SIZE = HEADER.size
MAX_REQUEST_ID = 0xFFFFFFFF

ONEWAY, REQUEST, REPLY, ERROR, REPLY_BY_TCP = 1, 2, 3, 4, 5
_TYPES = frozenset((ONEWAY, REQUEST, REPLY, ERROR, REPLY_BY_TCP))

TCP_FRAME, TCP_FETCH = b"\x00", b"\x01"


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
