"""[transport] keys of the tcp transport, checked when the configuration is loaded."""

from __future__ import annotations

import attrs

from hedgeplug.plugin import Address, Duration, Size, at_least

from .._framing import MAX_REQUEST_ID


def bind_address(value: Address | str) -> Address:
    """The bind option as an Address; the loader passes one already, code may pass text."""
    if isinstance(value, Address):
        return value
    return Address.parse(value, what="bind")


def advertise_address(value: Address | str | None) -> Address | None:
    """The advertise option: None (or empty text) means the bound address."""
    if isinstance(value, Address) or value is None:
        return value
    if not value.strip():
        return None
    return Address.parse(value, what="advertise")


@attrs.frozen
class TcpOptions:
    """[transport] keys of the tcp transport."""

    bind: Address = attrs.field(
        default=Address("127.0.0.1", 0),
        converter=bind_address,
        metadata={"help": "host:port to listen on; port 0 picks a free one; IPv6 as [::1]:0"},
    )
    advertise: Address | None = attrs.field(
        default=None,
        converter=advertise_address,
        metadata={
            "help": "host:port other nodes dial; port 0 keeps the bound port; default: the bound one"
        },
    )
    max_frame: Size = attrs.field(
        default=Size(1 << 20),
        validator=[at_least(64), attrs.validators.le(Size(MAX_REQUEST_ID))],
        metadata={
            "help": "largest frame sent or accepted; larger incoming frames close the connection"
        },
    )
    connect_timeout: Duration = attrs.field(
        default=Duration(3.0),
        validator=at_least(0.001),
        metadata={"help": "bound on opening a connection, a one-way send, a stalled write"},
    )
    idle_timeout: Duration = attrs.field(
        default=Duration(60.0),
        validator=at_least(0.01),
        metadata={
            "help": "idle outgoing connections are closed after this, incoming ones after twice it"
        },
    )
    max_connections: int = attrs.field(
        default=1024,
        validator=at_least(1),
        metadata={"help": "incoming connections served at once; more are refused and counted"},
    )
    max_inflight: int = attrs.field(
        default=64,
        validator=at_least(1),
        metadata={"help": "handlers running at once per incoming connection; then reading pauses"},
    )
