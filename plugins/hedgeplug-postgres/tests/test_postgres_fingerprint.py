"""Lease fingerprints through a real PostgreSQL: a lease table from before
them gains the column, and a node of other keys never captures the lease."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from hedgeplug.errors import StoreError
from hedgeplug.testing.lease_capture import foreign_joiner_never_leads

from hedgeplug_postgres import PostgresLock, PostgresOptions


@pytest.fixture
def anyio_backend():
    return "trio"


async def _old_table(dsn: str) -> str:
    """The tables of a deployment from before lease fingerprints, holding a released lease."""
    table = f"old_{uuid.uuid4().hex[:10]}"
    lock = PostgresLock(PostgresOptions(dsn=dsn, table=table), "lock")
    try:
        lease = await lock.acquire("old-node", "addr", 5.0)
        assert lease is not None
        await lock.release(lease)
    finally:
        await lock.aclose()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"ALTER TABLE {table} DROP COLUMN fingerprint")
    return table


@pytest.mark.anyio
async def test_a_lease_table_from_before_fingerprints_gains_the_column(postgres_server: Any) -> None:
    table = await _old_table(postgres_server.dsn)
    lock = PostgresLock(PostgresOptions(dsn=postgres_server.dsn, table=table), "lock")
    try:
        assert await lock.last_fingerprint() == ""  # the old record: no fingerprint, anyone may take it
        lease = await lock.acquire("n1", "addr-1", 5.0, fingerprint="1a2b3c4d")
        assert lease is not None and lease.token == 2 and lease.fingerprint == "1a2b3c4d"
    finally:
        await lock.aclose()


@pytest.mark.anyio
async def test_an_old_table_without_create_table_names_the_statement_to_run(postgres_server: Any) -> None:
    table = await _old_table(postgres_server.dsn)
    lock = PostgresLock(PostgresOptions(dsn=postgres_server.dsn, table=table, create_table=False), "lock")
    try:
        with pytest.raises(StoreError) as caught:
            await lock.current()
    finally:
        await lock.aclose()
    message = str(caught.value)
    assert "predates lease fingerprints" in message
    assert f'ALTER TABLE "public"."{table}" ADD COLUMN IF NOT EXISTS fingerprint' in message


@pytest.mark.slow
@pytest.mark.anyio
async def test_a_node_of_other_keys_never_takes_the_lease_through_postgres(
    tmp_path, postgres_server: Any
) -> None:
    await foreign_joiner_never_leads(
        tmp_path, cluster=f"pg-capture-{uuid.uuid4().hex[:6]}", ttl=2.0, kills=1,
        overrides=["lock.use=postgres", f"lock.dsn={postgres_server.dsn}",
                   f"lock.table=lease_{uuid.uuid4().hex[:8]}"],
    )
