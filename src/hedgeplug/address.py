"""host:port addresses: the one parser every layer uses.

An address is parsed once where it enters (configuration, a flag, a peer's
advertised address) into an `Address`; text form is `str(address)`, which
puts IPv6 hosts in brackets ("[::1]:7000").
"""

from __future__ import annotations

import ipaddress

import attrs


class AddressError(ValueError):
    """A host:port text that cannot be read; the message says why."""


@attrs.frozen
class Address:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str, *, what: str = "address") -> Address:
        """Address("127.0.0.1", 7000) from "127.0.0.1:7000"; IPv6 hosts in brackets."""
        if isinstance(text, Address):
            return text
        if not isinstance(text, str):
            raise AddressError(f"{what}: expected 'host:port', got {text!r}")
        raw = text.strip()
        if raw.startswith("["):
            host, sep, rest = raw[1:].partition("]")
            if not sep or not rest.startswith(":"):
                raise AddressError(f"{what} {text!r}: expected [ipv6]:port, e.g. [::1]:7000")
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise AddressError(f"{what} {text!r}: {host!r} is not an IPv6 address") from None
            port_text = rest[1:]
        else:
            host, sep, port_text = raw.rpartition(":")
            if not sep or not host:
                raise AddressError(f"{what} {text!r}: expected host:port, e.g. 127.0.0.1:7000")
            if ":" in host:
                raise AddressError(
                    f"{what} {text!r}: write IPv6 hosts in brackets, e.g. [::1]:7000"
                )
        if not port_text.isdigit():
            raise AddressError(f"{what} {text!r}: the port {port_text!r} is not a number")
        port = int(port_text)
        if not 0 <= port <= 65535:
            raise AddressError(f"{what} {text!r}: the port {port} is outside 0-65535")
        return cls(host, port)

    @property
    def is_wildcard(self) -> bool:
        """Bound to every interface (0.0.0.0, ::, or an empty host)."""
        return self.host in ("", "0.0.0.0", "::")

    @property
    def is_ipv6(self) -> bool:
        try:
            return ipaddress.ip_address(self.host).version == 6
        except ValueError:
            return ":" in self.host

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def with_port(self, port: int) -> Address:
        return attrs.evolve(self, port=port)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if self.is_ipv6 else f"{self.host}:{self.port}"
