"""hedgeplug-postgres against a real PostgreSQL server.

The server comes from hedgeplug's pytest plugin: `postgres_server` (one
throwaway server for the run on a free loopback port, or
HEDGEPLUG_TEST_POSTGRES_DSN) and `server_factory` for the restart test, which
needs a server of its own to stop and start.
"""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import psycopg
import psycopg.conninfo
import pytest
from hedgeplug.errors import ConfigError, StoreError
from hedgeplug.registry import Registry
from hedgeplug.testing.lock_contract import (
    ConnectionLossContract,
    FingerprintedContract,
    LockBackendContract,
    RowStorageContract,
    StallContract,
    StoreOutageContract,
    WatchableContract,
    check_history,
    graceful_failover_seconds,
)
from hedgeplug.testing.lock_processes import run_contender_processes
from hedgeplug.testing.log_contract import FencedLogContract

from hedgeplug_postgres import PostgresLock, PostgresOptions, make


@pytest.fixture
def lock_name() -> str:
    return f"contract-{uuid.uuid4().hex[:12]}"


class _Ctx:
    cluster = "c"
    id = "n"

    def __init__(self, lock_name: str) -> None:
        self.lock_name = lock_name


def _backend_factory(dsn: str, lock_name: str, **options: Any) -> Any:
    """Backends as a node builds them (through make(), so watch = true gives the watching kind)."""
    return lambda: make(PostgresOptions(dsn=dsn, **options), _Ctx(lock_name))  # type: ignore[arg-type]


class RowStall:
    """stall(): another client holds the lock's row locked, so every write to it waits."""

    def __init__(self, dsn: str, options: PostgresOptions, lock_name: str) -> None:
        self.dsn = dsn
        self.table = PostgresLock(options, lock_name).sql.lease_table
        self.lock_name = lock_name
        self.conn: psycopg.Connection[Any] | None = None

    def stall(self) -> None:
        self.conn = psycopg.connect(self.dsn)
        row = self.conn.execute(
            f"SELECT token FROM {self.table} WHERE name = %s FOR UPDATE", (self.lock_name,)
        ).fetchone()
        assert row is not None, "stall() needs the lock row to exist"

    def resume(self) -> None:
        if self.conn is not None:
            self.conn.rollback()
            self.conn.close()
            self.conn = None


class Severer:
    """sever(backend): terminate that backend's server-side connection."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    def sever(self, backend: PostgresLock) -> None:
        pid = backend.server_pid
        assert pid is not None
        with psycopg.connect(self.dsn, autocommit=True) as admin:
            killed = admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()
        assert killed == (True,)


class TestPostgresContract(
    LockBackendContract, WatchableContract, RowStorageContract, StallContract,
    ConnectionLossContract, FencedLogContract, FingerprintedContract,
):
    ttl = 0.5
    clock_slack = 0.01  # database wall clock against the test's monotonic clock, same host

    @pytest.fixture
    def make_lock(self, postgres_server: Any, lock_name: str) -> Any:
        return _backend_factory(postgres_server.dsn, lock_name)

    @pytest.fixture
    def store_stall(self, postgres_server: Any, lock_name: str) -> Any:
        stall = RowStall(postgres_server.dsn, PostgresOptions(), lock_name)
        yield stall
        stall.resume()

    @pytest.fixture
    def connection_breaker(self, postgres_server: Any) -> Any:
        return Severer(postgres_server.dsn)


class TestPostgresRestart(StoreOutageContract):
    """The store restart, on a server of this test's own (stopped and started)."""

    ttl = 0.5
    call_bound = 5.0

    @pytest.fixture
    def own_server(self, server_factory: Any) -> Any:
        return server_factory.postgres()

    @pytest.fixture
    def make_lock(self, own_server: Any, lock_name: str) -> Any:
        return _backend_factory(own_server.dsn, lock_name, connect_timeout=2.0)

    @pytest.fixture
    def store_control(self, own_server: Any) -> Any:
        return own_server


