"""Spanner backend beyond the contract: table creation, clear errors for a
missing table, database or emulator, configuration, and the core election."""

from __future__ import annotations

import types
import uuid

import anyio
import pytest
from hedgeplug.config import LockSettings, load_config
from hedgeplug.election import Election
from hedgeplug.errors import ConfigError, StoreError
from hedgeplug.testing.servers import free_port

from hedgeplug_spanner import SpannerLock, SpannerOptions, SpannerStore, make
from hedgeplug_spanner.emulator import create_emulator_database

PROJECT = "hedgeplug-test"
INSTANCE = "test-instance"


def _lock(host: str, database: str, *, timeout: float = 10.0, name: str | None = None,
          **kwargs) -> SpannerLock:
    store = SpannerStore(PROJECT, INSTANCE, database, emulator_host=host, timeout=timeout)
    return SpannerLock(store, name or f"plugin-{uuid.uuid4().hex}", **kwargs)


@pytest.fixture
def empty_database(spanner_emulator):
    database = f"empty{uuid.uuid4().hex[:16]}"
    create_emulator_database(spanner_emulator.host, PROJECT, INSTANCE, database,
                             with_tables=False)
    return spanner_emulator.host, database


@pytest.mark.anyio
async def test_create_table_makes_both_tables_once(empty_database):
    host, database = empty_database
    tables = {"create_table": True, "table": "leases_x", "rows_table": "rows_x", "name": "svc"}
    first, second = _lock(host, database, **tables), _lock(host, database, **tables)
    try:
        lease = await first.acquire("node-a", "addr-a", 2.0)
        assert lease is not None and lease.token == 1
        assert await second.acquire("node-b", "addr-b", 2.0) is None  # tables exist: no error
        assert (await second.row_put("k", b"v")).version == 1
    finally:
        await first.aclose()
        await second.aclose()


@pytest.mark.anyio
async def test_missing_table_names_the_fix(empty_database):
    host, database = empty_database
    lock = _lock(host, database)
    try:
        with pytest.raises(StoreError, match="create_table = true") as caught:
            await lock.current()
        assert database in str(caught.value)
    finally:
        await lock.aclose()


@pytest.mark.anyio
async def test_missing_database_is_named(spanner_emulator):
    lock = _lock(spanner_emulator.host, "nosuchdatabase")
    try:
        with pytest.raises(StoreError, match="nosuchdatabase"):
            await lock.acquire("node-a", "addr-a", 2.0)
    finally:
        await lock.aclose()


@pytest.mark.anyio
async def test_unreachable_emulator_fails_within_the_timeout():
    host = f"127.0.0.1:{free_port()}"
    lock = _lock(host, "db", timeout=2.0)
    try:
        started = anyio.current_time()
        with pytest.raises(StoreError, match=host):
            await lock.current()
        assert anyio.current_time() - started < 5.0
    finally:
        await lock.aclose()


def test_config_selects_spanner_and_reports_bad_values():
    keys = {"use": "spanner", "project": "p", "instance": "i", "database": "d"}
    config = load_config(data={"lock": {**keys, "timeout": "2s"}}, env={})
    assert isinstance(config.lock.options, SpannerOptions)
    assert config.lock.options.timeout == 2.0
    bad = [
        ({k: v for k, v in keys.items() if k != "project"}, "project"),
        ({**keys, "table": "drop table; --"}, "table"),
        ({**keys, "rows_table": "hedgeplug_lease"}, "rows_table"),
        ({**keys, "database": "a/b"}, "database"),
        ({**keys, "create_table": "maybe"}, "create_table"),
        ({**keys, "tabel": "x"}, "unknown key"),
    ]
    for data, expected in bad:
        with pytest.raises(ConfigError, match=expected):
            load_config(data={"lock": data}, env={})


def test_emulator_host_falls_back_to_the_environment(monkeypatch):
    monkeypatch.setenv("SPANNER_EMULATOR_HOST", "127.0.0.1:9010")
    context = types.SimpleNamespace(lock_name="svc")  # make() reads only the lock name
    lock = make(SpannerOptions(project="p", instance="i", database="d"), context)
    assert lock.store.emulator_host == "127.0.0.1:9010" and lock.lock_name == "svc"
    explicit = make(SpannerOptions(project="p", instance="i", database="d",
                                   emulator_host="127.0.0.1:9999"), context)
    assert explicit.store.emulator_host == "127.0.0.1:9999"


@pytest.mark.anyio
async def test_election_takes_over_soon_after_release(spanner_emulator):
    """With a 10 s poll period only the polling watch explains a takeover within a second."""
    database = f"election{uuid.uuid4().hex[:12]}"
    create_emulator_database(spanner_emulator.host, PROJECT, INSTANCE, database)
    name = f"election-{uuid.uuid4().hex}"
    locks = [
        SpannerLock(SpannerStore(PROJECT, INSTANCE, database,
                                 emulator_host=spanner_emulator.host, timeout=5.0),
                    name, watch_interval=0.1)
        for _ in range(2)
    ]
    settings = LockSettings(use="spanner", ttl=3.0, retry=10.0)
    elections = [
        Election(lock, settings, holder=f"node-{i}", address=lambda i=i: f"addr-{i}",
                 now=anyio.current_time, on_change=lambda new, old: None)
        for i, lock in enumerate(locks)
    ]
    try:
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                for election in elections:
                    tg.start_soon(election.run)
                while not any(e.is_leader for e in elections):
                    await anyio.sleep(0.05)
                leader = next(e for e in elections if e.is_leader)
                follower = next(e for e in elections if e is not leader)
                await anyio.sleep(0.5)
                released_at = anyio.current_time()
                await leader.release(timeout=3.0)
                while not follower.is_leader:
                    await anyio.sleep(0.02)
                took = anyio.current_time() - released_at
                tg.cancel_scope.cancel()
        assert took < 1.0, f"takeover after release took {took:.2f}s"
    finally:
        for lock in locks:
            await lock.aclose()
