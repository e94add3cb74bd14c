"""The embedded default lock store: one SQLite database file shared by the
processes of one host.

Layout (created on first use, WAL journal mode):

- ``hedgeplug_lease``: one row per lock name, never deleted. ``token`` is the
  fencing token; every successful acquire adds one to it, so it strictly
  increases across holders for the life of the file. A released lease keeps
  its row and token with an empty holder.
- ``hedgeplug_rows``: the optional row storage, keyed by (lock name, key).

Expiry is judged by the host's monotonic clock, read inside the write
transaction: on one host every process sees the same monotonic clock, and it
never jumps with NTP or a manual clock change. After a reboot the clock starts
again near zero, so a stored expiry further away than its own ttl is treated as
expired (no lease can legitimately outlast its ttl).

Every write is one statement inside ``BEGIN IMMEDIATE``, so the check "free or
expired or ours" and the take happen under SQLite's write lock, atomically
across processes. Blocking calls run in a worker thread behind a
CapacityLimiter(1) per backend; a call cancelled by the caller interrupts the
running statement.

Default path: ``$XDG_RUNTIME_DIR/hedgeplug/<cluster>.sqlite`` when that
variable is set, else ``<temp dir>/hedgeplug-<uid>/<cluster>.sqlite``; the
directory is created with mode 0700. An explicit ``path`` must be in an
existing, writable directory.
"""

from __future__ import annotations

import os
import re
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import anyio
import attrs

from hedgeplug.plugin import (
    ConfigError,
    Duration,
    Lease,
    NodeContext,
    Row,
    StoreError,
    hookimpl,
    positive,
    run_in_worker,
)

T = TypeVar("T")

WATCH_INTERVAL = 0.1  # seconds between watch polls: cheap, and well under a second to fail over
# SQLite's own busy wait cannot be interrupted, so a worker thread waits at
# most this long for the write lock; the rest of busy_timeout is spent
# retrying from the event loop, where a cancelled caller stops at once.
_THREAD_BUSY_WAIT = 0.02
_BUSY_RETRY = 0.005


class _Busy(Exception):
    """Another connection holds the write lock (retried until busy_timeout)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS hedgeplug_lease (
    name    TEXT PRIMARY KEY,
    holder  TEXT NOT NULL,
    address TEXT NOT NULL,
    token   INTEGER NOT NULL,
    ttl     REAL NOT NULL,
    expires REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS hedgeplug_rows (
    lock    TEXT NOT NULL,
    key     TEXT NOT NULL,
    value   BLOB NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (lock, key)
);
"""

# A row is live when it has a holder, has not expired, and its expiry is not
# further away than its ttl (that would mean the clock restarted: a reboot).
_LIVE = "holder <> '' AND expires > :now AND expires - :now <= ttl"

_ACQUIRE = f"""
INSERT INTO hedgeplug_lease (name, holder, address, token, ttl, expires)
VALUES (:name, :holder, :address, 1, :ttl, :now + :ttl)
ON CONFLICT (name) DO UPDATE SET
    holder = excluded.holder, address = excluded.address, token = token + 1,
    ttl = excluded.ttl, expires = excluded.expires
WHERE NOT ({_LIVE}) OR holder = excluded.holder
RETURNING holder, address, token, ttl, expires
"""

_RENEW = f"""
UPDATE hedgeplug_lease SET ttl = :ttl, expires = :now + :ttl
WHERE name = :name AND holder = :holder AND token = :token AND {_LIVE}
RETURNING holder, address, token, ttl, expires
"""

_RELEASE = """
UPDATE hedgeplug_lease SET holder = '', address = '', expires = 0
WHERE name = :name AND holder = :holder AND token = :token
"""

_CURRENT = "SELECT holder, address, token, ttl, expires FROM hedgeplug_lease WHERE name = :name"


def _store_clock() -> float:
    return time.monotonic()  # clock-ok: store clock


