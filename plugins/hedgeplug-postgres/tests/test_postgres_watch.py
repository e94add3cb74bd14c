"""The watching backend on its one connection: LISTEN between queries,
notifications heard while idle and while a query runs, and a watch that
carries on after its connection is cut."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import psycopg
import pytest
from hedgeplug.errors import StoreError
from psycopg.conninfo import make_conninfo

from hedgeplug_postgres import PostgresOptions, WatchingPostgresLock, make

pytestmark = pytest.mark.anyio


class _Ctx:
    cluster = "c"
    id = "n"

    def __init__(self, lock_name: str) -> None:
        self.lock_name = lock_name


def _open(dsn: str, lock_name: str) -> WatchingPostgresLock:
    backend = make(PostgresOptions(dsn=dsn), _Ctx(lock_name))  # type: ignore[arg-type]
    assert isinstance(backend, WatchingPostgresLock)
    return backend


def _connections_of(dsn: str, pids: set[int]) -> int:
    """How many server connections of ours PostgreSQL counts (application
    hedgeplug, in the database of `dsn`: other tests share the server)."""
    with psycopg.connect(dsn, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'hedgeplug'"
            " AND datname = current_database()"
        ).fetchall()
    return len({pid for (pid,) in rows} & pids) if pids else len(rows)


@contextlib.contextmanager
def _own_database(dsn: str) -> Iterator[str]:
    """A database of this test alone on the shared server: its connections can be counted."""
    name = f"watch_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_conninfo(dsn, dbname=name)
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _until(what: Callable[[], bool], bound: float) -> None:
    with anyio.fail_after(bound):
        while not what():
            await anyio.sleep(0.01)


async def _watching(backend: WatchingPostgresLock, changes: list[int], tg: Any) -> None:
    async def watch() -> None:
        async for _ in backend.watch():
            changes[0] += 1

    tg.start_soon(watch)
    await anyio.sleep(0.3)  # its first read


async def test_one_connection_per_backend_with_watching_on(postgres_server: Any) -> None:
    with _own_database(postgres_server.dsn) as dsn:
        await _one_connection_per_backend(dsn)


async def _one_connection_per_backend(dsn: str) -> None:
    name = f"w-{uuid.uuid4().hex[:8]}"
    watcher, other = _open(dsn, name), _open(dsn, name)
    changes = [0]
    try:
        async with anyio.create_task_group() as tg:
            await _watching(watcher, changes, tg)
            lease = await other.acquire("other", "addr", 5.0)
            assert lease is not None
            await _until(lambda: changes[0] == 1, 2.0)  # heard while idle
            assert watcher.server_pid is not None
            mine = {watcher.server_pid}
            assert _connections_of(dsn, mine) == 1
            # Every hedgeplug connection to this database belongs to one of the two backends.
            assert _connections_of(dsn, set()) == 2
            # A release heard while the watcher's own backend keeps querying.
            async def query_busily() -> None:
                for _ in range(200):
                    await watcher.current()

            tg.start_soon(query_busily)
            await other.release(lease)
            await _until(lambda: changes[0] == 2, 2.0)
            tg.cancel_scope.cancel()
    finally:
        await watcher.aclose()
        await other.aclose()


async def test_watch_goes_on_after_its_connection_is_cut(postgres_server: Any) -> None:
    name = f"w-{uuid.uuid4().hex[:8]}"
    watcher, other = _open(postgres_server.dsn, name), _open(postgres_server.dsn, name)
    changes = [0]
    try:
        async with anyio.create_task_group() as tg:
            await _watching(watcher, changes, tg)
            pid = watcher.server_pid
            assert pid is not None
            with psycopg.connect(postgres_server.dsn, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            lease = await other.acquire("other", "addr", 5.0)
            assert lease is not None
            # The election polls current(); the call after the cut was noticed
            # reconnects and LISTENs again, and the watch reads what it may
            # have missed meanwhile. (The call that meets the cut may fail.)
            seen = None
            for _ in range(3):
                try:
                    seen = await watcher.current()
                    break
                except StoreError:
                    continue
            assert seen is not None and seen.holder == "other"
            await _until(lambda: changes[0] == 1, 2.0)
            assert watcher.server_pid not in (None, pid)
            await other.release(lease)
            await _until(lambda: changes[0] == 2, 2.0)
            tg.cancel_scope.cancel()
    finally:
        await watcher.aclose()
        await other.aclose()