@pytest.mark.anyio
async def test_expiry_uses_statement_time_not_transaction_start(
    postgres_server: Any, lock_name: str
) -> None:
    """Inside a transaction that began before a lease was taken, the acquire
    statement must still see that lease expire (clock_timestamp(), not now())."""
    holder = PostgresLock(PostgresOptions(dsn=postgres_server.dsn), lock_name)
    sql = holder.sql
    try:
        assert await holder.current() is None  # creates the tables
        with psycopg.connect(postgres_server.dsn) as conn:  # not autocommit: one transaction
            conn.execute("SELECT now()")  # the transaction has started: now() is frozen here
            lease = await holder.acquire("node-a", "addr-a", 0.5)
            assert lease is not None
            await anyio.sleep(0.8)  # the lease has expired by the clock, not by now()
            args = {"name": lock_name, "holder": "node-b", "address": "addr-b", "ttl": 0.5,
                    "channel": sql.channel, "fingerprint": ""}
            row = conn.execute(sql.acquire, args).fetchone()
            assert row is not None, "expired lease not taken inside an old transaction"
            assert row[2] == lease.token + 1
            assert 0.4 < row[4] <= 0.5, f"remaining {row[4]} computed from a frozen clock"
            conn.commit()
        seen = await holder.current()
        assert seen is not None and seen.holder == "node-b"
    finally:
        await holder.aclose()


@pytest.mark.anyio
async def test_missing_table_names_it_and_shows_the_ddl(postgres_server: Any, lock_name: str) -> None:
    table = f"absent_{uuid.uuid4().hex[:8]}"
    lock = PostgresLock(
        PostgresOptions(dsn=postgres_server.dsn, table=table, create_table=False), lock_name
    )
    try:
        with pytest.raises(StoreError) as caught:
            await lock.acquire("a", "addr", 1.0)
    finally:
        await lock.aclose()
    message = str(caught.value)
    assert f'"public"."{table}"' in message and "create_table is false" in message
    assert f'CREATE TABLE IF NOT EXISTS "public"."{table}"' in message
    assert postgres_server.dsn.split(":")[2].split("@")[0] not in message  # no password


@pytest.mark.anyio
async def test_created_table_is_used_when_create_table_is_false(
    postgres_server: Any, lock_name: str
) -> None:
    table = f"made_{uuid.uuid4().hex[:8]}"
    sql = PostgresLock(PostgresOptions(table=table), lock_name).sql
    with psycopg.connect(postgres_server.dsn, autocommit=True) as admin:
        for statement in sql.ddl.split(";\n"):
            admin.execute(statement)
    lock = PostgresLock(
        PostgresOptions(dsn=postgres_server.dsn, table=table, create_table=False), lock_name
    )
    try:
        lease = await lock.acquire("a", "addr", 1.0)
        assert lease is not None and lease.token == 1
    finally:
        await lock.aclose()


@pytest.mark.anyio
async def test_unreachable_server_is_a_store_error(lock_name: str) -> None:
    from hedgeplug.testing.servers import free_port

    port = free_port()  # nothing listens there
    lock = PostgresLock(
        PostgresOptions(dsn=f"postgresql://u:secret@127.0.0.1:{port}/db", connect_timeout=2.0),
        lock_name,
    )
    try:
        with anyio.fail_after(5):
            with pytest.raises(StoreError, match=f"127.0.0.1:{port}/db: cannot connect") as caught:
                await lock.current()
        assert "secret" not in str(caught.value)
    finally:
        await lock.aclose()


def test_malformed_dsn_is_a_config_error() -> None:
    class Ctx:
        lock_name = "x"
        cluster = "x"
        id = "n"

    with pytest.raises(ConfigError, match=r"\[lock\] dsn"):
        make(PostgresOptions(dsn="host=127.0.0.1 port"), Ctx())  # type: ignore[arg-type]


def test_bad_identifiers_are_refused() -> None:
    with pytest.raises(ValueError, match="at most 58 bytes"):
        PostgresOptions(table="t" * 60)
    with pytest.raises(ValueError, match="non-empty"):
        PostgresOptions(schema="")


def test_registered_through_the_entry_point() -> None:
    impl = Registry.load().get("lock", "postgres")
    assert impl.options is PostgresOptions
    assert impl.distribution == "hedgeplug-postgres"


