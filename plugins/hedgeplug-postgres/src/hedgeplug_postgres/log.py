"""FencedLog for PostgresLock: the check of the lease token and the write
happen in one transaction that holds the lease row FOR UPDATE, so a takeover
(which updates that row) is ordered before or after the append, never beside it.

Reads are single statements on a reader connection of their own (so the
election's renewals never queue behind them), run in a plain worker thread:
a cancelled caller stops waiting at once (the thread is abandoned and keeps
the reader busy at most statement_timeout), without the cancel request
round trip the lease operations pay for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import psycopg
import psycopg.errors
from hedgeplug.plugin import LogEntry, StoreError

from .log_schema import LogStatements

T = TypeVar("T")


def _entry(row: tuple[Any, ...]) -> LogEntry:
    key, value, version, revision, token, at = row
    return LogEntry(key, bytes(value), int(version), int(revision), int(token), float(at))


class PostgresLogMixin:
    """Mixed into PostgresLock, which provides `_call`, `lock_name` and `log_sql`."""

    lock_name: str
    log_sql: LogStatements
    _reader: psycopg.Connection[Any] | None = None
    _read_limiter: anyio.CapacityLimiter | None = None

    async def _call(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        raise NotImplementedError

    def _connect(self) -> psycopg.Connection[Any]:
        raise NotImplementedError

    def _error(self, what: str) -> StoreError:
        raise NotImplementedError

    def _missing_table(self) -> StoreError:
        raise NotImplementedError

    async def _read(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        if self._reader is None:
            await self._call(lambda conn: None)  # the tables exist (or are created) first
        if self._read_limiter is None:
            self._read_limiter = anyio.CapacityLimiter(1)
        return await anyio.to_thread.run_sync(
            self._read_now, work, limiter=self._read_limiter, abandon_on_cancel=True
        )

    def _read_now(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        if getattr(self, "_closed", False):
            raise self._error("backend is closed")
        if self._reader is None or self._reader.closed:
            self._reader = self._connect()
        reader = self._reader
        try:
            return work(reader)
        except psycopg.errors.UndefinedTable:
            raise self._missing_table() from None
        except psycopg.Error as exc:
            if reader.broken or reader.closed:
                self._close_reader()
            text = str(exc).strip().splitlines()
            raise self._error(f"read failed: {text[0] if text else type(exc).__name__}") from None

    def _close_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            try:
                reader.close()
            except psycopg.Error:
                pass

    async def log_append(self, token: int, key: str, value: bytes) -> LogEntry | None:
        args = {"lock": self.lock_name, "token": token, "key": key, "value": bytes(value)}

        def work(conn: psycopg.Connection[Any]) -> LogEntry | None:
            with conn.transaction():
                if conn.execute(self.log_sql.fence, args).fetchone() is None:
                    return None
                row = conn.execute(self.log_sql.append, args).fetchone()
            return None if row is None else _entry(row)

        return await self._call(work)

    async def log_trim(self, token: int, key: str, keep: int) -> int | None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        args = {"lock": self.lock_name, "token": token, "key": key, "keep": keep}

        def work(conn: psycopg.Connection[Any]) -> int | None:
            with conn.transaction():
                if conn.execute(self.log_sql.fence, args).fetchone() is None:
                    return None
                return conn.execute(self.log_sql.trim, args).rowcount

        return await self._call(work)

    async def log_read(
        self, key: str, *, limit: int | None = None, oldest_first: bool = False
    ) -> list[LogEntry]:
        args = {"lock": self.lock_name, "key": key, "limit": limit}

        def work(conn: psycopg.Connection[Any]) -> list[LogEntry]:
            return [_entry(r) for r in conn.execute(self.log_sql.read(oldest_first), args).fetchall()]

        return await self._read(work)

    async def log_keys(self, prefix: str) -> list[str]:
        args = {"lock": self.lock_name, "prefix": prefix}

        def work(conn: psycopg.Connection[Any]) -> list[str]:
            return [str(r[0]) for r in conn.execute(self.log_sql.keys, args).fetchall()]

        return await self._read(work)

    async def log_since(self, revision: int, prefix: str, limit: int) -> list[LogEntry]:
        args = {"lock": self.lock_name, "revision": revision, "prefix": prefix, "limit": limit}

        def work(conn: psycopg.Connection[Any]) -> list[LogEntry]:
            return [_entry(r) for r in conn.execute(self.log_sql.since, args).fetchall()]

        return await self._read(work)

    async def log_last_revision(self) -> int:
        def work(conn: psycopg.Connection[Any]) -> int:
            row = conn.execute(self.log_sql.last_revision, {"lock": self.lock_name}).fetchone()
            return int(row[0]) if row else 0

        return await self._read(work)
