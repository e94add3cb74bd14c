"""The fenced key/value log of the sqlite lock: ``hedgeplug_log``.

An append is one ``BEGIN IMMEDIATE`` transaction: it holds SQLite's write
lock, so the check of the lease row (token, holder, expiry by the host's
monotonic clock, as lock.py judges it) and the insert are atomic against
every other process on the file. ``revision`` is the table's AUTOINCREMENT
rowid: strictly increasing, never reused, in commit order (writers are
serialized). ``committed_at`` is the host's wall clock as SQLite reads it
(``julianday('now')``) inside the transaction. The table is created beside
the others on first use (CREATE TABLE IF NOT EXISTS), so an older database
file gains it without a migration step.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import TypeVar

import anyio

from hedgeplug.plugin import LogEntry

from .store import BUSY_RETRY, Busy, SqliteStore, is_busy

T = TypeVar("T")

LOG_SCHEMA = """
CREATE TABLE IF NOT EXISTS hedgeplug_log (
    revision     INTEGER PRIMARY KEY AUTOINCREMENT,
    lock         TEXT NOT NULL,
    key          TEXT NOT NULL,
    version      INTEGER NOT NULL,
    token        INTEGER NOT NULL,
    value        BLOB NOT NULL,
    committed_at REAL NOT NULL,
    UNIQUE (lock, key, version)
);
"""

_COLUMNS = "key, value, version, revision, token, committed_at"

# The token is current when the lease row carries it, has a holder, and is
# live by the same rule lock.py applies (monotonic clock, reboot-safe).
_CURRENT = """SELECT 1 FROM hedgeplug_lease WHERE name = :lock AND token = :token
              AND holder <> '' AND expires > :now AND expires - :now <= ttl"""

_APPEND = f"""
INSERT INTO hedgeplug_log (lock, key, version, token, value, committed_at)
SELECT :lock, :key,
       coalesce((SELECT max(version) FROM hedgeplug_log WHERE lock = :lock AND key = :key), 0) + 1,
       :token, :value, (julianday('now') - 2440587.5) * 86400.0
