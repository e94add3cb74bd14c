"""TLS for the tcp transport: the two ssl contexts, checked once at start.

Every member holds a certificate signed by the cluster's own CA (`tls_ca`)
and verifies its peer's chain against that CA, both ways when client
certificates are required (the default). Host names are not checked:
members are dialled by IP address, and addresses change (containers,
DHCP, a re-advertised port) while membership does not; with a CA that
signs only this cluster's members, "signed by the cluster CA" is the
membership test. So the CA must be dedicated to the cluster.

Imported only when TLS is configured (the ssl module stays unloaded otherwise).
"""

from __future__ import annotations

import ssl
from pathlib import Path

import anyio
import attrs
from anyio.abc import ByteStream
from anyio.streams.tls import TLSStream

from .connection import eager_transport

# Rounds of the in-memory handshake the start-up check allows itself; a TLS 1.3
# handshake needs three or four.
_CHECK_ROUNDS = 20


@attrs.frozen
class TlsContexts:
    """The contexts a node uses to accept (`server`) and to dial (`client`)."""

    server: ssl.SSLContext
    client: ssl.SSLContext
    mutual: bool


def _readable(option: str, path: str) -> Path:
    if not path:
        raise ValueError(f"'{option}' is empty; TLS needs tls_cert, tls_key and tls_ca")
    file = Path(path)
    try:
        with file.open("rb") as handle:
            handle.read(1)
    except FileNotFoundError:
        raise ValueError(f"'{option}': {path} does not exist") from None
    except IsADirectoryError:
        raise ValueError(f"'{option}': {path} is a directory, not a PEM file") from None
    except OSError as exc:
        raise ValueError(f"'{option}': cannot read {path}: {exc.strerror or exc}") from None
    return file


def _describe(exc: ssl.SSLError) -> str:
    return str(exc.reason or exc).replace("_", " ").lower() if exc.reason else str(exc)


def build_contexts(cert: str, key: str, ca: str, mutual: bool) -> TlsContexts:
    """The server and client contexts from the PEM files; a ValueError naming
    the option at fault if a file is missing, unreadable, not PEM, or if the
    key, the certificate and the CA do not belong together."""
    cert_file = _readable("tls_cert", cert)
    key_file = _readable("tls_key", key)
    ca_file = _readable("tls_ca", ca)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False  # see the module docstring
    for context in (server, client):
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        try:
            context.load_verify_locations(cafile=str(ca_file))
        except ssl.SSLError as exc:
            raise ValueError(
                f"'tls_ca': {ca} holds no usable CA certificate ({_describe(exc)})"
            ) from None
        try:
            context.load_cert_chain(str(cert_file), str(key_file))
        except ssl.SSLError as exc:
            reason = _describe(exc)
            if "mismatch" in reason:
                raise ValueError(
                    f"'tls_key': {key} is not the private key of the certificate in {cert}"
                ) from None
            raise ValueError(
                f"'tls_cert'/'tls_key': cannot load {cert} with {key} ({reason});"
                " both must be PEM files, the key unencrypted"
            ) from None
    server.verify_mode = ssl.CERT_REQUIRED if mutual else ssl.CERT_NONE
    client.verify_mode = ssl.CERT_REQUIRED
    _check_own_certificate(server, client, cert, ca)
    return TlsContexts(server=server, client=client, mutual=mutual)


def _check_own_certificate(
    server: ssl.SSLContext, client: ssl.SSLContext, cert: str, ca: str
) -> None:
    """Shake hands with ourselves in memory: a node whose own certificate does
    not verify against tls_ca would be refused by every peer, so say it now."""
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    server_side = server.wrap_bio(to_server, to_client, server_side=True)
    client_side = client.wrap_bio(to_client, to_server, server_side=False)
    done = {"server": False, "client": False}
    try:
        for _ in range(_CHECK_ROUNDS):
            for name, side in (("client", client_side), ("server", server_side)):
                if done[name]:
                    continue
                try:
                    side.do_handshake()
                    done[name] = True
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    pass
            if all(done.values()):
                return
    except ssl.SSLError as exc:
        raise ValueError(
            f"'tls_cert': the certificate in {cert} does not verify against the CA in {ca}"
            f" ({getattr(exc, 'verify_message', None) or _describe(exc)}); peers would refuse it"
        ) from None
    raise ValueError(f"'tls_cert': checking {cert} against {ca} did not complete")


class HandshakeFailed(Exception):
    """A peer's TLS handshake failed or timed out; `reason` names the drop counter."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _failure_text(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate refused: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return _describe(exc)
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, ssl.SSLError):
        return _failure_text(cause)
    return str(exc) or type(exc).__name__


async def handshake(
    stream: ByteStream, context: ssl.SSLContext, server_side: bool, timeout: float
) -> TLSStream:
    """`stream` wrapped in TLS once the handshake completes within `timeout`;
    HandshakeFailed otherwise (the caller closes `stream`)."""
    try:
        with anyio.fail_after(timeout):
            # standard_compatible=False: no close_notify exchange on close (every
            # frame is length-prefixed, so a truncation cannot pass unnoticed).
            return await TLSStream.wrap(
                eager_transport(stream),
                server_side=server_side,
                ssl_context=context,
                standard_compatible=False,
            )
    except TimeoutError:
        raise HandshakeFailed(
            "tls-handshake-timeout", f"no TLS handshake within {timeout:g}s"
        ) from None
    except (OSError, anyio.BrokenResourceError, anyio.EndOfStream, anyio.ClosedResourceError) as exc:
        raise HandshakeFailed("tls-handshake-failed", _failure_text(exc)) from None
