"""The [lock] options of ``use = "postgres"``, apart from the backend so
that loading the plugin (every node does, to read its configuration) does
not import psycopg unless PostgreSQL is the lock chosen."""

from __future__ import annotations

from typing import Any

import attrs
from hedgeplug.plugin import Duration, positive


def _identifier(_inst: Any, attr: attrs.Attribute, value: str) -> None:
    if not value or "\0" in value:
        raise ValueError("must be a non-empty name without NUL characters", attr)
    limit = 63 - len("_rows") if attr.name == "table" else 63
    if len(value.encode()) > limit:
        raise ValueError(f"must be at most {limit} bytes (PostgreSQL truncates longer names)", attr)


@attrs.frozen
class PostgresOptions:
    """[lock] keys for ``use = "postgres"``."""

    dsn: str = attrs.field(
        default="",
        metadata={"help": "libpq connection string or URL; empty: the PG* environment variables"},
    )
    schema: str = attrs.field(default="public", validator=_identifier, metadata={"help": "schema of the tables"})
    table: str = attrs.field(
        default="hedgeplug_lease", validator=_identifier,
        metadata={"help": "lease table; row storage uses <table>_rows"},
    )
    create_table: bool = attrs.field(
        default=True, metadata={"help": "create the tables on first use (needs CREATE on the schema)"}
    )
    connect_timeout: Duration = attrs.field(
        default=Duration(5.0), validator=positive, metadata={"help": "bound on opening a connection"}
    )
    statement_timeout: Duration = attrs.field(
        default=Duration(5.0), validator=positive,
        metadata={"help": "server-side bound on one statement (backstop for cancellation)"},
    )
    watch: bool = attrs.field(
        default=True,
        metadata={"help": "LISTEN for lock changes on the node's one connection, between queries (fast failover)"},
    )
