"""The `tcp` transport plugin: registration, and the names its users import.

    options.py     the [transport] keys
    connection.py  one connection carrying frames
    pool.py        dialling, and one pooled outgoing connection per peer
    stream.py      a message stream over a connection of its own
    server.py      accepting connections and running their handlers
    transport.py   TcpTransport, tying those together
    tls.py         optional mutual TLS: contexts, start-up check, bounded handshake
    certificates.py  a cluster CA and node certificates (`hedgeplug tls-init`, tests)
"""

from __future__ import annotations

from typing import Any

from hedgeplug.plugin import NodeContext, hookimpl

from .options import TcpOptions
from .stream import TcpMessageStream
from .transport import TcpTransport

__all__ = ["TcpMessageStream", "TcpOptions", "TcpTransport", "make"]


def make(options: TcpOptions, ctx: NodeContext) -> TcpTransport:
    return TcpTransport(options, log=ctx.log)


@hookimpl
def hedgeplug_register_transports(register: Any) -> None:
    register("tcp", make, TcpOptions)
