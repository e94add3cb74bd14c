"""The `udp` transport plugin: registration, and the names its users import.

    options.py     the [transport] keys
    datagram.py    the datagram layout and the kind byte on tcp frames
    sockets.py     the sending socket and the client socket replies return to
    server.py      the receive loop, handlers, parked replies
    transport.py   UdpTransport: datagrams when they fit, tcp otherwise
"""

from __future__ import annotations

from typing import Any

from hedgeplug.plugin import NodeContext, hookimpl

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
from .options import UdpOptions
from .transport import UdpTransport

__all__ = [
    "ERROR",
    "HEADER_SIZE",
    "ONEWAY",
    "REPLY",
    "REPLY_BY_TCP",
    "REQUEST",
    "UdpOptions",
    "UdpTransport",
    "decode_datagram",
    "encode_datagram",
    "make",
]


def make(options: UdpOptions, ctx: NodeContext) -> UdpTransport:
    return UdpTransport(options, log=ctx.log)


@hookimpl
def hedgeplug_register_transports(register: Any) -> None:
    register("udp", make, UdpOptions)
