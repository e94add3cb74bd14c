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

import math
import select
import sqlite3
import time
from collections.abc import AsyncIterator

import anyio

from hedgeplug.plugin import Lease, LogEntry, Row

from .log import LOG_SCHEMA, SqliteLog
from .notify import Changes, FileChanges, touch, watch_changes
from .rows import ROWS_SCHEMA, SqliteRows
from .store import SqliteStore, is_busy

# Without inotify: seconds between stat polls of the files (on the event
# loop, no query): cheap, and well under a second to fail over.
WATCH_INTERVAL = 0.1
# With inotify: the longest the watch sleeps without a touch of the marker
# or an expiry before it reads the row anyway (a guard, not a poll).
WATCH_IDLE_READ = 30.0

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
_WatchState = tuple[str, int, bool] | None
_UNKNOWN: _WatchState = ("", -1, False)  # before the first successful read


def _store_clock() -> float:
    return time.monotonic()  # clock-ok: store clock


def _is_live(row: _LeaseRow, now: float) -> bool:
    holder, _address, _token, ttl, expires, _fingerprint = row
    return holder != "" and expires > now and expires - now <= ttl


class _Feed:
    """Counts the touches of the marker (acquires, releases) a watch has
    seen, so `current()` can tell whether a read still holds: it does while
    the count is the same and no touch waits to be counted."""

    def __init__(self, changes: Changes) -> None:
        self._poll = select.poll()  # not select(): descriptors past 1023 are fine
        self._poll.register(changes.fileno(), select.POLLIN)
        self.generation = 0

    def bump(self) -> None:
        self.generation += 1

    def _waiting(self) -> bool:
        return bool(self._poll.poll(0))

    def unchanged_since(self, generation: int) -> bool:
        return generation == self.generation and not self._waiting()

    def settled_generation(self) -> int | None:
        """The count now, or None while a touch waits to be counted (a read now may be stale)."""
        return None if self._waiting() else self.generation


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
        self._feed: _Feed | None = None  # the running watch's inotify feed, if any
        # (feed generation, row, store clock when read), while a watch feeds us
        self._cached: tuple[int, _LeaseRow | None, float] | None = None

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

        lease = await self._store.call(work, write=True)
        if lease is not None:
            touch(self.path)  # after the commit, so a woken watcher reads the new holder
        return lease

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
        touch(self.path)

    async def current(self) -> Lease | None:
        feed = self._feed
        cached = self._cached
        if feed is not None and cached is not None and feed.unchanged_since(cached[0]):
            # No acquire or release since that read (they touch the marker). A
            # free lease stays free; a live one stays with its holder at least
            # until the expiry read then (renewals only push it later, so its
            # `remaining` is a lower bound). Past that, read again.
            now = _store_clock()
            row = cached[1]
            if row is None or not _is_live(row, cached[2]):
                return None
            if _is_live(row, now):
                return self._lease(row, now)
        generation = feed.settled_generation() if feed is not None else None

        def work(conn: sqlite3.Connection) -> tuple[Lease | None, _LeaseRow | None, float]:
            now = _store_clock()
            row = conn.execute(_CURRENT, {"name": self.lock_name}).fetchone()
            if row is None or not _is_live(row, now):
                return None, row, now
            return self._lease(row, now), row, now

        lease, row, read_at = await self._store.call(work, write=False)
        newest = self._cached
        if generation is not None and (newest is None or newest[0] <= generation):
            self._cached = (generation, row, read_at)  # never over a newer read by the watch
        return lease

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
        """Yield when the holder or token changes, or when the lease goes from
        live to free (release or expiry).

        Between changes it sleeps: an acquire or release (they touch a marker
        file, see `notify`; inotify wakes us) or the expiry of the lease as
        last read wakes it to read the row once, on a connection of its own
        in a worker thread. Renewals wake nobody. Without inotify it stats
        the marker on the event loop instead (every WATCH_INTERVAL after a
        change, slowing to twice a second while none comes). While it
        runs with inotify, `current()` answers from the last read when it
        still holds."""
        conn = await anyio.to_thread.run_sync(self._store.open_for_reading)
        limiter = anyio.CapacityLimiter(1)
        changes = watch_changes(self.path, WATCH_INTERVAL)
        feed = _Feed(changes) if isinstance(changes, FileChanges) else None

        def read(previous: _WatchState) -> tuple[_WatchState, _LeaseRow | None, float, float]:
            """The row's (holder, token, live), the row, seconds until a live
            lease expires, and the store clock when read."""
            now = _store_clock()
            try:
                row = conn.execute(_CURRENT, {"name": self.lock_name}).fetchone()
            except sqlite3.OperationalError as exc:
                if is_busy(exc):
                    return previous, None, WATCH_INTERVAL, now  # a checkpoint or recovery: ask again soon
                if "no such table" in str(exc):
                    return None, None, math.inf, now  # nobody has used the file yet
                raise self._store.error(exc) from exc
            except sqlite3.Error as exc:
                raise self._store.error(exc) from exc
            if row is None:
                return None, None, math.inf, now
            live = _is_live(row, now)
            expires_in = row[4] - now if live else math.inf
            return (row[0], int(row[2]), live), row, expires_in, now

        async def read_now(previous: _WatchState) -> tuple[_WatchState, float]:
            generation = feed.settled_generation() if feed is not None else None
            state, row, expires_in, read_at = await anyio.to_thread.run_sync(
                read, previous, limiter=limiter
            )
            if generation is not None and state is not previous and self._feed is feed:
                self._cached = (generation, row, read_at)
            return state, expires_in

        try:
            if feed is not None and self._feed is None:
                self._feed = feed
            changes.pending()  # whatever happened before is in the first read
            seen, expires_in = await read_now(_UNKNOWN)
            while True:
                # A small margin past the expiry, so the read finds it expired.
                touched = await changes.wait(min(expires_in + 0.01, WATCH_IDLE_READ))
                if feed is not None:
                    if not touched:
                        later = self._renewed_since(feed, seen)
                        if later is not None:
                            expires_in = later  # current() read the renewal already
                            continue
                    feed.bump()
                state, expires_in = await read_now(seen)
                if state != seen:
                    seen = state
                    yield
        finally:
            if self._feed is feed:
                self._feed = None
                self._cached = None
            changes.close()
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(conn.close, limiter=limiter)

    def _renewed_since(self, feed: _Feed, seen: _WatchState) -> float | None:
        """Seconds until expiry of the lease `seen` by the watch, when a later
        read by `current()` (still valid) shows it renewed; else None."""
        cached = self._cached
        if self._feed is not feed or cached is None or not feed.unchanged_since(cached[0]):
            return None
        row = cached[1]
        now = _store_clock()
        if row is None or seen is None or not _is_live(row, now):
            return None
        if (row[0], int(row[2]), True) != seen:
            return None
        return row[4] - now

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
