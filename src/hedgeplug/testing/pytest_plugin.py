"""pytest plugin (entry point `hedgeplug` in the pytest11 group): fixtures for
plugin authors.

- `server_factory` (function scope): starts throwaway real servers this test
  owns and may stop, kill and restart; all are removed when the test ends.
  `server_factory.<name>(**options)` calls the launcher `<name>` of the
  `hedgeplug.test_servers` entry-point group (e.g. `.postgres()`, `.etcd(tls=True)`,
  `.spanner()` when those plugin distributions are installed).
- `session_server(env_name, external, start)`: the body of a session fixture
  that uses the server named by environment variable `env_name` when it is
  set (wrapped by `external`, which cannot be stopped) and starts one with
  `start()` otherwise. Plugin distributions build their own fixtures
  (`postgres_server`, `etcd_server`, `spanner_emulator`) on it.

A missing server binary fails the test with a message saying how to install
it; nothing is skipped.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from . import servers


def session_server(env_name: str, external: Callable[[str], Any],
                   start: Callable[[], servers.ServerHandle]) -> Iterator[Any]:
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


class ServerFactory:
    """Starts servers owned by one test (for stop/start/kill); all are removed at its end."""

    def __init__(self) -> None:
        self.started: list[servers.ServerHandle] = []

    def start(self, name: str, **options: Any) -> Any:
        """Start the installed test server `name` with its launcher's `options`."""
        try:
            handle = servers.launcher(name)(**options)
        except servers.ServerError as exc:
            pytest.fail(str(exc), pytrace=False)
        self.started.append(handle)
        return handle

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda **options: self.start(name, **options)

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
