"""Throwaway real servers for tests: PostgreSQL, etcd and the Cloud Spanner emulator.

Each server runs from the machine's own binaries, listens on a free port of
127.0.0.1 and keeps its files in a fresh temporary folder. A handle gives the
connection details and `stop()` / `start()` (the port stays the same across a
restart, so clients can reconnect) and `cleanup()` (stop and delete files).
Handles still running when the interpreter exits are stopped by an atexit
hook; child servers also get a parent-death signal, so a killed test run does
not leave them behind.

From a shell, all three can be started once for a whole test run:

    python -m hedgeplug.testing.servers up --state DIR [--only postgres,etcd,spanner]
    python -m hedgeplug.testing.servers down --state DIR

`up` writes DIR/servers.env (KEY=value lines: HEDGEPLUG_TEST_POSTGRES_DSN,
HEDGEPLUG_TEST_ETCD_ENDPOINTS, HEDGEPLUG_TEST_SPANNER_EMULATOR_HOST), prints
the same lines, and leaves the servers running detached; `down` stops them
and deletes their files.
"""

from __future__ import annotations

import argparse
import atexit
import ctypes
import dataclasses
import glob
import json
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

POSTGRES_DSN_ENV = "HEDGEPLUG_TEST_POSTGRES_DSN"
ETCD_ENDPOINTS_ENV = "HEDGEPLUG_TEST_ETCD_ENDPOINTS"
SPANNER_EMULATOR_HOST_ENV = "HEDGEPLUG_TEST_SPANNER_EMULATOR_HOST"

SPANNER_EMULATOR_PATH = "/usr/lib/google-cloud-sdk/bin/cloud_spanner_emulator/emulator_main"
LOOPBACK = "127.0.0.1"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


class ServerError(RuntimeError):
    """A test server is missing or did not start; the message says how to fix it."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
    except OSError:
        return False


_running: set[ServerHandle] = set()


def _stop_all_at_exit() -> None:
    for handle in list(_running):
        if not handle.detached:
            handle.cleanup()


atexit.register(_stop_all_at_exit)


def _die_with_parent(sig: int) -> Callable[[], None]:
    """A preexec hook: the kernel sends `sig` to the child when our process dies."""

    def hook() -> None:
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, sig, 0, 0, 0)

    return hook


class ServerHandle:
    """A server process this module started (or, with `owned=False`, one given from outside)."""

    name = "server"
    # The signal that shuts the server down quickly without waiting for clients.
    stop_signal = signal.SIGTERM

    def __init__(self, root: Path | None, *, detached: bool = False, owned: bool = True) -> None:
        self.root = root
        self.detached = detached
        self.owned = owned
        self.process: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None

    # -- what subclasses provide

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def env_vars(self) -> dict[str, str]:
        raise NotImplementedError

    def run_as(self) -> str | None:
        """User name to run the server as (None: the current user)."""
        return None

    # -- life cycle

    @property
    def log_path(self) -> Path:
        assert self.root is not None
        return self.root / f"{self.name}.log"

    @property
    def running(self) -> bool:
        return self.pid is not None and _pid_alive(self.pid)

    def _require_owned(self, what: str) -> None:
        if not self.owned:
            raise ServerError(
                f"cannot {what} the {self.name} server: it was given through the environment, "
                "not started by this test run; start your own with the server_factory fixture"
            )

    def start(self) -> None:
        """Start the server process (again, after stop()) and wait until it accepts clients."""
        self._require_owned("start")
        if self.running:
            return
        user = self.run_as()
        log = open(self.log_path, "ab")
        kwargs: dict[str, Any] = {}
        if user is not None:
            kwargs["user"] = user
            kwargs["group"] = pwd.getpwnam(user).pw_gid
            kwargs["extra_groups"] = []
        if self.detached:
            kwargs["start_new_session"] = True
        elif threading.current_thread() is threading.main_thread():
            # The kernel ties the death signal to the forking THREAD; a worker
            # thread may end long before the process, so only the main one asks.
            kwargs["preexec_fn"] = _die_with_parent(self.stop_signal)
        try:
            self.process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                **kwargs,
            )
        finally:
            log.close()
        self.pid = self.process.pid
        _running.add(self)
        deadline = time.monotonic() + START_TIMEOUT
        while not self.ready():
            if self.process.poll() is not None:
                raise ServerError(
                    f"{self.name} exited with status {self.process.returncode} while starting; "
                    f"its log ({self.log_path}) ends with:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise ServerError(
                    f"{self.name} did not become ready within {START_TIMEOUT:.0f}s; "
                    f"its log ({self.log_path}) ends with:\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop the server process; files stay, so start() brings it back with its data."""
        self._require_owned("stop")
        if self.pid is None:
            return
        _signal_and_wait(self.pid, self.stop_signal, self.process)
        self.process = None
        self.pid = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL the server (a crash); start() brings it back."""
        self._require_owned("kill")
        if self.pid is not None:
            _signal_and_wait(self.pid, signal.SIGKILL, self.process)
        self.process = None
        self.pid = None

    def cleanup(self) -> None:
        """Stop the server and delete its files. Safe to call more than once."""
        if not self.owned:
            return
        try:
            self.stop()
        finally:
            _running.discard(self)
            if self.root is not None and self.root.exists():
                shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    # -- for `up` / `down`

    def to_state(self) -> dict[str, Any]:
        return {"name": self.name, "pid": self.pid, "root": str(self.root),
                "stop_signal": int(self.stop_signal)}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie waiting to be reaped by someone else counts as gone
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _signal_and_wait(pid: int, sig: int, process: subprocess.Popen[bytes] | None) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        if process is not None:
            if process.poll() is not None:
                return
        elif not _pid_alive(pid):
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    if process is not None:
        process.wait(timeout=STOP_TIMEOUT)


def _make_root(prefix: str, owner: str | None = None) -> Path:
    root = Path(tempfile.mkdtemp(prefix=f"hedgeplug-{prefix}-", dir=_temp_base(owner)))
    if owner is not None:
        entry = pwd.getpwnam(owner)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    return root


def _temp_base(owner: str | None) -> str:
    """The temp folder, or /tmp when `owner` could not reach files inside the configured one."""
    base = tempfile.gettempdir()
    if owner is None:
        return base
    path = Path(base).resolve()
    for part in [path, *path.parents]:
        if not part.stat().st_mode & stat.S_IXOTH:
            return "/tmp"
    return base


# ---------------------------------------------------------------- PostgreSQL


def find_postgres_bin() -> Path:
    """The newest /usr/lib/postgresql/<version>/bin holding initdb and postgres."""
    found = []
    for candidate in glob.glob("/usr/lib/postgresql/*/bin"):
        path = Path(candidate)
        if (path / "initdb").exists() and (path / "postgres").exists():
            version = path.parent.name
            found.append((int(version) if version.isdigit() else 0, path))
    if found:
        return max(found)[1]
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise ServerError(
        "PostgreSQL server binaries not found (looked in /usr/lib/postgresql/*/bin and PATH); "
        "install them with: apt-get install -y postgresql"
    )


def _unprivileged_user() -> str | None:
    """PostgreSQL refuses to run as root: pick `postgres`, else `nobody`, when we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise ServerError("running as root and neither a 'postgres' nor a 'nobody' user exists")


