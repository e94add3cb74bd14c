"""Lease fingerprints through the Spanner emulator: a lease table from before
them gains the column (create_table) or the error names the ALTER to run, and
a node of other keys never captures the lease."""

from __future__ import annotations

import uuid

import pytest
from hedgeplug.errors import StoreError
from hedgeplug.testing.lease_capture import foreign_joiner_never_leads

from hedgeplug_spanner import SpannerLock, SpannerStore, log_ddl, rows_ddl
from hedgeplug_spanner.emulator import create_emulator_database
from hedgeplug_spanner.store import _client

PROJECT = "hedgeplug-test"
INSTANCE = "test-instance"

OLD_LEASE_DDL = (
    "CREATE TABLE hedgeplug_lease (\n"
    "  name STRING(MAX) NOT NULL, holder STRING(MAX) NOT NULL, address STRING(MAX) NOT NULL,\n"
    "  token INT64 NOT NULL, ttl_ms INT64 NOT NULL,\n"
    "  heartbeat TIMESTAMP NOT NULL OPTIONS (allow_commit_timestamp = true)\n"
    ") PRIMARY KEY (name)"
)


@pytest.fixture
def anyio_backend():
    return "trio"


def _old_database(host: str) -> str:
    """A database with the tables of a release from before lease fingerprints."""
    database = f"old{uuid.uuid4().hex[:16]}"
    create_emulator_database(host, PROJECT, INSTANCE, database, with_tables=False)
    handle = _client(PROJECT, host).instance(INSTANCE).database(database)
    handle.update_ddl(
        [OLD_LEASE_DDL, rows_ddl("hedgeplug_rows"), *log_ddl("hedgeplug_lease")]
    ).result(timeout=120)
    return database


@pytest.mark.anyio
@pytest.mark.parametrize("create_table", [True, False])
async def test_a_lease_table_from_before_fingerprints(spanner_emulator, create_table):
    database = _old_database(spanner_emulator.host)
    store = SpannerStore(PROJECT, INSTANCE, database, emulator_host=spanner_emulator.host, timeout=10.0)
    lock = SpannerLock(store, "lock", create_table=create_table)
    try:
        if create_table:
            assert await lock.last_fingerprint() == ""
            lease = await lock.acquire("n1", "addr-1", 5.0, fingerprint="1a2b3c4d")
            assert lease is not None and lease.fingerprint == "1a2b3c4d"
            seen = await lock.current()
            assert seen is not None and seen.fingerprint == "1a2b3c4d"
        else:
            with pytest.raises(StoreError) as caught:
                await lock.current()
            message = str(caught.value)
            assert "predates lease fingerprints" in message
            assert "ALTER TABLE hedgeplug_lease ADD COLUMN fingerprint STRING(MAX)" in message
    finally:
        await lock.aclose()


@pytest.mark.slow
@pytest.mark.anyio
async def test_a_node_of_other_keys_never_takes_the_lease_through_spanner(tmp_path, spanner_emulator):
    database = f"capture{uuid.uuid4().hex[:16]}"
    create_emulator_database(spanner_emulator.host, PROJECT, INSTANCE, database)
    await foreign_joiner_never_leads(
        tmp_path, cluster=f"spanner-capture-{uuid.uuid4().hex[:6]}", ttl=2.0, kills=1,
        overrides=[
            "lock.use=spanner", f"lock.project={PROJECT}", f"lock.instance={INSTANCE}",
            f"lock.database={database}", f"lock.emulator_host={spanner_emulator.host}",
        ],
    )
