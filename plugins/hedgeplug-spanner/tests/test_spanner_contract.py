"""The lock contract suite against the real Cloud Spanner emulator.

The emulator runs ONE read-write transaction at a time and aborts the others
(this backend runs them one by one per process against the emulator), so mutual exclusion under contention is checked
here with 4 contenders only; the 20-contender hammering runs against
PostgreSQL, etcd and SQLite, whose servers take concurrent writers.
"""

from __future__ import annotations

import os
import signal
import uuid

import pytest
from hedgeplug.testing.lock_contract import (
    FingerprintedContract,
    LockBackendContract,
    RowStorageContract,
    StallContract,
    WatchableContract,
)
from hedgeplug.testing.log_contract import FencedLogContract

from hedgeplug_spanner import SpannerLock, SpannerStore
from hedgeplug_spanner.emulator import create_emulator_database

PROJECT = "hedgeplug-test"


@pytest.fixture(scope="session")
def spanner_database(spanner_emulator):
    database = f"contract{uuid.uuid4().hex[:16]}"
    create_emulator_database(spanner_emulator.host, PROJECT, "test-instance", database)
    return spanner_emulator.host, "test-instance", database


class TestSpannerLock(
    LockBackendContract, WatchableContract, RowStorageContract, FencedLogContract, FingerprintedContract
):
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


class _ProcessPause:
    """Stalls the emulator for real by stopping its process (SIGSTOP / SIGCONT)."""

    def __init__(self, server) -> None:
        self.server = server

    def stall(self) -> None:
        os.kill(self.server.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.server.pid, signal.SIGCONT)


class TestSpannerStall(StallContract):
    """A stalled store: an abandoned call returns at once and the backend recovers.
    (StoreOutageContract does not apply: the emulator keeps data in memory only,
    so a restarted emulator has no database left to come back to.)"""

    ttl = 1.0
    call_bound = 10.0

    @pytest.fixture
    def own_emulator(self, server_factory):
        emulator = server_factory.spanner()
        yield emulator
        os.kill(emulator.pid, signal.SIGCONT)

    @pytest.fixture
    def make_lock(self, own_emulator):
        database = f"stall{uuid.uuid4().hex[:16]}"
        create_emulator_database(own_emulator.host, PROJECT, "test-instance", database)
        name = f"stall-{uuid.uuid4().hex}"
        return lambda: SpannerLock(
            SpannerStore(PROJECT, "test-instance", database, emulator_host=own_emulator.host,
                         timeout=10.0), name)

    @pytest.fixture
    def store_stall(self, own_emulator):
        return _ProcessPause(own_emulator)
