"""The Spanner lock backend.

One row per lock name holds the holder, its address, the fencing token, the
ttl and a heartbeat: the commit timestamp of the write that took or renewed
the lease. Every step is ONE read-write transaction that reads the row,
decides by Spanner's own clock (``CURRENT_TIMESTAMP()`` against ``heartbeat +
ttl``) and writes with a pending commit timestamp; Spanner's serializable
transactions make the read-decide-write atomic across all clients. A take
always writes ``token + 1``, so tokens strictly increase; release keeps the
row (and its token) with an empty holder. The row's `fingerprint` names the
holder's key (written by take and renew, kept by release) so a contender can
check it; a table from before it gains the column on first use (create_table)
or the error names the ALTER statement to run.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import AsyncIterator
from typing import Any

import anyio
from hedgeplug.plugin import Lease, Row, StoreError

from .log import SpannerLogMixin, log_ddl
from .store import SpannerStore

TABLE_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,127}$")


def lease_ddl(table: str) -> str:
    return (
        f"CREATE TABLE {table} (\n"
        "  name      STRING(MAX) NOT NULL,\n"
        "  holder    STRING(MAX) NOT NULL,\n"
        "  address   STRING(MAX) NOT NULL,\n"
        "  token     INT64 NOT NULL,\n"
        "  ttl_ms    INT64 NOT NULL,\n"
        "  heartbeat TIMESTAMP NOT NULL OPTIONS (allow_commit_timestamp = true),\n"
        "  fingerprint STRING(MAX)\n"
        ") PRIMARY KEY (name)"
    )


def fingerprint_ddl(table: str) -> str:
    """Brings a lease table made before lease fingerprints up to date."""
    return f"ALTER TABLE {table} ADD COLUMN fingerprint STRING(MAX)"


def rows_ddl(table: str) -> str:
    return (
        f"CREATE TABLE {table} (\n"
        "  lock_name STRING(MAX) NOT NULL,\n"
        "  row_key   STRING(MAX) NOT NULL,\n"
        "  value     BYTES(MAX) NOT NULL,\n"
        "  version   INT64 NOT NULL\n"
        ") PRIMARY KEY (lock_name, row_key)"
    )


def ttl_ms(ttl: float) -> int:
    return max(1, math.ceil(ttl * 1000 - 1e-6))


class SpannerLock(SpannerLogMixin):
    """LockBackend + Watchable (by polling) + Fingerprinted + RowStorage + FencedLog (log.py)
    for one lock name."""

    def __init__(
        self,
        store: SpannerStore,
        lock_name: str,
        *,
        table: str = "hedgeplug_lease",
        rows_table: str = "hedgeplug_rows",
        create_table: bool = False,
        ddl_timeout: float = 300.0,
        watch_interval: float = 0.25,
    ) -> None:
        for name in (table, rows_table):
            if not TABLE_NAME_RE.match(name):
                raise ValueError(f"{name!r} is not a valid Spanner table name")
        self.store = store
        self.lock_name = lock_name
        self.table = table
        self.rows_table = rows_table
        self.create_table = create_table
        self.ddl_timeout = ddl_timeout
        self.watch_interval = watch_interval
        self._tables_checked = not create_table
        self._column_checked = False
        self._read_sql = (
            f"SELECT holder, address, token, ttl_ms, "
            f"TIMESTAMP_DIFF(TIMESTAMP_ADD(heartbeat, INTERVAL ttl_ms MILLISECOND), "
            f"CURRENT_TIMESTAMP(), MICROSECOND) AS remaining_us, fingerprint "
            f"FROM {table} WHERE name = @name"
        )

    # ------------------------------------------------------------ plumbing

    def _params(self, **extra: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        from google.cloud.spanner_v1 import param_types

        kinds = {"name": param_types.STRING, "lock_name": param_types.STRING,
                 "row_key": param_types.STRING, "prefix": param_types.STRING}
        params = {"name": self.lock_name, **extra}
        return params, {k: kinds[k] for k in params}

    async def _call(self, what: str, work: Any) -> Any:
        if not self._tables_checked:
            await self.store.run("creating tables", self._ensure_tables)
            self._tables_checked = True
        if not self._column_checked:
            self._column_checked = await self.store.run(
                "checking the fingerprint column", self._ensure_fingerprint_column
            )
        return await self.store.run(what, work)

    def _ensure_fingerprint_column(self, database: Any) -> bool:
        """True once the lease table has the column; False while the table is
        missing (the call then fails with the missing-table message)."""
        from google.cloud.spanner_v1 import param_types

        with database.snapshot() as snap:
            columns = {row[0] for row in snap.execute_sql(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = ''"
                " AND table_name = @table",
                params={"table": self.table}, param_types={"table": param_types.STRING},
                timeout=self.store.timeout,
            )}
        if not columns or "fingerprint" in columns:
            return bool(columns)
        statement = fingerprint_ddl(self.table)
        if not self.create_table:
            raise StoreError(
                f"spanner table {self.table} predates lease fingerprints and create_table is"
                f" false; add the column with: {statement}"
            )
        from google.api_core import exceptions as api

        try:
            database.update_ddl([statement]).result(timeout=self.ddl_timeout)
        except (api.AlreadyExists, api.FailedPrecondition) as exc:  # another node added it
            if "duplicate" not in str(exc).lower() and "exists" not in str(exc).lower():
                raise
        return True

    def _ensure_tables(self, database: Any) -> None:
        """Create missing tables (create_table = true). Racing creators are fine."""
        from google.api_core import exceptions as api
        from google.cloud.spanner_v1 import param_types

        wanted = {self.table: [lease_ddl(self.table)], self.rows_table: [rows_ddl(self.rows_table)],
                  f"{self.table}_log": log_ddl(self.table)}
        with database.snapshot() as snap:
            present = {
                row[0] for row in snap.execute_sql(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = '' AND table_name IN UNNEST(@names)",
                    params={"names": list(wanted)},
                    param_types={"names": param_types.Array(param_types.STRING)},
                    timeout=self.store.timeout,
                )
            }
        missing = [ddl for name, ddls in wanted.items() if name not in present for ddl in ddls]
        if not missing:
            return
        try:
            database.update_ddl(missing).result(timeout=self.ddl_timeout)
        except (api.AlreadyExists, api.FailedPrecondition) as exc:
            if "duplicate" not in str(exc).lower() and "exists" not in str(exc).lower():
                raise

    def _read(self, reader: Any) -> tuple[str, str, int, int, int, str | None] | None:
        params, types = self._params()
        rows = list(reader.execute_sql(self._read_sql, params=params, param_types=types,
                                       timeout=self.store.timeout))
        return tuple(rows[0]) if rows else None  # type: ignore[return-value]

    def _transact(self, database: Any, work: Any) -> Any:
        with self.store.transaction_slot():
            return database.run_in_transaction(work, timeout_secs=self.store.timeout)

    def _lease(self, row: tuple[str, str, int, int, int, str | None]) -> Lease | None:
        holder, address, token, ms, remaining_us, fingerprint = row
        if not holder or remaining_us is None or remaining_us <= 0:
            return None
        return Lease(lock=self.lock_name, holder=holder, address=address, token=int(token),
                     ttl=ms / 1000, remaining=remaining_us / 1e6, fingerprint=fingerprint or "")

    # ------------------------------------------------------------ LockBackend

    async def acquire(
        self, holder: str, address: str, ttl: float, *, fingerprint: str = ""
    ) -> Lease | None:
        from google.cloud import spanner

        def take(tx: Any) -> int | None:
            row = self._read(tx)
            if row is not None:
                current = self._lease(row)
                if current is not None and current.holder != holder:
                    return None
            token = (int(row[2]) if row is not None else 0) + 1
            tx.insert_or_update(
                self.table,
                columns=("name", "holder", "address", "token", "ttl_ms", "heartbeat", "fingerprint"),
                values=[(self.lock_name, holder, address, token, ttl_ms(ttl),
                         spanner.COMMIT_TIMESTAMP, fingerprint)],
            )
            return token

        token = await self._call("acquire", lambda db: self._transact(db, take))
        if token is None:
            return None
        return Lease(lock=self.lock_name, holder=holder, address=address, token=token,
                     ttl=ttl, remaining=ttl, fingerprint=fingerprint)

    async def renew(self, lease: Lease, ttl: float) -> Lease | None:
        from google.cloud import spanner

        def extend(tx: Any) -> bool:
            row = self._read(tx)
            current = self._lease(row) if row is not None else None
            if current is None or (current.holder, current.token) != (lease.holder, lease.token):
                return False
            tx.update(self.table, columns=("name", "ttl_ms", "heartbeat", "fingerprint"),
                      values=[(self.lock_name, ttl_ms(ttl), spanner.COMMIT_TIMESTAMP,
                               lease.fingerprint)])
            return True

        if not await self._call("renew", lambda db: self._transact(db, extend)):
            return None
        return Lease(lock=self.lock_name, holder=lease.holder, address=lease.address,
                     token=lease.token, ttl=ttl, remaining=ttl, fingerprint=lease.fingerprint)

    async def release(self, lease: Lease) -> None:
        def give_up(tx: Any) -> None:
            row = self._read(tx)
            if row is None or (row[0], int(row[2])) != (lease.holder, lease.token):
                return  # not ours any more
            tx.update(self.table, columns=("name", "holder", "address", "ttl_ms"),
                      values=[(self.lock_name, "", "", 0)])

        await self._call("release", lambda db: self._transact(db, give_up))

    async def current(self) -> Lease | None:
        row = await self._call("read lease", self._read_snapshot)
        return self._lease(row) if row is not None else None

    async def last_fingerprint(self) -> str:
        row = await self._call("read lease", self._read_snapshot)
        return (row[5] or "") if row is not None else ""

    def _read_snapshot(self, db: Any) -> tuple[str, str, int, int, int, str | None] | None:
        with db.snapshot() as snap:
            return self._read(snap)

    async def aclose(self) -> None:
        await self.store.aclose()

    # ------------------------------------------------------------ Watchable

    async def watch(self) -> AsyncIterator[None]:
        """Poll the lease row every watch_interval; yield when holder, token or liveness change.

        Spanner has change streams, but the emulator and small deployments do
        not need them: a strong read a few times a second is cheap.
        """
        first = True
        seen: tuple[str, int] | None = None
        while True:
            lease = await self.current()
            state = None if lease is None else (lease.holder, lease.token)
            if state != seen and not first:
                yield None
            seen, first = state, False
            await anyio.sleep(self.watch_interval)

    # ------------------------------------------------------------ RowStorage

    def _row_select(self) -> str:
        return (f"SELECT row_key, value, version FROM {self.rows_table} "
                f"WHERE lock_name = @lock_name AND row_key = @row_key")

    async def row_get(self, key: str) -> Row | None:
        params, types = self._params(lock_name=self.lock_name, row_key=key)
        params.pop("name"), types.pop("name")

        def read(db: Any) -> Row | None:
            with db.snapshot() as snap:
                rows = list(snap.execute_sql(self._row_select(), params=params,
                                             param_types=types, timeout=self.store.timeout))
            return _row(rows[0]) if rows else None

        return await self._call("read row", read)

    def _row_version(self, tx: Any, key: str) -> int:
        params, types = self._params(lock_name=self.lock_name, row_key=key)
        params.pop("name"), types.pop("name")
        rows = list(tx.execute_sql(self._row_select(), params=params, param_types=types,
                                   timeout=self.store.timeout))
        return int(rows[0][2]) if rows else 0

    async def row_put(self, key: str, value: bytes, *, expect: int | None = None) -> Row | None:
        def write(tx: Any) -> int | None:
            version = self._row_version(tx, key)
            if expect is not None and version != expect:
                return None
            tx.insert_or_update(self.rows_table,
                                columns=("lock_name", "row_key", "value", "version"),
                                # the client wants BYTES in mutations base64-encoded
                                values=[(self.lock_name, key, base64.b64encode(value),
                                         version + 1)])
            return version + 1

        version = await self._call("write row", lambda db: self._transact(db, write))
        return None if version is None else Row(key=key, value=bytes(value), version=version)

    async def row_delete(self, key: str, *, expect: int | None = None) -> bool:
        from google.cloud import spanner

        def delete(tx: Any) -> bool:
            version = self._row_version(tx, key)
            if version == 0 or (expect is not None and version != expect):
                return False
            tx.delete(self.rows_table, spanner.KeySet(keys=[[self.lock_name, key]]))
            return True

        return await self._call("delete row", lambda db: self._transact(db, delete))

    async def row_scan(self, prefix: str) -> list[Row]:
        params, types = self._params(lock_name=self.lock_name, prefix=prefix)
        params.pop("name"), types.pop("name")
        sql = (f"SELECT row_key, value, version FROM {self.rows_table} "
               f"WHERE lock_name = @lock_name AND STARTS_WITH(row_key, @prefix) ORDER BY row_key")

        def scan(db: Any) -> list[Row]:
            with db.snapshot() as snap:
                rows = snap.execute_sql(sql, params=params, param_types=types,
                                        timeout=self.store.timeout)
                return [_row(r) for r in rows]

        return await self._call("scan rows", scan)


def _row(fields: Any) -> Row:
    # The client hands BYTES columns back still base64-encoded.
    return Row(key=fields[0], value=base64.b64decode(fields[1]), version=int(fields[2]))
