"""pytest plugin (entry point `hedgeplug` in the pytest11 group): fixtures for
plugin authors. Server fixtures start real throwaway servers on loopback.

Session fixtures, shared by every test of a run:

- `postgres_server`: `.dsn` (HEDGEPLUG_TEST_POSTGRES_DSN when set)
- `etcd_server`: `.endpoints`, `.endpoint` (HEDGEPLUG_TEST_ETCD_ENDPOINTS)
- `spanner_emulator`: `.host`, the SPANNER_EMULATOR_HOST value
  (HEDGEPLUG_TEST_SPANNER_EMULATOR_HOST)

When the variable is set the server is used as given and cannot be stopped
(`.owned` is False). A test that stops, kills or restarts a server starts its
own with the function-scoped `server_factory` (`.postgres()`, `.etcd()`,
`.spanner()`), which are removed when the test ends. A missing server binary
fails the test with a message saying how to install it; nothing is skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from . import servers


def _session_server(env_name: str, external: Any, start: Any) -> Iterator[Any]:
    given = os.environ.get(env_name, "").strip()
    if given:
        yield external(given)
        return
    try:
        handle = start()
    except servers.ServerError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield handle
    finally:
        handle.cleanup()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """A PostgreSQL server for the whole run; `.dsn` is a libpq URL."""
    yield from _session_server(servers.POSTGRES_DSN_ENV, servers.ExternalPostgres,
                               servers.start_postgres)


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[Any]:
    """An etcd server for the whole run; `.endpoints` lists its client URLs."""
    yield from _session_server(servers.ETCD_ENDPOINTS_ENV, servers.ExternalEtcd,
                               servers.start_etcd)


@pytest.fixture(scope="session")
def spanner_emulator() -> Iterator[Any]:
    """A Cloud Spanner emulator for the whole run; `.host` is its host:port."""
    yield from _session_server(servers.SPANNER_EMULATOR_HOST_ENV, servers.ExternalSpanner,
                               servers.start_spanner_emulator)


class ServerFactory:
    """Starts servers owned by one test (for stop/start/kill); all are removed at its end."""

    def __init__(self) -> None:
        self.started: list[servers.ServerHandle] = []

    def _start(self, start: Any) -> Any:
        try:
            handle = start()
        except servers.ServerError as exc:
            pytest.fail(str(exc), pytrace=False)
        self.started.append(handle)
        return handle

    def postgres(self) -> servers.PostgresServer:
        return self._start(servers.start_postgres)

    def etcd(self, *, tls: bool = False) -> servers.EtcdServer:
        """An own etcd; with tls=True an https one that demands client certificates."""
        return self._start(lambda: servers.start_etcd(tls=tls))

    def spanner(self) -> servers.SpannerEmulator:
        return self._start(servers.start_spanner_emulator)

    def cleanup(self) -> None:
        for handle in reversed(self.started):
            handle.cleanup()
        self.started.clear()


@pytest.fixture
def server_factory() -> Iterator[ServerFactory]:
    """Start throwaway servers this test may stop, kill and restart."""
    factory = ServerFactory()
    try:
        yield factory
    finally:
        factory.cleanup()
