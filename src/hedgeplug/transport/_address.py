"""host:port addresses as the socket transports read and write them."""

from __future__ import annotations

import ipaddress

from hedgeplug.errors import TransportError


def parse_address(address: str, *, what: str = "address") -> tuple[str, int]:
    """("127.0.0.1", 7000) from "127.0.0.1:7000"; IPv6 hosts go in brackets: "[::1]:7000"."""
    text = address.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise TransportError(
                f"{what} {address!r} is not valid: expected [ipv6]:port, e.g. [::1]:7000"
            )
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise TransportError(
                f"{what} {address!r} is not valid: expected host:port, e.g. 127.0.0.1:7000"
            )
        if ":" in host:
            raise TransportError(
                f"{what} {address!r} is not valid: write IPv6 hosts in brackets, e.g. [::1]:7000"
            )
    try:
        port = int(port_text)
    except ValueError:
        raise TransportError(
            f"{what} {address!r} is not valid: port {port_text!r} is not a number"
        ) from None
    if not 0 <= port <= 65535:
        raise TransportError(f"{what} {address!r} is not valid: port {port} is outside 0-65535")
    return host, port


def format_address(host: str, port: int) -> str:
    try:
        is_v6 = ipaddress.ip_address(host).version == 6
    except ValueError:
        is_v6 = ":" in host
    return f"[{host}]:{port}" if is_v6 else f"{host}:{port}"


def is_wildcard(host: str) -> bool:
    return host in ("", "0.0.0.0", "::")
