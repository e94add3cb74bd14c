"""The sqlite lock's lease operations: one row per lock name in
``hedgeplug_lease``, never deleted.

``token`` is the fencing token; every successful acquire adds one to it, so
it strictly increases across holders for the life of the file. A released
lease keeps its row and token with an empty holder.

Expiry is judged by the host's monotonic clock, read inside the write
transaction: on one host every process sees the same monotonic clock, and it
never jumps with NTP or a manual clock change. After a reboot the clock starts
again near zero, so a stored expiry further away than its own ttl is treated as
expired (no lease can legitimately outlast its ttl).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator

import anyio

from hedgeplug.plugin import Lease, LogEntry, Row

from .log import LOG_SCHEMA, SqliteLog
from .rows import ROWS_SCHEMA, SqliteRows
from .store import SqliteStore, is_busy

WATCH_INTERVAL = 0.1  # seconds between watch polls: cheap, and well under a second to fail over

LEASE_SCHEMA = """
CREATE TABLE IF NOT EXISTS hedgeplug_lease (
    name    TEXT PRIMARY KEY,
    holder  TEXT NOT NULL,
    address TEXT NOT NULL,
    token   INTEGER NOT NULL,
    ttl     REAL NOT NULL,
    expires REAL NOT NULL,
    fingerprint TEXT NOT NULL DEFAULT ''
);
"""
# Files made before lease fingerprints gain the column on first open.
LEASE_COLUMNS = (("hedgeplug_lease", "fingerprint", "TEXT NOT NULL DEFAULT ''"),)

# A row is live when it has a holder, has not expired, and its expiry is not
# further away than its ttl (that would mean the clock restarted: a reboot).
_LIVE = "holder <> '' AND expires > :now AND expires - :now <= ttl"

_ACQUIRE = f"""
INSERT INTO hedgeplug_lease (name, holder, address, token, ttl, expires, fingerprint)
VALUES (:name, :holder, :address, 1, :ttl, :now + :ttl, :fingerprint)
ON CONFLICT (name) DO UPDATE SET
    holder = excluded.holder, address = excluded.address, token = token + 1,
    ttl = excluded.ttl, expires = excluded.expires, fingerprint = excluded.fingerprint
