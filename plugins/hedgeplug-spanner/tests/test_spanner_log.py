"""The fenced log's table on Spanner (emulator): a database holding only the
tables of a release before the log gains `<table>_log` and its index with
create_table = true; without it, a missing log table is a clear StoreError.
The FencedLog contract itself runs in test_spanner_contract.py."""

from __future__ import annotations

import uuid

import pytest
from hedgeplug.errors import StoreError

from hedgeplug_spanner import SpannerLock, SpannerStore, lease_ddl, rows_ddl
from hedgeplug_spanner.emulator import create_emulator_database
from hedgeplug_spanner.store import shared_database

PROJECT = "hedgeplug-test"


def _old_database(host: str) -> str:
    database = f"old{uuid.uuid4().hex[:16]}"
    create_emulator_database(host, PROJECT, "test-instance", database, with_tables=False)
    db = shared_database(PROJECT, "test-instance", database, host)
    db.update_ddl([lease_ddl("hedgeplug_lease"), rows_ddl("hedgeplug_rows")]).result(timeout=60)
    return database


@pytest.mark.anyio
async def test_an_existing_database_gains_the_log_table(spanner_emulator) -> None:
    database = _old_database(spanner_emulator.host)
    store = SpannerStore(PROJECT, "test-instance", database, emulator_host=spanner_emulator.host,
                         timeout=10.0)
    bare = SpannerLock(store, "old")
    lease = await bare.acquire("a", "addr", 5.0)
    assert lease is not None
    migrating = SpannerLock(store, "old", create_table=True)
    entry = await migrating.log_append(lease.token, "k", b"v")
    assert entry is not None and entry.version == 1 and entry.revision == 1
    assert [e.value for e in await bare.log_read("k")] == [b"v"]
    await bare.aclose()


@pytest.mark.anyio
async def test_without_create_table_a_missing_log_table_is_named(spanner_emulator) -> None:
    database = _old_database(spanner_emulator.host)
    store = SpannerStore(PROJECT, "test-instance", database, emulator_host=spanner_emulator.host,
                         timeout=10.0)
    lock = SpannerLock(store, "old")
    lease = await lock.acquire("a", "addr", 5.0)
    assert lease is not None, "the lease works without the log table"
    with pytest.raises(StoreError, match="hedgeplug_lease_log"):
        await lock.log_append(lease.token, "k", b"v")
    await lock.aclose()
