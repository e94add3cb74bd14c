"""One SQLite database file: its connection, transactions and worker thread.

Every call is one transaction (``BEGIN IMMEDIATE`` for writes, so a
check-and-write happens under SQLite's write lock, atomically across
processes). Blocking calls run in a worker thread behind a
CapacityLimiter(1), so the connection is never used by two threads at once;
a call cancelled by the caller interrupts the running statement.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import TypeVar

import anyio

from hedgeplug.plugin import StoreError, run_in_worker

T = TypeVar("T")

# SQLite's own busy wait cannot be interrupted, so a worker thread waits at
# most this long for the write lock; the rest of busy_timeout is spent
# retrying from the event loop, where a cancelled caller stops at once.
THREAD_BUSY_WAIT = 0.02
BUSY_RETRY = 0.005


class Busy(Exception):
    """Another connection holds the write lock (retried until busy_timeout)."""


def is_busy(exc: sqlite3.Error) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and (
        "locked" in str(exc) or "busy" in str(exc)
    )


class SqliteStore:
    """Transactions on one database file, created with `schema` on first use."""

    def __init__(
        self, path: str, *, schema: str, busy_timeout: float,
        columns: Sequence[tuple[str, str, str]] = (),
    ) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self._schema = schema
        # (table, column, declaration) added to a file made before the column existed
        self._columns = tuple(columns)
        self._limiter = anyio.CapacityLimiter(1)
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    def error(self, message: object) -> StoreError:
        return StoreError(f"sqlite lock store {self.path}: {message}")

    async def call(self, work: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        """Run `work` in one transaction, retrying while another connection holds the write lock."""
        give_up_at = anyio.current_time() + self.busy_timeout
        while True:
            try:
                return await run_in_worker(
                    lambda: self._transaction(work, write=write),
                    limiter=self._limiter,
                    interrupt=self._interrupt_running,
                )
            except Busy as exc:
                if anyio.current_time() >= give_up_at:
                    raise self.error(
                        f"{exc} (still locked after busy_timeout {self.busy_timeout}s)"
                    ) from None
            await anyio.sleep(BUSY_RETRY)

    def open_for_reading(self) -> sqlite3.Connection:
        """A plain connection of its own (for a watcher): it only reads, so it needs no schema set-up."""
        try:
            return sqlite3.connect(
                self.path, timeout=THREAD_BUSY_WAIT, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise self.error(f"cannot open: {exc}") from exc

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._close_now, limiter=self._limiter)

    # ------------------------------------------------------------ in the worker thread

    def _connect(self) -> sqlite3.Connection:
        conn = self.open_for_reading()
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            # FULL: a committed token survives power loss, so a token is never handed out twice.
            conn.execute("PRAGMA synchronous = FULL")
            conn.executescript(self._schema)
            self._add_missing_columns(conn)
        except sqlite3.Error as exc:
            conn.close()
            if is_busy(exc):
                raise Busy(str(exc)) from exc
            raise self.error(exc) from exc
        return conn

    def _add_missing_columns(self, conn: sqlite3.Connection) -> None:
        for table, column, declaration in self._columns:
            present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
            if column in present:
                continue
            try:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
            except sqlite3.OperationalError as exc:
                if "duplicate column" not in str(exc):  # another process added it first
                    raise

    def _transaction(self, work: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        """Run `work` in one transaction on this thread; sqlite trouble becomes StoreError."""
        if self._closed:
            raise self.error("backend is closed")
        if self._conn is None:
            self._conn = self._connect()
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                result = work(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result
        except sqlite3.Error as exc:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            if is_busy(exc):
                raise Busy(str(exc)) from exc
            # Anything but "busy" may mean a broken handle: reopen on the next call.
            self._drop_connection()
            raise self.error(exc) from exc

    def _interrupt_running(self) -> None:
        conn = self._conn
        if conn is not None:
            conn.interrupt()

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:
                pass

    def _close_now(self) -> None:
        self._closed = True
        self._drop_connection()
