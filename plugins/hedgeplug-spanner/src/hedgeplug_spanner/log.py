"""FencedLog for SpannerLock: the ``<table>_log`` table.

An append is ONE read-write transaction: one query reads the lease row
(token, holder, expiry by Spanner's clock, as the lock judges it), the newest
version of the key and the newest revision of the lock; then it inserts the
entry; Spanner's serializable transactions make a takeover (which writes the
lease row) commit before or after it, never beside it. ``committed_at`` is
the transaction's commit timestamp, written with the entry and read back
from the commit. Revisions come from the same transaction (newest + 1 under
the lock), so they follow commit order.

Tables: ``<table>_log`` and its index ``<table>_log_by_revision`` are created
with the others when create_table is true; otherwise run `log_ddl()` once.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from hedgeplug.plugin import Lease, LogEntry


def log_ddl(table: str) -> list[str]:
    log = f"{table}_log"
    return [
        f"CREATE TABLE {log} (\n"
        "  lock_name    STRING(MAX) NOT NULL,\n"
        "  row_key      STRING(MAX) NOT NULL,\n"
        "  version      INT64 NOT NULL,\n"
        "  revision     INT64 NOT NULL,\n"
        "  token        INT64 NOT NULL,\n"
        "  value        BYTES(MAX) NOT NULL,\n"
        "  committed_at TIMESTAMP NOT NULL OPTIONS (allow_commit_timestamp = true)\n"
        ") PRIMARY KEY (lock_name, row_key, version)",
        f"CREATE INDEX {log}_by_revision ON {log} (lock_name, revision)",
    ]


_COLUMNS = "row_key, value, version, revision, token, committed_at"


def _entry(fields: Any) -> LogEntry:
    key, value, version, revision, token, at = fields
    return LogEntry(key, base64.b64decode(value), int(version), int(revision), int(token), at.timestamp())


class SpannerLogMixin:
    """Mixed into SpannerLock, which provides the store, the lease read and `_call`."""

    lock_name: str
    table: str
    store: Any

    async def _call(self, what: str, work: Any) -> Any:
        raise NotImplementedError

    def _read(self, reader: Any) -> Any:
        raise NotImplementedError

    def _transact(self, database: Any, work: Any) -> Any:
        raise NotImplementedError

    def _lease(self, row: Any) -> Lease | None:
        raise NotImplementedError

    @property
    def log_table(self) -> str:
        return f"{self.table}_log"

    def _query(self, reader: Any, sql: str, **params: Any) -> list[Any]:
        from google.cloud.spanner_v1 import param_types

        types = {k: param_types.INT64 if isinstance(v, int) else param_types.STRING
                 for k, v in params.items()}
        return list(reader.execute_sql(sql, params={"lock_name": self.lock_name, **params},
                                       param_types={"lock_name": param_types.STRING, **types},
                                       timeout=self.store.timeout))

    def _current(self, tx: Any, token: int) -> bool:
        row = self._read(tx)
        lease = self._lease(row) if row is not None else None
        return lease is not None and lease.token == token

    def _newest(self, tx: Any, key: str) -> int:
        rows = self._query(tx, f"SELECT MAX(version) FROM {self.log_table} "
                               "WHERE lock_name = @lock_name AND row_key = @row_key", row_key=key)
        return int(rows[0][0] or 0) if rows else 0

    def _append_state(self, tx: Any, key: str) -> tuple[Any, ...] | None:
        """In one query: the lease (holder, token, time left) and the newest
        version of `key` and revision of the lock."""
        rows = self._query(tx, (
            f"SELECT l.holder, l.token, TIMESTAMP_DIFF(TIMESTAMP_ADD(l.heartbeat, INTERVAL l.ttl_ms "
            f"MILLISECOND), CURRENT_TIMESTAMP(), MICROSECOND), "
            f"(SELECT MAX(version) FROM {self.log_table} WHERE lock_name = @lock_name AND row_key = @row_key), "
            f"(SELECT MAX(revision) FROM {self.log_table} WHERE lock_name = @lock_name) "
            f"FROM {self.table} l WHERE l.name = @lock_name"), row_key=key)
        return tuple(rows[0]) if rows else None

    async def log_append(self, token: int, key: str, value: bytes) -> LogEntry | None:
        from google.cloud import spanner

        def append(tx: Any) -> tuple[int, int] | None:
            state = self._append_state(tx, key)
            if state is None:
                return None
            holder, current, remaining_us, newest, last = state
            if not holder or int(current) != token or remaining_us is None or remaining_us <= 0:
                return None
            version, revision = int(newest or 0) + 1, int(last or 0) + 1
            tx.insert(self.log_table,
                      columns=("lock_name", "row_key", "version", "revision", "token", "value",
                               "committed_at"),
                      values=[(self.lock_name, key, version, revision, token,
                               base64.b64encode(value), spanner.COMMIT_TIMESTAMP)])
            return version, revision

        def run(db: Any) -> LogEntry | None:
            attempts: list[Any] = []

            def work(tx: Any) -> tuple[int, int] | None:
                attempts.append(tx)  # the last attempt is the one that committed
                return append(tx)

            done = self._transact(db, work)
            if done is None:
                return None
            at = attempts[-1].committed.timestamp()
            return LogEntry(key, bytes(value), done[0], done[1], token, at)

        return await self._call("append to log", run)  # type: ignore[no-any-return]

    async def log_trim(self, token: int, key: str, keep: int) -> int | None:
        if keep < 1:
            raise ValueError("keep must be at least 1")

        def trim(tx: Any) -> int | None:
            if not self._current(tx, token):
                return None
            upto = self._newest(tx, key) - keep
            if upto < 1:
                return 0
            from google.cloud.spanner_v1 import param_types

            return int(tx.execute_update(
                f"DELETE FROM {self.log_table} WHERE lock_name = @lock_name AND row_key = @row_key "
                "AND version <= @upto",
                params={"lock_name": self.lock_name, "row_key": key, "upto": upto},
                param_types={"lock_name": param_types.STRING, "row_key": param_types.STRING,
                             "upto": param_types.INT64},
            ))

        return await self._call("trim log", lambda db: self._transact(db, trim))  # type: ignore[no-any-return]

    async def _snapshot(self, what: str, read: Callable[[Any], Any]) -> Any:
        def run(db: Any) -> Any:
            with db.snapshot() as snap:
                return read(snap)

        return await self._call(what, run)

    async def log_read(
        self, key: str, *, limit: int | None = None, oldest_first: bool = False
    ) -> list[LogEntry]:
        order = "ASC" if oldest_first else "DESC"
        sql = (f"SELECT {_COLUMNS} FROM {self.log_table} WHERE lock_name = @lock_name "
               f"AND row_key = @row_key ORDER BY version {order}")
        params: dict[str, Any] = {"row_key": key}
        if limit is not None:
            sql += " LIMIT @limit"
            params["limit"] = int(limit)
        return await self._snapshot("read log", lambda snap: [_entry(r) for r in self._query(snap, sql, **params)])  # type: ignore[no-any-return]

    async def log_keys(self, prefix: str) -> list[str]:
        sql = (f"SELECT DISTINCT row_key FROM {self.log_table} WHERE lock_name = @lock_name "
               "AND STARTS_WITH(row_key, @prefix) ORDER BY row_key")
        return await self._snapshot("list log keys", lambda snap: [r[0] for r in self._query(snap, sql, prefix=prefix)])  # type: ignore[no-any-return]

    async def log_since(self, revision: int, prefix: str, limit: int) -> list[LogEntry]:
        sql = (f"SELECT {_COLUMNS} FROM {self.log_table} WHERE lock_name = @lock_name "
               "AND revision > @revision AND STARTS_WITH(row_key, @prefix) ORDER BY revision LIMIT @limit")
        return await self._snapshot("read log", lambda snap: [  # type: ignore[no-any-return]
            _entry(r) for r in self._query(snap, sql, revision=int(revision), prefix=prefix, limit=int(limit))])

    async def log_last_revision(self) -> int:
        sql = f"SELECT MAX(revision) FROM {self.log_table} WHERE lock_name = @lock_name"
        rows = await self._snapshot("read log", lambda snap: self._query(snap, sql))
        return int(rows[0][0] or 0) if rows else 0