def default_path(cluster: str) -> str:
    """The per-user default database file for `cluster` (see the module docstring)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", cluster) or "hedgeplug"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        directory = os.path.join(runtime, "hedgeplug")
    else:
        uid = os.getuid() if hasattr(os, "getuid") else os.getlogin()
        directory = os.path.join(tempfile.gettempdir(), f"hedgeplug-{uid}")
    return os.path.join(directory, f"{safe}.sqlite")


@attrs.frozen
class SqliteOptions:
    """[lock] keys for ``use = "sqlite"``."""

    path: str = attrs.field(
        default="", metadata={"help": "database file; default: per-user runtime dir, one per cluster"}
    )
    busy_timeout: Duration = attrs.field(
        default=Duration(1.0),
        validator=positive,
        metadata={"help": "how long one call waits for another process's write lock"},
    )


class SqliteLock:
    """LockBackend + Watchable + RowStorage over one SQLite file."""

    def __init__(self, path: str, lock_name: str, *, busy_timeout: float = 1.0) -> None:
        self.path = path
        self.lock_name = lock_name
        self.busy_timeout = busy_timeout
        self._limiter = anyio.CapacityLimiter(1)
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    # ------------------------------------------------------------ plumbing

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path, timeout=_THREAD_BUSY_WAIT, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite lock store {self.path}: cannot open: {exc}") from exc
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            # FULL: a committed token survives power loss, so a token is never handed out twice.
            conn.execute("PRAGMA synchronous = FULL")
            conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            conn.close()
            if _is_busy(exc):
                raise _Busy(str(exc)) from exc
            raise StoreError(f"sqlite lock store {self.path}: {exc}") from exc
        return conn

    def _open_for_reading(self) -> sqlite3.Connection:
        """A plain connection for the watcher: it only reads, so it needs no schema set-up."""
        try:
            return sqlite3.connect(
                self.path, timeout=_THREAD_BUSY_WAIT, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite lock store {self.path}: cannot open: {exc}") from exc

    def _transaction(self, work: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        """Run `work` in one transaction on this thread; sqlite trouble becomes StoreError."""
        if self._closed:
            raise StoreError(f"sqlite lock store {self.path}: backend is closed")
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
            if _is_busy(exc):
                raise _Busy(str(exc)) from exc
            # Anything but "busy" may mean a broken handle: reopen on the next call.
            self._drop_connection()
            raise StoreError(f"sqlite lock store {self.path}: {exc}") from exc

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:
                pass

    async def _call(self, work: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        """Run one transaction, retrying while another connection holds the write lock."""
        give_up_at = anyio.current_time() + self.busy_timeout
        while True:
            try:
                return await self._call_once(work, write=write)
            except _Busy as exc:
                if anyio.current_time() >= give_up_at:
                    raise StoreError(
                        f"sqlite lock store {self.path}: {exc} "
                        f"(still locked after busy_timeout {self.busy_timeout}s)"
                    ) from None
            await anyio.sleep(_BUSY_RETRY)

    async def _call_once(self, work: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        """Run one transaction in the worker thread; a cancelled caller interrupts it."""
        return await run_in_worker(
            lambda: self._transaction(work, write=write),
            limiter=self._limiter,
            interrupt=self._interrupt_running,
        )

    def _interrupt_running(self) -> None:
        conn = self._conn
        if conn is not None:
            conn.interrupt()

    def _lease(self, row: tuple[str, str, int, float, float], now: float) -> Lease:
        holder, address, token, ttl, expires = row
        return Lease(
            lock=self.lock_name,
            holder=holder,
            address=address,
            token=int(token),
            ttl=float(ttl),
            remaining=max(0.0, float(expires) - now),
        )

    # ------------------------------------------------------------ LockBackend

    async def acquire(self, holder: str, address: str, ttl: float) -> Lease | None:
        def work(conn: sqlite3.Connection) -> Lease | None:
            now = _store_clock()
            args = {"name": self.lock_name, "holder": holder, "address": address, "ttl": ttl, "now": now}
            row = conn.execute(_ACQUIRE, args).fetchone()
            return None if row is None else self._lease(row, now)

        return await self._call(work, write=True)

    async def renew(self, lease: Lease, ttl: float) -> Lease | None:
        def work(conn: sqlite3.Connection) -> Lease | None:
            now = _store_clock()
            args = {
                "name": self.lock_name, "holder": lease.holder, "token": lease.token,
                "ttl": ttl, "now": now,
            }
            row = conn.execute(_RENEW, args).fetchone()
            return None if row is None else self._lease(row, now)

        return await self._call(work, write=True)

    async def release(self, lease: Lease) -> None:
        def work(conn: sqlite3.Connection) -> None:
            args = {"name": self.lock_name, "holder": lease.holder, "token": lease.token}
            conn.execute(_RELEASE, args)

        await self._call(work, write=True)

    async def current(self) -> Lease | None:
        def work(conn: sqlite3.Connection) -> Lease | None:
            now = _store_clock()
            row = conn.execute(_CURRENT, {"name": self.lock_name}).fetchone()
            if row is None or not _is_live(row, now):
                return None
            return self._lease(row, now)

        return await self._call(work, write=False)

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._close_now, limiter=self._limiter)

    def _close_now(self) -> None:
        self._closed = True
        self._drop_connection()

    # ------------------------------------------------------------ Watchable

    async def watch(self) -> AsyncIterator[None]:
        """Poll the lease row every 100 ms on a connection of its own; yield when the
        holder or token changes, or when the lease goes from live to free (release or expiry)."""
        conn = await anyio.to_thread.run_sync(self._open_for_reading)
        limiter = anyio.CapacityLimiter(1)
        unknown = ("", -1, False)  # before the first successful read

        def read(previous: tuple[str, int, bool] | None) -> tuple[str, int, bool] | None:
            now = _store_clock()
            try:
                row = conn.execute(_CURRENT, {"name": self.lock_name}).fetchone()
            except sqlite3.OperationalError as exc:
                if _is_busy(exc):
                    return previous  # a checkpoint or recovery in progress: ask again next poll
                if "no such table" in str(exc):
                    return None  # nobody has used the file yet
                raise StoreError(f"sqlite lock store {self.path}: {exc}") from exc
            except sqlite3.Error as exc:
                raise StoreError(f"sqlite lock store {self.path}: {exc}") from exc
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
        def work(conn: sqlite3.Connection) -> Row | None:
            found = conn.execute(
                "SELECT key, value, version FROM hedgeplug_rows WHERE lock = ? AND key = ?",
                (self.lock_name, key),
            ).fetchone()
            return None if found is None else Row(found[0], bytes(found[1]), int(found[2]))

        return await self._call(work, write=False)

    async def row_put(self, key: str, value: bytes, *, expect: int | None = None) -> Row | None:
        def work(conn: sqlite3.Connection) -> Row | None:
            args = {"lock": self.lock_name, "key": key, "value": bytes(value), "expect": expect}
            if expect is None:
                sql = """INSERT INTO hedgeplug_rows (lock, key, value, version)
                         VALUES (:lock, :key, :value, 1)
                         ON CONFLICT (lock, key) DO UPDATE
                         SET value = excluded.value, version = version + 1
                         RETURNING version"""
            elif expect == 0:
                sql = """INSERT INTO hedgeplug_rows (lock, key, value, version)
                         VALUES (:lock, :key, :value, 1)
                         ON CONFLICT (lock, key) DO NOTHING RETURNING version"""
            else:
                sql = """UPDATE hedgeplug_rows SET value = :value, version = version + 1
                         WHERE lock = :lock AND key = :key AND version = :expect
                         RETURNING version"""
            found = conn.execute(sql, args).fetchone()
            return None if found is None else Row(key, bytes(value), int(found[0]))

        return await self._call(work, write=True)

    async def row_delete(self, key: str, *, expect: int | None = None) -> bool:
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

        return await self._call(work, write=True)

    async def row_scan(self, prefix: str) -> list[Row]:
        def work(conn: sqlite3.Connection) -> list[Row]:
            found = conn.execute(
                "SELECT key, value, version FROM hedgeplug_rows"
                " WHERE lock = ? AND substr(key, 1, ?) = ? ORDER BY key",
                (self.lock_name, len(prefix), prefix),
            ).fetchall()
            return [Row(k, bytes(v), int(n)) for k, v, n in found]

        return await self._call(work, write=False)


def _is_busy(exc: sqlite3.Error) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and (
        "locked" in str(exc) or "busy" in str(exc)
    )


def _is_live(row: tuple[str, str, int, float, float], now: float) -> bool:
    holder, _address, _token, ttl, expires = row
    return holder != "" and expires > now and expires - now <= ttl


def open_lock(path: str, lock_name: str, *, busy_timeout: float = 1.0) -> SqliteLock:
    """A backend on `path`; raises StoreError when its directory is missing or unwritable."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise StoreError(f"sqlite lock store {path}: directory {directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise StoreError(f"sqlite lock store {path}: directory {directory} is not writable")
    if os.path.isdir(path):
        raise StoreError(f"sqlite lock store {path}: is a directory, expected a database file")
    _check_header(path)
    return SqliteLock(path, lock_name, busy_timeout=busy_timeout)


def _check_header(path: str) -> None:
    """Refuse at start-up a file that is plainly not SQLite (one 16-byte read);
    damage further in shows up as a StoreError on the call that meets it."""
    try:
        with open(path, "rb") as f:
            header = f.read(16)
    except FileNotFoundError:
        return  # created on first use
    except OSError as exc:
        raise StoreError(f"sqlite lock store {path}: cannot read: {exc.strerror}") from None
    if header and header != b"SQLite format 3\x00":
        raise StoreError(f"sqlite lock store {path}: file exists but is not a SQLite database")


def make(options: SqliteOptions, ctx: NodeContext) -> SqliteLock:
    path = options.path
    if not path:
        path = default_path(ctx.cluster)
        try:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"sqlite lock store {path}: cannot create its directory: {exc}") from exc
    elif "\0" in path:
        raise ConfigError(f"[lock] path: {path!r} contains a NUL character")
    return open_lock(os.path.expanduser(path), ctx.lock_name, busy_timeout=options.busy_timeout)


@hookimpl
def hedgeplug_register_locks(register: Any) -> None:
    register("sqlite", make, SqliteOptions)
