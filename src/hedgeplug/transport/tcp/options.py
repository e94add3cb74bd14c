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
    tls_cert: str = attrs.field(
        default="",
        metadata={"help": "PEM certificate of this node, signed by tls_ca; with tls_key and tls_ca turns TLS on"},
    )
    tls_key: str = attrs.field(
        default="", metadata={"help": "PEM private key of tls_cert (unencrypted; keep it 0600)"}
    )
    tls_ca: str = attrs.field(
        default="",
        metadata={"help": "PEM certificate of the cluster's own CA: peers must present a certificate it signed"},
    )
    tls_client_auth: bool = attrs.field(
        default=True,
        metadata={"help": "with TLS, require a certificate from every connecting peer (mutual TLS)"},
    )

    def __attrs_post_init__(self) -> None:
        if self.tls_enabled:
            from .tls import build_contexts  # loads ssl only when TLS is configured

            build_contexts(self.tls_cert, self.tls_key, self.tls_ca, self.tls_client_auth)

    @property
    def tls_enabled(self) -> bool:
        """Whether any TLS file is set (then all three must be)."""
        return bool(self.tls_cert or self.tls_key or self.tls_ca)

    @property
    def tls_mutual(self) -> bool:
        """Whether both sides of every connection prove themselves with a certificate."""
        return self.tls_enabled and self.tls_client_auth
