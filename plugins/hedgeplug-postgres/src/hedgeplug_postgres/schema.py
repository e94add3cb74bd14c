"""The two tables and every statement the backend runs, as text.

Identifiers are quoted here (doubling embedded quotes, the SQL rule), so any
schema or table name a user configures is safe. Expiry is always judged with
clock_timestamp(), the database's clock at the moment the statement runs:
now() would be the start of the surrounding transaction and could be
arbitrarily old.
"""

from __future__ import annotations

import hashlib

import attrs


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


_REMAINING = "extract(epoch FROM expires_at - clock_timestamp())::float8"


@attrs.frozen
class Statements:
    schema: str
    table: str

    @property
    def lease_table(self) -> str:
        return f"{quote_ident(self.schema)}.{quote_ident(self.table)}"

    @property
    def rows_table(self) -> str:
        return f"{quote_ident(self.schema)}.{quote_ident(self.table + '_rows')}"

    @property
    def lease_name(self) -> str:
        """The lease table's name as to_regclass() reads it."""
        return self.lease_table

    @property
    def channel(self) -> str:
        """NOTIFY channel for this table (short: channel names are limited to 63 bytes)."""
        digest = hashlib.sha1(f"{self.schema}.{self.table}".encode()).hexdigest()[:16]
        return f"hedgeplug_{digest}"

    @property
    def ddl(self) -> str:
        return (
            f"CREATE TABLE IF NOT EXISTS {self.lease_table} (\n"
            "    name       text PRIMARY KEY,\n"
            "    holder     text NOT NULL,\n"
            "    address    text NOT NULL,\n"
            "    token      bigint NOT NULL,\n"
            "    ttl        double precision NOT NULL,\n"
            "    expires_at timestamptz NOT NULL,\n"
            "    fingerprint text NOT NULL DEFAULT ''\n"
            ");\n"
            f"{self.add_fingerprint};\n"
            f"CREATE TABLE IF NOT EXISTS {self.rows_table} (\n"
            "    lock    text NOT NULL,\n"
            "    key     text NOT NULL,\n"
            "    value   bytea NOT NULL,\n"
            "    version bigint NOT NULL,\n"
            "    PRIMARY KEY (lock, key)\n"
            ");"
        )

    @property
    def add_fingerprint(self) -> str:
        """Brings a lease table made before lease fingerprints up to date."""
        return (
            f"ALTER TABLE {self.lease_table} ADD COLUMN IF NOT EXISTS fingerprint text NOT NULL DEFAULT ''"
        )

    @property
    def has_fingerprint(self) -> str:
        return """
SELECT count(*) FROM pg_attribute
WHERE attrelid = to_regclass(%s) AND attname = 'fingerprint' AND NOT attisdropped"""

    # -- lease; every statement returns holder, address, token, ttl, remaining, fingerprint

    @property
    def acquire(self) -> str:
        # One statement: insert the row, or take it over only when it is free,
        # expired by the database clock, or already ours; the fencing token is
        # incremented in the same statement. The CTE lets the same statement
        # notify watchers (delivered when it commits).
        return f"""
WITH taken AS (
    INSERT INTO {self.lease_table} AS l (name, holder, address, token, ttl, expires_at, fingerprint)
    VALUES (%(name)s, %(holder)s, %(address)s, 1, %(ttl)s,
            clock_timestamp() + %(ttl)s * interval '1 second', %(fingerprint)s)
    ON CONFLICT (name) DO UPDATE SET
        holder = excluded.holder, address = excluded.address, token = l.token + 1,
        ttl = excluded.ttl, expires_at = clock_timestamp() + excluded.ttl * interval '1 second',
        fingerprint = excluded.fingerprint
    WHERE l.holder = '' OR l.expires_at <= clock_timestamp() OR l.holder = excluded.holder
    RETURNING holder, address, token, ttl, expires_at, fingerprint
)
SELECT holder, address, token, ttl, {_REMAINING}, fingerprint, pg_notify(%(channel)s, %(name)s)
FROM taken"""

    @property
    def renew(self) -> str:
        return f"""
UPDATE {self.lease_table}
SET ttl = %(ttl)s, expires_at = clock_timestamp() + %(ttl)s * interval '1 second',
    fingerprint = %(fingerprint)s
WHERE name = %(name)s AND holder = %(holder)s AND token = %(token)s
  AND holder <> '' AND expires_at > clock_timestamp()
RETURNING holder, address, token, ttl, {_REMAINING}, fingerprint"""

    @property
    def release(self) -> str:
        return f"""
WITH freed AS (
    UPDATE {self.lease_table} SET holder = '', address = '', expires_at = clock_timestamp()
    WHERE name = %(name)s AND holder = %(holder)s AND token = %(token)s AND holder <> ''
    RETURNING name
)
SELECT pg_notify(%(channel)s, name) FROM freed"""

    @property
    def current(self) -> str:
        return f"""
SELECT holder, address, token, ttl, {_REMAINING}, fingerprint FROM {self.lease_table}
WHERE name = %(name)s AND holder <> '' AND expires_at > clock_timestamp()"""

    @property
    def last_fingerprint(self) -> str:
        return f"SELECT fingerprint FROM {self.lease_table} WHERE name = %(name)s"

    @property
    def state(self) -> str:
        """For watchers: holder, token, live?, seconds until expiry."""
        return f"""
SELECT holder, token, holder <> '' AND expires_at > clock_timestamp(), {_REMAINING}
FROM {self.lease_table} WHERE name = %(name)s"""

    # -- rows

    @property
    def row_get(self) -> str:
        return f"SELECT key, value, version FROM {self.rows_table} WHERE lock = %(lock)s AND key = %(key)s"

    @property
    def row_put_any(self) -> str:
        return f"""
INSERT INTO {self.rows_table} AS r (lock, key, value, version)
VALUES (%(lock)s, %(key)s, %(value)s, 1)
ON CONFLICT (lock, key) DO UPDATE SET value = excluded.value, version = r.version + 1
RETURNING version"""

    @property
    def row_create(self) -> str:
        return f"""
INSERT INTO {self.rows_table} (lock, key, value, version)
VALUES (%(lock)s, %(key)s, %(value)s, 1)
ON CONFLICT (lock, key) DO NOTHING RETURNING version"""

    @property
    def row_compare_and_set(self) -> str:
        return f"""
UPDATE {self.rows_table} SET value = %(value)s, version = version + 1
WHERE lock = %(lock)s AND key = %(key)s AND version = %(expect)s
RETURNING version"""

    @property
    def row_delete(self) -> str:
        return f"DELETE FROM {self.rows_table} WHERE lock = %(lock)s AND key = %(key)s"

    @property
    def row_delete_expect(self) -> str:
        return self.row_delete + " AND version = %(expect)s"

    @property
    def row_scan(self) -> str:
        return f"""
SELECT key, value, version FROM {self.rows_table}
WHERE lock = %(lock)s AND left(key, length(%(prefix)s)) = %(prefix)s
ORDER BY key COLLATE "C\""""