class PostgresServer(ServerHandle):
    """A PostgreSQL cluster with password authentication on 127.0.0.1."""

    name = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown: disconnects clients instead of waiting

    def __init__(self, *, port: int | None = None, detached: bool = False) -> None:
        self.bin = find_postgres_bin()
        self.user = _unprivileged_user()
        super().__init__(_make_root("postgres", self.user), detached=detached)
        self.port = port or free_port()
        self.host = LOOPBACK
        self.db_user = "postgres"
        self.password = secrets.token_hex(12)
        self.database = "postgres"
        self.data_dir = self.root / "data"  # type: ignore[operator]
        self._initdb()

    @property
    def dsn(self) -> str:
        return (f"postgresql://{self.db_user}:{self.password}@{self.host}:{self.port}/"
                f"{self.database}")

    def run_as(self) -> str | None:
        return self.user

    def _initdb(self) -> None:
        assert self.root is not None
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        kwargs: dict[str, Any] = {}
        if self.user is not None:
            kwargs = {"user": self.user, "group": pwd.getpwnam(self.user).pw_gid,
                      "extra_groups": []}
        result = subprocess.run(
            [str(self.bin / "initdb"), "-D", str(self.data_dir), "-U", self.db_user,
             "--auth=scram-sha-256", f"--pwfile={pwfile}", "--encoding=UTF8", "--no-locale",
             "--no-sync"],
            cwd=self.root, capture_output=True, text=True, timeout=120, **kwargs,
        )
        pwfile.unlink()
        if result.returncode != 0:
            shutil.rmtree(self.root, ignore_errors=True)
            raise ServerError(f"initdb failed ({result.returncode}):\n{result.stderr[-2000:]}")

    def command(self) -> list[str]:
        return [
            str(self.bin / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
            "-c", f"listen_addresses={LOOPBACK}",
            "-c", "unix_socket_directories=",
            "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
            "-c", "max_connections=200",
        ]

    def ready(self) -> bool:
        if not _port_open(self.port):
            return False
        check = subprocess.run(
            [str(self.bin / "pg_isready"), "-h", self.host, "-p", str(self.port), "-t", "2"],
            capture_output=True, timeout=10,
        )
        return check.returncode == 0

    def env_vars(self) -> dict[str, str]:
        return {POSTGRES_DSN_ENV: self.dsn}


ServerHandleT = TypeVar("ServerHandleT", bound=ServerHandle)


def _started(server: ServerHandleT) -> ServerHandleT:
    """Start `server`; on any failure remove what it left (files, process) and re-raise."""
    try:
        server.start()
    except BaseException:
        server.cleanup()
        raise
    return server


def start_postgres(*, detached: bool = False) -> PostgresServer:
    server = PostgresServer(detached=detached)
    return _started(server)


# ---------------------------------------------------------------- etcd


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
        super().__init__(_make_root("etcd"), detached=detached)
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
    return _started(server)


# ---------------------------------------------------------------- Spanner emulator


def find_spanner_emulator() -> str:
    if os.path.exists(SPANNER_EMULATOR_PATH):
        return SPANNER_EMULATOR_PATH
    try:
        listing = subprocess.run(
            ["dpkg", "-L", "google-cloud-cli-spanner-emulator"],
            capture_output=True, text=True, timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        listing = ""
    for line in listing.splitlines():
        if line.endswith("/emulator_main") and os.access(line, os.X_OK):
            return line
    raise ServerError(
        "the Cloud Spanner emulator is not installed (no emulator_main at "
        f"{SPANNER_EMULATOR_PATH} nor in dpkg -L google-cloud-cli-spanner-emulator); install it "
        "with: apt-get install -y google-cloud-cli-spanner-emulator "
        "(from Google's packages.cloud.google.com apt repository)"
    )


class SpannerEmulator(ServerHandle):
    """The Cloud Spanner emulator's gRPC endpoint on 127.0.0.1 (in-memory: a restart empties it)."""

    name = "spanner"

    def __init__(self, *, detached: bool = False) -> None:
        self.binary = find_spanner_emulator()
        super().__init__(_make_root("spanner"), detached=detached)
        self.port = free_port()

    @property
    def host(self) -> str:
        """The value for SPANNER_EMULATOR_HOST."""
        return f"{LOOPBACK}:{self.port}"

    def command(self) -> list[str]:
        return [self.binary, "--host_port", self.host]

    def ready(self) -> bool:
        return _port_open(self.port)

    def env_vars(self) -> dict[str, str]:
        return {SPANNER_EMULATOR_HOST_ENV: self.host}


def start_spanner_emulator(*, detached: bool = False) -> SpannerEmulator:
    server = SpannerEmulator(detached=detached)
    return _started(server)


# ---------------------------------------------------------------- given from outside


class ExternalPostgres:
    """A PostgreSQL server named by HEDGEPLUG_TEST_POSTGRES_DSN; cannot be stopped from here."""

    owned = False

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn


class ExternalEtcd:
    """etcd endpoints named by HEDGEPLUG_TEST_ETCD_ENDPOINTS (comma-separated URLs)."""

    owned = False

    def __init__(self, endpoints: str) -> None:
        self.endpoints = [e.strip() for e in endpoints.split(",") if e.strip()]
        self.endpoint = self.endpoints[0]


class ExternalSpanner:
    """A Spanner emulator named by HEDGEPLUG_TEST_SPANNER_EMULATOR_HOST (host:port)."""

    owned = False

    def __init__(self, host: str) -> None:
        self.host = host.strip()


STARTERS: dict[str, Callable[..., ServerHandle]] = {
    "postgres": start_postgres,
    "etcd": start_etcd,
    "spanner": start_spanner_emulator,
}


# ---------------------------------------------------------------- command line


def _up(state: Path, names: Sequence[str]) -> int:
    state.mkdir(parents=True, exist_ok=True)
    state_file = state / "state.json"
    if state_file.exists():
        print(f"error: {state_file} exists; run `down --state {state}` first", file=sys.stderr)
        return 2
    started: list[ServerHandle] = []
    try:
        for name in names:
            started.append(STARTERS[name](detached=True))
    except ServerError as exc:
        for handle in started:
            handle.cleanup()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    env: dict[str, str] = {}
    for handle in started:
        env.update(handle.env_vars())
        _running.discard(handle)  # they outlive this process on purpose
    state_file.write_text(json.dumps([h.to_state() for h in started], indent=2))
    lines = [f"{key}={shlex.quote(value)}" for key, value in env.items()]  # sourceable by sh
    (state / "servers.env").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def _down(state: Path) -> int:
    state_file = state / "state.json"
    if not state_file.exists():
        print(f"nothing to stop: {state_file} does not exist", file=sys.stderr)
        return 0
    for entry in json.loads(state_file.read_text()):
        if entry.get("pid"):
            _signal_and_wait(int(entry["pid"]), int(entry["stop_signal"]), None)
        root = entry.get("root")
        if root and Path(root).name.startswith("hedgeplug-"):
            shutil.rmtree(root, ignore_errors=True)
    state_file.unlink()
    (state / "servers.env").unlink(missing_ok=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hedgeplug.testing.servers",
        description="Start or stop throwaway test servers (PostgreSQL, etcd, Spanner emulator).",
    )
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--state", required=True, type=Path,
                        help="folder for state.json and servers.env")
    parser.add_argument("--only", default=",".join(STARTERS),
                        help="comma-separated subset of: " + ", ".join(STARTERS))
    args = parser.parse_args(argv)
    if args.action == "down":
        return _down(args.state)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in STARTERS]
    if unknown:
        parser.error(f"unknown server(s) {', '.join(unknown)}; choose from {', '.join(STARTERS)}")
    return _up(args.state, names)


if __name__ == "__main__":
    sys.exit(main())
