"""Throwaway etcd servers (and TLS material) for tests of hedgeplug-etcd.

`start_etcd(tls=False)` runs a one-member etcd from the machine's binary on
free ports of 127.0.0.1, its data in a fresh temporary folder; see
hedgeplug.testing.supervise for stop/start/kill/cleanup. It is the `etcd`
launcher of the `hedgeplug.test_servers` entry-point group, so
`python -m hedgeplug.testing.servers up` and `server_factory.etcd()` find it.
`ExternalEtcd` wraps endpoints given by HEDGEPLUG_TEST_ETCD_ENDPOINTS.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from hedgeplug.testing.supervise import (
    LOOPBACK,
    ServerError,
    ServerHandle,
    free_port,
    make_root,
    started,
)

ETCD_ENDPOINTS_ENV = "HEDGEPLUG_TEST_ETCD_ENDPOINTS"


def find_etcd() -> str:
    path = shutil.which("etcd") or ("/usr/bin/etcd" if os.path.exists("/usr/bin/etcd") else None)
    if path is None:
        raise ServerError(
            "the etcd server binary is not installed; install it with: apt-get install -y etcd-server"
        )
    return path


@dataclasses.dataclass(frozen=True)
class TestCertificates:
    """PEM files of a throwaway CA, a server certificate for 127.0.0.1 and a client certificate."""

    ca_file: str
    server_cert_file: str
    server_key_file: str
    client_cert_file: str
    client_key_file: str


def make_test_certificates(folder: Path) -> TestCertificates:
    """Write a fresh CA and server/client certificates (valid one day) into `folder`."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> str:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        return str(path)

    def write_cert(cert: x509.Certificate, path: Path) -> str:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return str(path)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder().subject_name(name("hedgeplug test CA"))
        .issuer_name(name("hedgeplug test CA")).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def issue(common: str, *usage: x509.ObjectIdentifier) -> tuple[x509.Certificate, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder().subject_name(name(common)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage(list(usage)), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(LOOPBACK)),
            ]), critical=False)
        )
        return builder.sign(ca_key, hashes.SHA256()), key

    # etcd's JSON gateway dials etcd's own gRPC port with the server
    # certificate, so that certificate must be good for client auth too.
    server_cert, server_key = issue("127.0.0.1", ExtendedKeyUsageOID.SERVER_AUTH,
                                    ExtendedKeyUsageOID.CLIENT_AUTH)
    client_cert, client_key = issue("hedgeplug test client", ExtendedKeyUsageOID.CLIENT_AUTH)
    return TestCertificates(
        ca_file=write_cert(ca_cert, folder / "ca.pem"),
        server_cert_file=write_cert(server_cert, folder / "server.pem"),
        server_key_file=write_key(server_key, folder / "server-key.pem"),
        client_cert_file=write_cert(client_cert, folder / "client.pem"),
        client_key_file=write_key(client_key, folder / "client-key.pem"),
    )


class EtcdServer(ServerHandle):
    """A one-member etcd cluster on 127.0.0.1 (client and peer ports both free ports).

    With `tls=True` the client URL is https, the server certificate is signed
    by a throwaway CA (`certificates.ca_file`), and clients must present a
    certificate from that CA (`certificates.client_cert_file` / `client_key_file`).
    """

    name = "etcd"

    def __init__(self, *, detached: bool = False, tls: bool = False) -> None:
        self.binary = find_etcd()
        super().__init__(make_root("etcd"), detached=detached)
        self.client_port = free_port()
        self.peer_port = free_port()
        while self.peer_port == self.client_port:
            self.peer_port = free_port()
        self.data_dir = self.root / "data"  # type: ignore[operator]
        self.certificates = make_test_certificates(self.root / "tls") if tls else None  # type: ignore[operator]

    @property
    def endpoint(self) -> str:
        scheme = "https" if self.certificates else "http"
        return f"{scheme}://{LOOPBACK}:{self.client_port}"

    @property
    def endpoints(self) -> list[str]:
        return [self.endpoint]

    def command(self) -> list[str]:
        client = self.endpoint
        peer = f"http://{LOOPBACK}:{self.peer_port}"
        return [
            self.binary, "--name", "hedgeplug-test", "--data-dir", str(self.data_dir),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"hedgeplug-test={peer}",
            "--initial-cluster-state", "new", "--initial-cluster-token", self.root.name,  # type: ignore[union-attr]
            "--logger", "zap", "--log-outputs", "stderr",
            *self._tls_flags(),
        ]

    def _tls_flags(self) -> list[str]:
        tls = self.certificates
        if tls is None:
            return []
        return ["--cert-file", tls.server_cert_file, "--key-file", tls.server_key_file,
                "--trusted-ca-file", tls.ca_file, "--client-cert-auth"]

    def _client_ssl(self) -> ssl.SSLContext | None:
        tls = self.certificates
        if tls is None:
            return None
        context = ssl.create_default_context(cafile=tls.ca_file)
        context.load_cert_chain(tls.client_cert_file, tls.client_key_file)
        return context

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint}/health", timeout=1,
                                        context=self._client_ssl()) as response:
                return json.loads(response.read()).get("health") == "true"
        except (OSError, ValueError, urllib.error.URLError):
            return False

    def env_vars(self) -> dict[str, str]:
        return {ETCD_ENDPOINTS_ENV: ",".join(self.endpoints)}


def start_etcd(*, detached: bool = False, tls: bool = False) -> EtcdServer:
    server = EtcdServer(detached=detached, tls=tls)
    return started(server)


class ExternalEtcd:
    """etcd endpoints named by HEDGEPLUG_TEST_ETCD_ENDPOINTS (comma-separated URLs)."""

    owned = False

    def __init__(self, endpoints: str) -> None:
        self.endpoints = [e.strip() for e in endpoints.split(",") if e.strip()]
        self.endpoint = self.endpoints[0]