WHERE EXISTS ({_CURRENT})
RETURNING {_COLUMNS}
"""


_READ = {
    order: f"SELECT {_COLUMNS} FROM hedgeplug_log WHERE lock = ? AND key = ? ORDER BY version {order} LIMIT ?"
    for order in ("ASC", "DESC")
}
# Reads of at most this many entries run on the event loop: an indexed
# lookup of a few rows takes microseconds, far less than a worker thread's
# round trip (tens to hundreds of µs), and the connection they use never
# waits for a lock (busy_timeout 0: SQLITE_BUSY sends the read to a thread).
INLINE_ROWS = 16
YIELD_EVERY = 16


def _entry(row: tuple[object, ...]) -> LogEntry:
    key, value, version, revision, token, at = row
    return LogEntry(str(key), bytes(value), int(version), int(revision), int(token), float(at))  # type: ignore[arg-type,call-overload]


def _monotonic() -> float:
    return time.monotonic()  # clock-ok: store clock (the lease's expiry clock, see lock.py)


class SqliteLog:
    """FencedLog of one lock name in one store.

    Writes use the store's transactions. Reads are single SELECT statements
    (each is its own consistent snapshot in WAL mode, so no BEGIN/COMMIT
    round) on a reader connection of their own, so a read never waits behind
    the lease's writes in this process; they are not interrupted on
    cancellation (an indexed read takes microseconds, and waits at most the
    store's short busy wait). The latest few entries of a key (`get`) are
    read on the event loop itself, on a third connection that never waits
    for a lock (INLINE_ROWS); if it would, the read goes to the thread.
    """

    def __init__(self, store: SqliteStore, lock_name: str) -> None:
        self._store = store
        self.lock_name = lock_name
        self._reader: sqlite3.Connection | None = None
        self._read_limiter = anyio.CapacityLimiter(1)
        self._schema_ready = False
        self._closed = False
        self._inline: sqlite3.Connection | None = None  # used on the event loop only
        self._inline_opening = False
        self._inline_reads = 0

    async def _read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if not self._schema_ready:
            await self._store.call(lambda conn: None, write=False)  # creates the tables
            self._schema_ready = True
        give_up_at = anyio.current_time() + self._store.busy_timeout
        while True:
            try:
                return await anyio.to_thread.run_sync(self._read_now, work, limiter=self._read_limiter)
            except Busy as exc:
                if anyio.current_time() >= give_up_at:
                    raise self._store.error(f"{exc} (still locked after busy_timeout)") from None
            await anyio.sleep(BUSY_RETRY)

    def _read_now(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise self._store.error("backend is closed")
        if self._reader is None:
            self._reader = self._store.open_for_reading()
        try:
            return work(self._reader)
        except sqlite3.Error as exc:
            if is_busy(exc):
                raise Busy(str(exc)) from exc
            reader, self._reader = self._reader, None
            reader.close()
            raise self._store.error(exc) from exc

    def _open_inline(self) -> sqlite3.Connection:
        conn = self._store.open_for_reading()
        conn.execute("PRAGMA busy_timeout = 0")  # never wait on the event loop
        return conn

    async def _start_inline(self) -> None:
        self._inline_opening = True
        try:
            conn = await anyio.to_thread.run_sync(self._open_inline)
        finally:
            self._inline_opening = False
        self._inline_reads = 0
        if self._closed:
            conn.close()
        else:
            self._inline = conn

    def _read_inline(self, sql: str, args: tuple[object, ...]) -> list[tuple[object, ...]] | None:
        """The rows, read on the event loop; None when SQLite would have to wait."""
        conn = self._inline
        if conn is None or self._closed:
            return None
        try:
            return conn.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            if not is_busy(exc):
                self._inline = None
                conn.close()
            return None  # the thread path retries, and reports what stays wrong

    def _close_now(self) -> None:
        self._closed = True
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    async def aclose(self) -> None:
        # The event loop's connection is closed on the event loop, where it is used.
        self._closed = True
        inline, self._inline = self._inline, None
        if inline is not None:
            inline.close()
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._close_now, limiter=self._read_limiter)

    async def append(self, token: int, key: str, value: bytes) -> LogEntry | None:
        args = {"lock": self.lock_name, "key": key, "token": token, "value": bytes(value)}

        def work(conn: sqlite3.Connection) -> LogEntry | None:
            row = conn.execute(_APPEND, {**args, "now": _monotonic()}).fetchone()
            return None if row is None else _entry(row)

        return await self._store.call(work, write=True)

    async def read(self, key: str, limit: int | None, oldest_first: bool) -> list[LogEntry]:
        sql = _READ["ASC" if oldest_first else "DESC"]
        args = (self.lock_name, key, -1 if limit is None else limit)
        if limit is not None and limit <= INLINE_ROWS:
            # A cancellation point like a thread hop; the task lets others run
            # at every YIELD_EVERY-th read, so a loop of reads cannot starve them.
            self._inline_reads += 1
            if self._inline_reads % YIELD_EVERY:
                await anyio.lowlevel.checkpoint_if_cancelled()
            else:
                await anyio.lowlevel.checkpoint()
            rows = self._read_inline(sql, args)
            if rows is not None:
                return [_entry(r) for r in rows]
            if self._inline is None and self._schema_ready and not self._inline_opening:
                await self._start_inline()

        def work(conn: sqlite3.Connection) -> list[LogEntry]:
            return [_entry(r) for r in conn.execute(sql, args).fetchall()]

        return await self._read(work)

    async def keys(self, prefix: str) -> list[str]:
        def work(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT DISTINCT key FROM hedgeplug_log WHERE lock = ? AND substr(key, 1, ?) = ?"
                " ORDER BY key",
                (self.lock_name, len(prefix), prefix),
            ).fetchall()
            return [str(r[0]) for r in rows]

        return await self._read(work)

    async def since(self, revision: int, prefix: str, limit: int) -> list[LogEntry]:
        def work(conn: sqlite3.Connection) -> list[LogEntry]:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM hedgeplug_log WHERE lock = ? AND revision > ?"
                " AND substr(key, 1, ?) = ? ORDER BY revision LIMIT ?",
                (self.lock_name, revision, len(prefix), prefix, limit),
            ).fetchall()
            return [_entry(r) for r in rows]

        return await self._read(work)

    async def last_revision(self) -> int:
        def work(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT max(revision) FROM hedgeplug_log WHERE lock = ?",
                               (self.lock_name,)).fetchone()
            return int(row[0] or 0)

        return await self._read(work)

    async def trim(self, token: int, key: str, keep: int) -> int | None:
        if keep < 1:
            raise ValueError("keep must be at least 1")

        def work(conn: sqlite3.Connection) -> int | None:
            args = {"lock": self.lock_name, "token": token, "now": _monotonic()}
            if conn.execute(_CURRENT, args).fetchone() is None:
                return None
            cur = conn.execute(
                "DELETE FROM hedgeplug_log WHERE lock = ? AND key = ? AND version <= "
                "(SELECT max(version) FROM hedgeplug_log WHERE lock = ? AND key = ?) - ?",
                (self.lock_name, key, self.lock_name, key, keep),
            )
            return cur.rowcount

        return await self._store.call(work, write=True)
