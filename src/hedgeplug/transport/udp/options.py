"""[transport] keys of the udp transport, checked when the configuration is loaded."""

from __future__ import annotations

import attrs

from hedgeplug.plugin import Address, Duration, Size, at_least

from ..tcp.options import advertise_address, bind_address


@attrs.frozen
class UdpOptions:
    """[transport] keys of the udp transport."""

    bind: Address = attrs.field(
        default=Address("127.0.0.1", 0),
        converter=bind_address,
        metadata={"help": "host:port for datagrams and tcp alike; port 0 picks a free one"},
    )
    advertise: Address | None = attrs.field(
        default=None,
        converter=advertise_address,
        metadata={
            "help": "host:port other nodes dial; port 0 keeps the bound port; default: the bound one"
        },
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