@pytest.mark.anyio
async def test_calls_leave_the_event_loop_free(postgres_server: Any, lock_name: str) -> None:
    """While a renewal waits on a locked row, the event loop keeps running."""
    lock = PostgresLock(PostgresOptions(dsn=postgres_server.dsn), lock_name)
    stall = RowStall(postgres_server.dsn, PostgresOptions(), lock_name)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.01)
            ticks += 1

    try:
        lease = await lock.acquire("a", "addr", 5.0)
        assert lease is not None
        stall.stall()
        async with anyio.create_task_group() as tg:
            tg.start_soon(tick)
            with anyio.move_on_after(0.5):
                await lock.renew(lease, 5.0)
            tg.cancel_scope.cancel()
    finally:
        stall.resume()
        await lock.aclose()
    assert ticks >= 25


@pytest.mark.anyio
async def test_nodes_fail_over_quickly_after_a_graceful_stop(postgres_server: Any) -> None:
    table = f"failover_{uuid.uuid4().hex[:8]}"
    took = await graceful_failover_seconds(
        {"use": "postgres", "dsn": postgres_server.dsn, "table": table}
    )
    assert took < 1.0, f"failover took {took:.2f}s"


@pytest.mark.anyio
async def test_permission_denied_names_the_grants(postgres_server: Any, lock_name: str) -> None:
    """A role that may not create tables in the schema gets the list of grants it needs."""
    role, password = f"limited_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    schema = f"locked_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_server.dsn, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        admin.execute(f"CREATE SCHEMA {schema}")
        admin.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
    parts = psycopg.conninfo.conninfo_to_dict(postgres_server.dsn)
    dsn = psycopg.conninfo.make_conninfo(
        **{**parts, "user": role, "password": password}
    )
    lock = PostgresLock(PostgresOptions(dsn=dsn, schema=schema), lock_name)
    try:
        with pytest.raises(StoreError) as caught:
            await lock.acquire("a", "addr", 1.0)
    finally:
        await lock.aclose()
    message = str(caught.value)
    assert "permission denied" in message and "CREATE on the schema" in message
    assert password not in message


def test_config_reads_postgres_options_and_names_bad_ones() -> None:
    from hedgeplug.config import load_config

    config = load_config(
        data={"lock": {"use": "postgres", "dsn": "host=127.0.0.1", "statement_timeout": "2s",
                       "create_table": False}},
        env={"HEDGEPLUG_LOCK_TABLE": "leases"},
    )
    assert config.lock.options == PostgresOptions(
        dsn="host=127.0.0.1", table="leases", create_table=False, statement_timeout=2.0
    )
    with pytest.raises(ConfigError, match="table"):
        load_config(data={"lock": {"use": "postgres", "table": ""}}, env={})
    with pytest.raises(ConfigError, match="connect_timeout"):
        load_config(data={"lock": {"use": "postgres", "connect_timeout": "-1s"}}, env={})


@pytest.mark.anyio
async def test_watch_false_gives_a_backend_without_watch(postgres_server: Any, lock_name: str) -> None:
    from hedgeplug.contracts import LockBackend, Watchable

    plain = _backend_factory(postgres_server.dsn, lock_name, watch=False)()
    watching = _backend_factory(postgres_server.dsn, lock_name)()
    try:
        assert isinstance(plain, LockBackend) and not isinstance(plain, Watchable)
        assert isinstance(watching, Watchable)
        lease = await plain.acquire("a", "addr", 1.0)
        assert lease is not None
        seen = await watching.current()
        assert seen is not None and (seen.holder, seen.token) == ("a", lease.token)
    finally:
        await plain.aclose()
        await watching.aclose()


@pytest.mark.slow
def test_os_processes_contending_through_postgres(postgres_server: Any, lock_name: str) -> None:
    """Six real processes, each with its own connections, hammer one lock for three seconds."""
    processes = 6
    merged = run_contender_processes(
        "hedgeplug_postgres:open_lock",
        {"dsn": postgres_server.dsn, "lock_name": lock_name},
        processes=processes, seconds=3.0, ttl=0.25, min_grants=8, min_holders=3,
    )
    problems = check_history(merged, clock_slack=0.01)
    assert not problems, "\n".join(problems[:20])
    holders = {g.holder for g in merged.grants}
    print(  # shown with -s: what the run covered
        f"{processes} processes: {len(merged.grants)} grants to {len(holders)} holders, "
        f"{len(merged.renewals)} renewals, {merged.calls} calls, {merged.store_errors} store errors"
    )
    assert len(merged.grants) >= 8 and len(holders) >= 3, (len(merged.grants), holders)
    assert merged.store_errors <= merged.calls // 20, (merged.store_errors, merged.calls)
