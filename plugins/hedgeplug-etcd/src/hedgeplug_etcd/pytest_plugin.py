"""pytest plugin of hedgeplug-etcd (entry point `hedgeplug-etcd` in the pytest11
group): the session fixture `etcd_server`. A test that stops, kills or
restarts the server starts its own with hedgeplug's `server_factory.etcd()`.
When the environment variable is set the server is used as given and cannot
be stopped (`.owned` is False).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hedgeplug.testing.pytest_plugin import session_server

from .testing import ETCD_ENDPOINTS_ENV, ExternalEtcd, start_etcd


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[Any]:
    """An etcd server for the whole run; `.endpoints` lists its client URLs, `.endpoint` is the first (HEDGEPLUG_TEST_ETCD_ENDPOINTS when set)."""
    yield from session_server(ETCD_ENDPOINTS_ENV, ExternalEtcd, start_etcd)
