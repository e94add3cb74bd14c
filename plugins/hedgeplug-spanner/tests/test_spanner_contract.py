"""The lock contract suite against the real Cloud Spanner emulator.

The emulator runs ONE read-write transaction at a time and aborts the others
(the client retries them), so mutual exclusion under contention is checked
here with 4 contenders only; the 20-contender hammering runs against
PostgreSQL, etcd and SQLite, whose servers take concurrent writers.
"""

from __future__ import annotations

import uuid

import pytest
from hedgeplug.testing.lock_contract import (
    LockBackendContract,
    RowStorageContract,
    WatchableContract,
)
from spanner_setup import PROJECT, create_database

from hedgeplug_spanner import SpannerLock, SpannerStore, lease_ddl, rows_ddl


@pytest.fixture(scope="session")
def spanner_database(spanner_emulator):
    instance, database = create_database(
        spanner_emulator.host, ddl=[lease_ddl("hedgeplug_lease"), rows_ddl("hedgeplug_rows")]
    )
    return spanner_emulator.host, instance, database


class TestSpannerLock(LockBackendContract, WatchableContract, RowStorageContract):
    ttl = 1.0
    contenders = 4
    hammer_seconds = 5.0
    clock_slack = 0.05

    @pytest.fixture
    def make_lock(self, spanner_database):
        host, instance, database = spanner_database
        name = f"contract-{uuid.uuid4().hex}"

        def open_lock() -> SpannerLock:
            store = SpannerStore(PROJECT, instance, database, emulator_host=host, timeout=10.0)
            return SpannerLock(store, name, watch_interval=0.1)

        return open_lock
