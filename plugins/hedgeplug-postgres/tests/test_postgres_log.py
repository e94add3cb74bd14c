"""The fenced key/value log's table on PostgreSQL: an existing deployment
(lease and rows tables only) gains it on first use, and with create_table =
false a missing log table is an error that shows the DDL. The FencedLog
contract itself runs in test_postgres_lock.py."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from hedgeplug.errors import StoreError

from hedgeplug_postgres import PostgresLock, PostgresOptions
from hedgeplug_postgres.log_schema import LogStatements
from hedgeplug_postgres.schema import Statements


def _old_deployment(dsn: str) -> str:
    """A schema holding the tables of a release before the log existed."""
    schema = f"old_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        for statement in Statements(schema, "hedgeplug_lease").ddl.split(";\n"):
            admin.execute(statement.rstrip(";"))
    return schema


@pytest.mark.anyio
async def test_an_existing_deployment_gains_the_log_table(postgres_server: Any) -> None:
    schema = _old_deployment(postgres_server.dsn)
    lock = PostgresLock(PostgresOptions(dsn=postgres_server.dsn, schema=schema), "old")
    try:
        lease = await lock.acquire("a", "addr", 5.0)
        assert lease is not None
        entry = await lock.log_append(lease.token, "k", b"v")
        assert entry is not None and entry.version == 1
        assert [e.value for e in await lock.log_read("k")] == [b"v"]
    finally:
        await lock.aclose()


@pytest.mark.anyio
async def test_without_create_table_a_missing_log_table_shows_its_ddl(postgres_server: Any) -> None:
    schema = _old_deployment(postgres_server.dsn)
    options = PostgresOptions(dsn=postgres_server.dsn, schema=schema, create_table=False)
    lock = PostgresLock(options, "old")
    try:
        lease = await lock.acquire("a", "addr", 5.0)
        assert lease is not None, "the lease works without the log table"
        with pytest.raises(StoreError) as caught:
            await lock.log_append(lease.token, "k", b"v")
        assert LogStatements(schema, "hedgeplug_lease").ddl in str(caught.value)
        with psycopg.connect(postgres_server.dsn, autocommit=True) as admin:
            for statement in LogStatements(schema, "hedgeplug_lease").ddl.split(";\n"):
                admin.execute(statement.rstrip(";"))
        entry = await lock.log_append(lease.token, "k", b"v")
        assert entry is not None
    finally:
        await lock.aclose()
