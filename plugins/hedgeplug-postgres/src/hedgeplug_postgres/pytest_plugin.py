"""pytest plugin of hedgeplug-postgres (entry point `hedgeplug-postgres` in the pytest11
group): the session fixture `postgres_server`. A test that stops, kills or
restarts the server starts its own with hedgeplug's `server_factory.postgres()`.
When the environment variable is set the server is used as given and cannot
be stopped (`.owned` is False).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hedgeplug.testing.pytest_plugin import session_server

from .testing import POSTGRES_DSN_ENV, ExternalPostgres, start_postgres


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """A PostgreSQL server for the whole run; `.dsn` is a libpq URL (HEDGEPLUG_TEST_POSTGRES_DSN when set)."""
    yield from session_server(POSTGRES_DSN_ENV, ExternalPostgres, start_postgres)
