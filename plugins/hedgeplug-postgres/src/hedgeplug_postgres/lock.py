"""PostgresLock: the lock backend over one PostgreSQL table.

Each backend keeps one connection (autocommit; every operation is one
statement) used only from a worker thread behind its own CapacityLimiter(1).
A connection that breaks is dropped; the failed call raises StoreError and the
next call connects again. The tables are created on first use unless
``create_table = false``, in which case a missing table is a StoreError that
shows the DDL to run.
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import anyio
import psycopg
import psycopg.conninfo
import psycopg.errors
from hedgeplug.plugin import Lease, Row, StoreError, run_in_worker

from .log import PostgresLogMixin
from .log_schema import LogStatements
from .options import PostgresOptions
from .schema import Statements

T = TypeVar("T")

# A constant advisory-lock key so that many nodes starting at once create the
# tables one at a time (concurrent CREATE TABLE IF NOT EXISTS can collide).
_DDL_LOCK_KEY = 0x6865646765  # "hedge"
# The longest a watcher sleeps without a notification or an expiry before it
# reads the row anyway (a guard against a connection lost while idle, not a poll).
WATCH_GUARD = 30.0
# After waiting on a connection closed behind the watcher's back, look again after this.
WATCH_RETRY = 0.05


def describe_dsn(dsn: str) -> str:
    """host:port/dbname of a DSN for messages, never its password; raises ValueError if malformed."""
    try:
        parts = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error as exc:
        raise ValueError(f"cannot parse the connection string: {exc}") from None
    host = parts.get("host") or parts.get("hostaddr") or "$PGHOST"
    port = parts.get("port") or "5432"
    db = parts.get("dbname") or "$PGDATABASE"
    return f"{host}:{port}/{db}"


CANCEL_TIMEOUT = 1.0  # seconds a cancel request may take before the socket is broken instead


class PostgresLock(PostgresLogMixin):
    """LockBackend + Fingerprinted + RowStorage + FencedLog (log.py) for one lock name
    (see WatchingPostgresLock)."""

    def __init__(self, options: PostgresOptions, lock_name: str) -> None:
        self.options = options
        self.lock_name = lock_name
        self.sql = Statements(options.schema, options.table)
        self.log_sql = LogStatements(options.schema, options.table)
        self.where = describe_dsn(options.dsn)
        self._limiter = anyio.CapacityLimiter(1)
        self._conn: psycopg.Connection[Any] | None = None
        self._tables_ready = False
        self._closed = False
        # Set when a cancel request was sent: such a request can reach the server
        # late and hit the next statement, so that connection is not used again.
        self._cancel_sent = False

    # ------------------------------------------------------------ plumbing

    def _error(self, what: str) -> StoreError:
        return StoreError(f"postgres lock store {self.where}: {what}")

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(
                self.options.dsn,
                autocommit=True,
                connect_timeout=max(1, math.ceil(self.options.connect_timeout)),
                application_name="hedgeplug",
                # A silent network: unacknowledged data fails the socket after
                # this long, and idle connections are probed.
                tcp_user_timeout=int(
                    (self.options.statement_timeout + self.options.connect_timeout) * 1000
                ),
                keepalives=1,
                keepalives_idle=10,
                keepalives_interval=3,
                keepalives_count=3,
            )
        except psycopg.Error as exc:
            raise self._error(f"cannot connect: {_first_line(exc)}") from None
        try:
            timeout_ms = max(1, int(self.options.statement_timeout * 1000))
            conn.execute("SELECT set_config('statement_timeout', %s, false)", (f"{timeout_ms}ms",))
        except psycopg.Error as exc:
            conn.close()
            raise self._error(f"cannot set up the connection: {_first_line(exc)}") from None
        return conn

    def _missing_table(self) -> StoreError:
        return self._error(
            f"table {self.sql.lease_table} (or {self.sql.rows_table}, {self.log_sql.log_table}) "
            f"does not exist and create_table is false; create them with:\n{self.sql.ddl}\n"
            f"{self.log_sql.ddl}"
        )

    def _prepare_tables(self, conn: psycopg.Connection[Any]) -> None:
        if self.options.create_table:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK_KEY,))
                for statement in (self.sql.ddl + "\n" + self.log_sql.ddl).split(";\n"):
                    conn.execute(statement.rstrip(";"))
            return
        found = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL AND to_regclass(%s) IS NOT NULL",
            (self.sql.lease_table, self.sql.rows_table),
        ).fetchone()
        if not found or not found[0]:
            raise self._missing_table()
        column = conn.execute(self.sql.has_fingerprint, (self.sql.lease_table,)).fetchone()
        if not column or not column[0]:
            raise self._error(
                f"table {self.sql.lease_table} predates lease fingerprints and create_table is"
                f" false; add the column with:\n{self.sql.add_fingerprint};"
            )

    def _in_thread(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        if self._closed:
            raise self._error("backend is closed")
        if self._cancel_sent:
            self._cancel_sent = False
            self._drop_connection()
        if self._conn is None or self._conn.closed:
            self._conn = self._connect()
        conn = self._conn
        try:
            if not self._tables_ready:
                self._prepare_tables(conn)
                self._tables_ready = True
            return work(conn)
        except psycopg.errors.UndefinedTable:
            self._tables_ready = False
            if not self.options.create_table:
                raise self._missing_table() from None
            raise self._error(f"table {self.sql.lease_table} disappeared; it is created again on the next call") from None
        except psycopg.errors.InsufficientPrivilege as exc:
            raise self._error(
                f"permission denied ({_first_line(exc)}); the role needs SELECT, INSERT, UPDATE on "
                f"{self.sql.lease_table}, SELECT, INSERT, UPDATE, DELETE on {self.sql.rows_table} "
                f"and {self.log_sql.log_table}, "
                "and CREATE on the schema unless create_table is false"
            ) from None
        except psycopg.errors.QueryCanceled as exc:
            raise self._error(f"statement cancelled: {_first_line(exc)}") from None
        except psycopg.Error as exc:
            if conn.broken or conn.closed:
                self._drop_connection()  # the next call connects again
                raise self._error(f"connection lost: {_first_line(exc)}") from None
            raise self._error(_first_line(exc)) from None

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:
                pass

    def _cancel_running(self) -> None:
        conn = self._conn
        if conn is None or conn.closed:
            return
        self._cancel_sent = True
        try:
            conn.cancel_safe(timeout=CANCEL_TIMEOUT)
            return
        except Exception:
            pass
        # The cancel request could not get through (the server is silently
        # unreachable): break the connection's socket, so the worker's blocked
        # read returns now instead of at TCP's next retransmission.
        try:
            with socket.socket(fileno=os.dup(conn.pgconn.socket)) as sock:
                sock.shutdown(socket.SHUT_RDWR)
        except (OSError, psycopg.Error):
            pass

    async def _call(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        return await run_in_worker(
            lambda: self._in_thread(work), limiter=self._limiter, interrupt=self._cancel_running,
            interrupt_blocks=True,
        )

    def _lease(self, row: tuple[Any, ...]) -> Lease:
        holder, address, token, ttl, remaining, fingerprint = row[:6]
        return Lease(
            lock=self.lock_name, holder=holder, address=address, token=int(token),
            ttl=float(ttl), remaining=max(0.0, float(remaining)), fingerprint=fingerprint,
        )

    @property
    def server_pid(self) -> int | None:
        """The server process of this backend's connection (tests use it to sever it)."""
        conn = self._conn
        return None if conn is None or conn.closed else conn.info.backend_pid

    # ------------------------------------------------------------ LockBackend

    async def acquire(
        self, holder: str, address: str, ttl: float, *, fingerprint: str = ""
    ) -> Lease | None:
        args = {
            "name": self.lock_name, "holder": holder, "address": address,
            "ttl": float(ttl), "channel": self.sql.channel, "fingerprint": fingerprint,
        }

        def work(conn: psycopg.Connection[Any]) -> Lease | None:
            row = conn.execute(self.sql.acquire, args).fetchone()
            return None if row is None else self._lease(row)

        return await self._call(work)

    async def renew(self, lease: Lease, ttl: float) -> Lease | None:
        args = {
            "name": self.lock_name, "holder": lease.holder, "token": lease.token, "ttl": float(ttl),
            "fingerprint": lease.fingerprint,
        }

        def work(conn: psycopg.Connection[Any]) -> Lease | None:
            row = conn.execute(self.sql.renew, args).fetchone()
            return None if row is None else self._lease(row)

        return await self._call(work)

    async def release(self, lease: Lease) -> None:
        args = {
            "name": self.lock_name, "holder": lease.holder, "token": lease.token,
            "channel": self.sql.channel,
        }

        def work(conn: psycopg.Connection[Any]) -> None:
            conn.execute(self.sql.release, args).fetchall()

        await self._call(work)

    async def current(self) -> Lease | None:
        def work(conn: psycopg.Connection[Any]) -> Lease | None:
            row = conn.execute(self.sql.current, {"name": self.lock_name}).fetchone()
            return None if row is None else self._lease(row)

        return await self._call(work)

    async def last_fingerprint(self) -> str:
        def work(conn: psycopg.Connection[Any]) -> str:
            row = conn.execute(self.sql.last_fingerprint, {"name": self.lock_name}).fetchone()
            return "" if row is None else str(row[0])

        return await self._call(work)

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._close_now, limiter=self._limiter)

    def _close_now(self) -> None:
        self._closed = True
        self._drop_connection()
        self._close_reader()  # (the log's reader connection, log.py)

    # ------------------------------------------------------------ RowStorage

    async def row_get(self, key: str) -> Row | None:
        def work(conn: psycopg.Connection[Any]) -> Row | None:
            row = conn.execute(self.sql.row_get, {"lock": self.lock_name, "key": key}).fetchone()
            return None if row is None else Row(row[0], bytes(row[1]), int(row[2]))

        return await self._call(work)

    async def row_put(self, key: str, value: bytes, *, expect: int | None = None) -> Row | None:
        args = {"lock": self.lock_name, "key": key, "value": bytes(value), "expect": expect}
        if expect is None:
            statement = self.sql.row_put_any
        elif expect == 0:
            statement = self.sql.row_create
        else:
            statement = self.sql.row_compare_and_set

        def work(conn: psycopg.Connection[Any]) -> Row | None:
            row = conn.execute(statement, args).fetchone()
            return None if row is None else Row(key, bytes(value), int(row[0]))

        return await self._call(work)

    async def row_delete(self, key: str, *, expect: int | None = None) -> bool:
        args = {"lock": self.lock_name, "key": key, "expect": expect}
        statement = self.sql.row_delete if expect is None else self.sql.row_delete_expect

        def work(conn: psycopg.Connection[Any]) -> bool:
            return conn.execute(statement, args).rowcount > 0

        return await self._call(work)

    async def row_scan(self, prefix: str) -> list[Row]:
        def work(conn: psycopg.Connection[Any]) -> list[Row]:
            rows = conn.execute(self.sql.row_scan, {"lock": self.lock_name, "prefix": prefix}).fetchall()
            return [Row(k, bytes(v), int(n)) for k, v, n in rows]

        return await self._call(work)


