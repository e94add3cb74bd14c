"""The optional row storage of the sqlite lock: versioned rows keyed by
(lock name, key) in the ``hedgeplug_rows`` table."""

from __future__ import annotations

import sqlite3

from hedgeplug.plugin import Row

from .store import SqliteStore

ROWS_SCHEMA = """
CREATE TABLE IF NOT EXISTS hedgeplug_rows (
    lock    TEXT NOT NULL,
    key     TEXT NOT NULL,
    value   BLOB NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (lock, key)
);
"""

_PUT = """INSERT INTO hedgeplug_rows (lock, key, value, version)
          VALUES (:lock, :key, :value, 1)
          ON CONFLICT (lock, key) DO UPDATE
          SET value = excluded.value, version = version + 1
          RETURNING version"""

_CREATE = """INSERT INTO hedgeplug_rows (lock, key, value, version)
             VALUES (:lock, :key, :value, 1)
             ON CONFLICT (lock, key) DO NOTHING RETURNING version"""

_REPLACE = """UPDATE hedgeplug_rows SET value = :value, version = version + 1
              WHERE lock = :lock AND key = :key AND version = :expect
              RETURNING version"""


class SqliteRows:
    """RowStorage of one lock name in one store."""

    def __init__(self, store: SqliteStore, lock_name: str) -> None:
        self._store = store
        self.lock_name = lock_name

    async def get(self, key: str) -> Row | None:
        def work(conn: sqlite3.Connection) -> Row | None:
            found = conn.execute(
                "SELECT key, value, version FROM hedgeplug_rows WHERE lock = ? AND key = ?",
                (self.lock_name, key),
            ).fetchone()
            return None if found is None else Row(found[0], bytes(found[1]), int(found[2]))

        return await self._store.call(work, write=False)

    async def put(self, key: str, value: bytes, *, expect: int | None = None) -> Row | None:
        def work(conn: sqlite3.Connection) -> Row | None:
            args = {"lock": self.lock_name, "key": key, "value": bytes(value), "expect": expect}
            sql = _PUT if expect is None else _CREATE if expect == 0 else _REPLACE
            found = conn.execute(sql, args).fetchone()
            return None if found is None else Row(key, bytes(value), int(found[0]))

        return await self._store.call(work, write=True)

    async def delete(self, key: str, *, expect: int | None = None) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            if expect is None:
                cur = conn.execute(
                    "DELETE FROM hedgeplug_rows WHERE lock = ? AND key = ?", (self.lock_name, key)
                )
            else:
                cur = conn.execute(
                    "DELETE FROM hedgeplug_rows WHERE lock = ? AND key = ? AND version = ?",
                    (self.lock_name, key, expect),
                )
            return cur.rowcount > 0

        return await self._store.call(work, write=True)

    async def scan(self, prefix: str) -> list[Row]:
        def work(conn: sqlite3.Connection) -> list[Row]:
            found = conn.execute(
                "SELECT key, value, version FROM hedgeplug_rows"
                " WHERE lock = ? AND substr(key, 1, ?) = ? ORDER BY key",
                (self.lock_name, len(prefix), prefix),
            ).fetchall()
            return [Row(k, bytes(v), int(n)) for k, v, n in found]

        return await self._store.call(work, write=False)
