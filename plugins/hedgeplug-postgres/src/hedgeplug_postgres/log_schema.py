"""The fenced key/value log's table and statements (``<table>_log``).

Created beside the lease and rows tables (CREATE ... IF NOT EXISTS, so an
existing deployment gains it on the next start with create_table = true; with
create_table = false, run `log_ddl` once). ``revision`` is an identity column;
appends of one lock run while holding its lease row FOR UPDATE, so within a
lock revisions are assigned, and committed, in order. ``committed_at`` is the
database's clock_timestamp() at the append, as seconds since the epoch.
"""

from __future__ import annotations

import hashlib

import attrs

from .schema import quote_ident

_COLUMNS = "key, value, version, revision, token, committed_at"


@attrs.frozen
class LogStatements:
    schema: str
    table: str

    @property
    def lease_table(self) -> str:
        return f"{quote_ident(self.schema)}.{quote_ident(self.table)}"

    @property
    def log_table(self) -> str:
        return f"{quote_ident(self.schema)}.{quote_ident(self.table + '_log')}"

    @property
    def _index(self) -> str:
        digest = hashlib.sha1(f"{self.schema}.{self.table}".encode()).hexdigest()[:16]
        return quote_ident(f"hedgeplug_log_{digest}")

    @property
    def ddl(self) -> str:
        return (
            f"CREATE TABLE IF NOT EXISTS {self.log_table} (\n"
            "    revision     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,\n"
            "    lock         text NOT NULL,\n"
            "    key          text NOT NULL,\n"
            "    version      bigint NOT NULL,\n"
            "    token        bigint NOT NULL,\n"
            "    value        bytea NOT NULL,\n"
            "    committed_at double precision NOT NULL,\n"
            "    UNIQUE (lock, key, version)\n"
            ");\n"
            f"CREATE INDEX IF NOT EXISTS {self._index} ON {self.log_table} (lock, revision);"
        )

    @property
    def fence(self) -> str:
        """Locks the lease row when `token` is its live token; no row otherwise."""
        return f"""
SELECT 1 FROM {self.lease_table}
WHERE name = %(lock)s AND token = %(token)s AND holder <> '' AND expires_at > clock_timestamp()
FOR UPDATE"""

    @property
    def append(self) -> str:
        return f"""
INSERT INTO {self.log_table} (lock, key, version, token, value, committed_at)
VALUES (%(lock)s, %(key)s,
        coalesce((SELECT max(version) FROM {self.log_table} WHERE lock = %(lock)s AND key = %(key)s), 0) + 1,
        %(token)s, %(value)s, extract(epoch FROM clock_timestamp())::float8)
RETURNING {_COLUMNS}"""

    @property
    def trim(self) -> str:
        return f"""
DELETE FROM {self.log_table} WHERE lock = %(lock)s AND key = %(key)s AND version <=
    (SELECT max(version) FROM {self.log_table} WHERE lock = %(lock)s AND key = %(key)s) - %(keep)s"""

    def read(self, oldest_first: bool) -> str:
        order = "ASC" if oldest_first else "DESC"
        return f"""
SELECT {_COLUMNS} FROM {self.log_table} WHERE lock = %(lock)s AND key = %(key)s
ORDER BY version {order} LIMIT %(limit)s"""

    @property
    def keys(self) -> str:
        return f"""
SELECT DISTINCT key COLLATE "C" AS k FROM {self.log_table}
WHERE lock = %(lock)s AND left(key, length(%(prefix)s)) = %(prefix)s ORDER BY k"""

    @property
    def since(self) -> str:
        return f"""
SELECT {_COLUMNS} FROM {self.log_table}
WHERE lock = %(lock)s AND revision > %(revision)s AND left(key, length(%(prefix)s)) = %(prefix)s
ORDER BY revision LIMIT %(limit)s"""

    @property
    def last_revision(self) -> str:
        return f"SELECT coalesce(max(revision), 0) FROM {self.log_table} WHERE lock = %(lock)s"
