"""[transport] keys of the udp transport, checked when the configuration is loaded."""

from __future__ import annotations

import attrs

from hedgeplug.plugin import Duration, Size

from ..tcp.options import at_least, check_advertise, check_bind


@attrs.frozen
class UdpOptions:
    """[transport] keys of the udp transport."""

    bind: str = attrs.field(
        default="127.0.0.1:0",
        validator=check_bind,
        metadata={"help": "host:port for datagrams and tcp alike; port 0 picks a free one"},
    )
    advertise: str = attrs.field(
        default="",
        validator=check_advertise,
        metadata={"help": "address other nodes dial (host or host:port); default: the bound one"},
    )
    max_datagram: Size = attrs.field(
        default=Size(1400),
        validator=[at_least(64), attrs.validators.le(Size(65000))],
        metadata={"help": "largest datagram sent; larger frames go over tcp"},
    )
    max_frame: Size = attrs.field(
        default=Size(1 << 20),
        validator=[at_least(64), attrs.validators.le(Size(0xFFFFFFF0))],
        metadata={"help": "largest frame sent or accepted (over tcp)"},
    )
    connect_timeout: Duration = attrs.field(
        default=Duration(3.0),
        validator=at_least(0.001),
        metadata={"help": "bound on opening a tcp connection"},
    )
    idle_timeout: Duration = attrs.field(
        default=Duration(60.0),
        validator=at_least(0.01),
        metadata={"help": "an outgoing tcp connection unused this long is closed"},
    )
