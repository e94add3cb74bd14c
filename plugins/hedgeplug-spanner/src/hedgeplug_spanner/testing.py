"""Throwaway Cloud Spanner emulators for tests of hedgeplug-spanner.

`start_spanner_emulator()` runs Google's emulator binary on a free port of
127.0.0.1 (in memory: a restart empties it); see hedgeplug.testing.supervise
for stop/start/kill/cleanup. It is the `spanner` launcher of the
`hedgeplug.test_servers` entry-point group, so `python -m
hedgeplug.testing.servers up` and `server_factory.spanner()` find it.
`ExternalSpanner` wraps an emulator given by HEDGEPLUG_TEST_SPANNER_EMULATOR_HOST.
"""

from __future__ import annotations

import os
import subprocess

from hedgeplug.testing.supervise import (
    LOOPBACK,
    ServerError,
    ServerHandle,
    free_port,
    make_root,
    port_open,
    started,
)

SPANNER_EMULATOR_HOST_ENV = "HEDGEPLUG_TEST_SPANNER_EMULATOR_HOST"
SPANNER_EMULATOR_PATH = "/usr/lib/google-cloud-sdk/bin/cloud_spanner_emulator/emulator_main"


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
        super().__init__(make_root("spanner"), detached=detached)
        self.port = free_port()

    @property
    def host(self) -> str:
        """The value for SPANNER_EMULATOR_HOST."""
        return f"{LOOPBACK}:{self.port}"

    def command(self) -> list[str]:
        return [self.binary, "--host_port", self.host]

    def ready(self) -> bool:
        return port_open(self.port)

    def env_vars(self) -> dict[str, str]:
        return {SPANNER_EMULATOR_HOST_ENV: self.host}


def start_spanner_emulator(*, detached: bool = False) -> SpannerEmulator:
    server = SpannerEmulator(detached=detached)
    return started(server)


class ExternalSpanner:
    """A Spanner emulator named by HEDGEPLUG_TEST_SPANNER_EMULATOR_HOST (host:port)."""

    owned = False

    def __init__(self, host: str) -> None:
        self.host = host.strip()
