"""Throwaway PostgreSQL servers for tests of hedgeplug-postgres (and anyone's).

`start_postgres()` runs a cluster from the machine's own binaries
(/usr/lib/postgresql/*/bin or PATH) on a free port of 127.0.0.1, with
password authentication, fsync off, its files in a fresh temporary folder;
see hedgeplug.testing.supervise for stop/start/kill/cleanup. It is the
`postgres` launcher of the `hedgeplug.test_servers` entry-point group, so
`python -m hedgeplug.testing.servers up` and `server_factory.postgres()` find it.
`ExternalPostgres` wraps a server given by HEDGEPLUG_TEST_POSTGRES_DSN.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

from hedgeplug.testing.supervise import (
    LOOPBACK,
    ServerError,
    ServerHandle,
    free_port,
    make_root,
    port_open,
    started,
)

POSTGRES_DSN_ENV = "HEDGEPLUG_TEST_POSTGRES_DSN"


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
        super().__init__(make_root("postgres", self.user), detached=detached)
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
            "-c", "max_connections=500",
        ]

    def ready(self) -> bool:
        if not port_open(self.port):
            return False
        check = subprocess.run(
            [str(self.bin / "pg_isready"), "-h", self.host, "-p", str(self.port), "-t", "2"],
            capture_output=True, timeout=10,
        )
        return check.returncode == 0

    def env_vars(self) -> dict[str, str]:
        return {POSTGRES_DSN_ENV: self.dsn}


def start_postgres(*, detached: bool = False) -> PostgresServer:
    server = PostgresServer(detached=detached)
    return started(server)


class ExternalPostgres:
    """A PostgreSQL server named by HEDGEPLUG_TEST_POSTGRES_DSN; cannot be stopped from here."""

    owned = False

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
