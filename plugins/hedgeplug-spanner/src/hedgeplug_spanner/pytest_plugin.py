"""pytest plugin of hedgeplug-spanner (entry point `hedgeplug-spanner` in the pytest11
group): the session fixture `spanner_emulator`. A test that stops, kills or
restarts the server starts its own with hedgeplug's `server_factory.spanner()`.
When the environment variable is set the server is used as given and cannot
be stopped (`.owned` is False).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hedgeplug.testing.pytest_plugin import session_server

from .testing import SPANNER_EMULATOR_HOST_ENV, ExternalSpanner, start_spanner_emulator


@pytest.fixture(scope="session")
def spanner_emulator() -> Iterator[Any]:
    """A Cloud Spanner emulator for the whole run; `.host` is its host:port, the SPANNER_EMULATOR_HOST value (HEDGEPLUG_TEST_SPANNER_EMULATOR_HOST when set)."""
    yield from session_server(SPANNER_EMULATOR_HOST_ENV, ExternalSpanner, start_spanner_emulator)
