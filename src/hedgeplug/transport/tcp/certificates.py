"""Writing a cluster CA and member certificates for the tcp transport's TLS.

Used by `hedgeplug tls-init` and by the tests. EC P-256 keys (small, quick
to sign and verify); node certificates carry the given names and IP
addresses as subject alternative names, so tools that do check host names
(openssl s_client, a proxy) accept them, and serve as client and server.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT = "ca.pem"
CA_KEY = "ca.key"


@attrs.frozen
class NodeFiles:
    """The three [transport] files of one node."""

    cert: str
    key: str
    ca: str

    def overrides(self) -> list[str]:
        """`--set` overrides that turn TLS on with these files."""
        return [
            f"transport.tls_cert={self.cert}",
            f"transport.tls_key={self.key}",
            f"transport.tls_ca={self.ca}",
        ]


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Created 0600 rather than chmod-ed after: the key is never readable by others.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)


def _write_cert(cert: x509.Certificate, path: Path) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _now() -> datetime.datetime:
    # Backdated a little so a peer whose clock is slightly behind accepts it.
    return datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)


def create_ca(folder: Path, name: str = "hedgeplug cluster CA", days: int = 3650) -> None:
    """Write ca.pem and ca.key (0600) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    start = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(key, folder / CA_KEY)
    _write_cert(cert, folder / CA_CERT)


def _alternative_name(text: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(text))
    except ValueError:
        return x509.DNSName(text)


def issue_node(
    folder: Path, node: str, names: list[str] | None = None, days: int = 365
) -> NodeFiles:
    """Write NODE.pem and NODE.key (0600), signed by the CA in `folder`.
    `names`: host names and IP addresses put in the certificate (default: the
    node's name, localhost, 127.0.0.1 and ::1)."""
    ca_key = serialization.load_pem_private_key((folder / CA_KEY).read_bytes(), None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{folder / CA_KEY} is not an EC private key")
    ca_cert = x509.load_pem_x509_certificate((folder / CA_CERT).read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    start = _now()
    alternatives = names if names else [node, "localhost", "127.0.0.1", "::1"]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(node))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName([_alternative_name(n) for n in dict.fromkeys(alternatives)]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key_path, cert_path = folder / f"{node}.key", folder / f"{node}.pem"
    _write_key(key, key_path)
    _write_cert(cert, cert_path)
    return NodeFiles(cert=str(cert_path), key=str(key_path), ca=str(folder / CA_CERT))