class WatchingPostgresLock(PostgresLock):
    """PostgresLock that is also Watchable: the default (``watch = true``).

    The one connection of the backend also LISTENs: a notification that
    arrives during a query is caught by psycopg's notify handler; one that
    arrives while the connection is idle is read on the event loop (libpq's
    non-blocking consume_input), never while a query runs in the worker
    thread. See README.md for how it behaves behind a transaction pooler."""

    def __init__(self, options: PostgresOptions, lock_name: str) -> None:
        super().__init__(options, lock_name)
        self._noticed = False  # a notification for our lock (or a new connection) since the last look
        self._poke: anyio.Event | None = None  # set to wake a waiting watcher
        self._watcher_waits_for_a_call = False

    def _connect(self) -> psycopg.Connection[Any]:
        conn = super()._connect()
        try:
            conn.execute(f"LISTEN {self.sql.channel}")
        except psycopg.Error as exc:
            conn.close()
            raise self._error(f"cannot LISTEN for lock changes: {_first_line(exc)}") from None
        conn.add_notify_handler(self._on_notify)
        # Whatever happened while we had no connection went unheard: read again.
        self._noticed = True
        return conn

    def _on_notify(self, notify: psycopg.Notify) -> None:
        """psycopg calls this in the worker thread, for notifications that came with a query."""
        if notify.payload == self.lock_name:
            self._noticed = True

    async def _call(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        try:
            return await super()._call(work)
        finally:
            if self._poke is not None and (self._noticed or self._watcher_waits_for_a_call):
                self._poke.set()

    def _take_idle_notices(self, conn: psycopg.Connection[Any]) -> bool:
        """Read what the idle connection received (on the event loop; no
        query runs). False when the connection is broken."""
        try:
            conn.pgconn.consume_input()
            while (notice := conn.pgconn.notifies()) is not None:
                if notice.extra.decode("utf-8", "replace") == self.lock_name:
                    self._noticed = True
        except psycopg.Error:
            return False
        return True

    async def _wait_for_notice(self, timeout: float) -> None:
        """Until a notification for our lock, a new connection, or `timeout`."""
        deadline = anyio.current_time() + timeout
        with anyio.move_on_at(deadline):
            while not self._noticed:
                conn = self._conn
                idle = self._limiter.borrowed_tokens == 0
                self._poke = anyio.Event()
                if idle and conn is not None and not conn.closed and self._take_idle_notices(conn):
                    if self._noticed:
                        break
                    await self._readable_or_poked(conn.fileno(), self._poke)
                else:
                    # A query is running (it hears notifications itself), or the
                    # connection is gone: the next call's end wakes us.
                    self._watcher_waits_for_a_call = True
                    try:
                        await self._poke.wait()
                    finally:
                        self._watcher_waits_for_a_call = False
        self._poke = None
        self._noticed = False

    @staticmethod
    async def _readable_or_poked(fd: int, poke: anyio.Event) -> None:
        async with anyio.create_task_group() as tg:

            async def readable() -> None:
                try:
                    await anyio.wait_readable(fd)
                except (OSError, ValueError, anyio.BusyResourceError, anyio.ClosedResourceError):
                    await anyio.sleep(WATCH_RETRY)  # closed behind our back: look again shortly
                tg.cancel_scope.cancel()

            tg.start_soon(readable)
            await poke.wait()
            tg.cancel_scope.cancel()

    async def watch(self) -> AsyncIterator[None]:
        """Yield when the holder or token changes (acquire and release notify)
        or when the known lease expires. Idle, it sends no queries."""

        def read_state(conn: psycopg.Connection[Any]) -> tuple[tuple[str, int, bool] | None, float]:
            try:
                row = conn.execute(self.sql.state, {"name": self.lock_name}).fetchone()
            except psycopg.errors.UndefinedTable:
                # Not created yet (the first node of a cluster is starting): the
                # notification of the first acquire will bring us back here.
                return None, math.inf
            if row is None:
                return None, math.inf
            holder, token, live, remaining = row
            return (holder, int(token), bool(live)), (float(remaining) if live else math.inf)

        seen, remaining = await self._call(read_state)
        self._noticed = False  # that read saw everything up to now
        expires_at = anyio.current_time() + remaining
        while True:
            await self._wait_for_notice(min(WATCH_GUARD, expires_at - anyio.current_time() + 0.01))
            state, remaining = await self._call(read_state)
            expires_at = anyio.current_time() + remaining
            if state != seen:
                seen = state
                yield


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