WHERE NOT ({_LIVE}) OR holder = excluded.holder
RETURNING holder, address, token, ttl, expires, fingerprint
"""

_RENEW = f"""
UPDATE hedgeplug_lease SET ttl = :ttl, expires = :now + :ttl, fingerprint = :fingerprint
WHERE name = :name AND holder = :holder AND token = :token AND {_LIVE}
RETURNING holder, address, token, ttl, expires, fingerprint
"""

_RELEASE = """
UPDATE hedgeplug_lease SET holder = '', address = '', expires = 0
WHERE name = :name AND holder = :holder AND token = :token
"""

_CURRENT = (
    "SELECT holder, address, token, ttl, expires, fingerprint FROM hedgeplug_lease WHERE name = :name"
)

_LeaseRow = tuple[str, str, int, float, float, str]


def _store_clock() -> float:
    return time.monotonic()  # clock-ok: store clock


def _is_live(row: _LeaseRow, now: float) -> bool:
    holder, _address, _token, ttl, expires, _fingerprint = row
    return holder != "" and expires > now and expires - now <= ttl


class SqliteLock:
    """LockBackend + Watchable + Fingerprinted + RowStorage + FencedLog + LocalOnly over one SQLite file."""

    def __init__(self, path: str, lock_name: str, *, busy_timeout: float = 1.0) -> None:
        self.path = path
        self.lock_name = lock_name
        self.busy_timeout = busy_timeout
        self._store = SqliteStore(
            path, schema=LEASE_SCHEMA + ROWS_SCHEMA + LOG_SCHEMA, busy_timeout=busy_timeout,
            columns=LEASE_COLUMNS,
        )
        self._rows = SqliteRows(self._store, lock_name)
        self._log = SqliteLog(self._store, lock_name)

    def _lease(self, row: _LeaseRow, now: float) -> Lease:
        holder, address, token, ttl, expires, fingerprint = row
        return Lease(
            lock=self.lock_name,
            holder=holder,
            address=address,
            token=int(token),
            ttl=float(ttl),
            remaining=max(0.0, float(expires) - now),
            fingerprint=fingerprint,
        )

    # ------------------------------------------------------------ LockBackend

    async def acquire(
        self, holder: str, address: str, ttl: float, *, fingerprint: str = ""
    ) -> Lease | None:
        def work(conn: sqlite3.Connection) -> Lease | None:
            now = _store_clock()
            args = {
                "name": self.lock_name, "holder": holder, "address": address, "ttl": ttl,
                "now": now, "fingerprint": fingerprint,
            }
            row = conn.execute(_ACQUIRE, args).fetchone()
            return None if row is None else self._lease(row, now)

        return await self._store.call(work, write=True)

    async def renew(self, lease: Lease, ttl: float) -> Lease | None:
        def work(conn: sqlite3.Connection) -> Lease | None:
            now = _store_clock()
            args = {
                "name": self.lock_name, "holder": lease.holder, "token": lease.token,
                "ttl": ttl, "now": now, "fingerprint": lease.fingerprint,
            }
            row = conn.execute(_RENEW, args).fetchone()
            return None if row is None else self._lease(row, now)

        return await self._store.call(work, write=True)

    async def release(self, lease: Lease) -> None:
        def work(conn: sqlite3.Connection) -> None:
            args = {"name": self.lock_name, "holder": lease.holder, "token": lease.token}
            conn.execute(_RELEASE, args)

        await self._store.call(work, write=True)

    async def current(self) -> Lease | None:
        def work(conn: sqlite3.Connection) -> Lease | None:
            now = _store_clock()
            row = conn.execute(_CURRENT, {"name": self.lock_name}).fetchone()
            if row is None or not _is_live(row, now):
                return None
            return self._lease(row, now)

        return await self._store.call(work, write=False)

    async def last_fingerprint(self) -> str:
        def work(conn: sqlite3.Connection) -> str:
            row = conn.execute(_CURRENT, {"name": self.lock_name}).fetchone()
            return "" if row is None else str(row[5])

        return await self._store.call(work, write=False)

    async def aclose(self) -> None:
        await self._log.aclose()
        await self._store.aclose()

    # ------------------------------------------------------------ Watchable

    async def watch(self) -> AsyncIterator[None]:
        """Poll the lease row every 100 ms on a connection of its own; yield when the
        holder or token changes, or when the lease goes from live to free (release or expiry)."""
        conn = await anyio.to_thread.run_sync(self._store.open_for_reading)
        limiter = anyio.CapacityLimiter(1)
        unknown = ("", -1, False)  # before the first successful read

        def read(previous: tuple[str, int, bool] | None) -> tuple[str, int, bool] | None:
            now = _store_clock()
            try:
                row = conn.execute(_CURRENT, {"name": self.lock_name}).fetchone()
            except sqlite3.OperationalError as exc:
                if is_busy(exc):
                    return previous  # a checkpoint or recovery in progress: ask again next poll
                if "no such table" in str(exc):
                    return None  # nobody has used the file yet
                raise self._store.error(exc) from exc
            except sqlite3.Error as exc:
                raise self._store.error(exc) from exc
            if row is None:
                return None
            return (row[0], int(row[2]), _is_live(row, now))

        try:
            seen = await anyio.to_thread.run_sync(read, unknown, limiter=limiter)
            while True:
                await anyio.sleep(WATCH_INTERVAL)
                state = await anyio.to_thread.run_sync(read, seen, limiter=limiter)
                if state != seen:
                    seen = state
                    yield
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(conn.close, limiter=limiter)

    # ------------------------------------------------------------ RowStorage

    async def row_get(self, key: str) -> Row | None:
        return await self._rows.get(key)

    async def row_put(self, key: str, value: bytes, *, expect: int | None = None) -> Row | None:
        return await self._rows.put(key, value, expect=expect)

    async def row_delete(self, key: str, *, expect: int | None = None) -> bool:
        return await self._rows.delete(key, expect=expect)

    async def row_scan(self, prefix: str) -> list[Row]:
        return await self._rows.scan(prefix)

    # ------------------------------------------------------------ FencedLog (log.py)

    async def log_append(self, token: int, key: str, value: bytes) -> LogEntry | None:
        return await self._log.append(token, key, value)

    async def log_read(
        self, key: str, *, limit: int | None = None, oldest_first: bool = False
    ) -> list[LogEntry]:
        return await self._log.read(key, limit, oldest_first)

    async def log_keys(self, prefix: str) -> list[str]:
        return await self._log.keys(prefix)

    async def log_since(self, revision: int, prefix: str, limit: int) -> list[LogEntry]:
        return await self._log.since(revision, prefix, limit)

    async def log_last_revision(self) -> int:
        return await self._log.last_revision()

    async def log_trim(self, token: int, key: str, keep: int) -> int | None:
        return await self._log.trim(token, key, keep)

    # ------------------------------------------------------------ LocalOnly

    def local_only(self) -> str:
        """The database is a file on this host: nodes elsewhere cannot share it."""
        return f"SQLite file {self.path}"
