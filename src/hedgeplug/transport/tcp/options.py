"""[transport] keys of the tcp transport, checked when the configuration is loaded."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from hedgeplug.plugin import Duration, Size, TransportError

from .._address import parse_address
from .._framing import MAX_REQUEST_ID


def check_bind(_inst: Any, _attr: attrs.Attribute, value: str) -> None:
    try:
        parse_address(value, what="bind address")
    except TransportError as exc:
        raise ValueError(str(exc)) from None


def check_advertise(_inst: Any, _attr: attrs.Attribute, value: str) -> None:
    if value and (value.startswith("[") or value.count(":") == 1):
        try:
            parse_address(value, what="advertise address")
        except TransportError as exc:
            raise ValueError(str(exc)) from None


def at_least(minimum: float) -> Callable[[Any, attrs.Attribute, Any], None]:
    def check(_inst: Any, attr: attrs.Attribute, value: Any) -> None:
        if value < minimum:
            raise ValueError(f"{attr.name} must be at least {minimum}, got {value}")

    return check


@attrs.frozen
class TcpOptions:
    """[transport] keys of the tcp transport."""

    bind: str = attrs.field(
        default="127.0.0.1:0",
        validator=check_bind,
        metadata={"help": "host:port to listen on; port 0 picks a free one; IPv6 as [::1]:0"},
    )
    advertise: str = attrs.field(
        default="",
        validator=check_advertise,
        metadata={"help": "address other nodes dial (host or host:port); default: the bound one"},
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
