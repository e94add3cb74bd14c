"""The sqlite lock's watch: woken by acquires and releases (a marker file
and inotify), not by renewals nor a timer; `current()` answers from the
watch's last read only while that read still holds; the stat-polling
fallback where inotify is unavailable."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from hedgeplug.lock.sqlite import lock as sqlite_lock
from hedgeplug.lock.sqlite import open_lock
from hedgeplug.lock.sqlite.lock import SqliteLock
from hedgeplug.lock.sqlite.notify import FileChanges, StatPoller

pytestmark = pytest.mark.anyio


def count_queries(lock: SqliteLock) -> list[str]:
    """The SELECTs every connection `lock` opens from now on runs (its watch's and its own)."""
    seen: list[str] = []
    opener = lock._store.open_for_reading

    def traced() -> sqlite3.Connection:
        conn = opener()
        conn.set_trace_callback(lambda sql: seen.append(sql) if sql.startswith("SELECT") else None)
        return conn

    lock._store.open_for_reading = traced  # type: ignore[method-assign]
    return seen


@asynccontextmanager
async def watching(lock: SqliteLock) -> AsyncIterator[Callable[[], int]]:
    """`lock` watching in the background; yields a function giving the number of yields so far."""
    changes = [0]

    async def watch() -> None:
        async for _ in lock.watch():
            changes[0] += 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        with anyio.fail_after(5):
            while lock._feed is None and not isinstance(lock, _Polled):
                await anyio.sleep(0.01)
        await anyio.sleep(0.1)  # the first read
        yield lambda: changes[0]
        tg.cancel_scope.cancel()


class _Polled:
    pass


async def wait_for(what: Callable[[], bool], bound: float = 2.0) -> None:
    with anyio.fail_after(bound):
        while not what():
            await anyio.sleep(0.01)


async def test_renewals_wake_no_watcher_and_a_release_wakes_it(tmp_path: Path) -> None:
    a = open_lock(str(tmp_path / "l.db"), "w")
    b = open_lock(str(tmp_path / "l.db"), "w")
    queries = count_queries(b)
    try:
        lease = await a.acquire("a", "addr-a", 5.0)
        assert lease is not None
        async with watching(b) as changes:
            reads_after_start = len(queries)
            for _ in range(10):
                renewed = await a.renew(lease, 5.0)
                assert renewed is not None
                await anyio.sleep(0.05)
            assert len(queries) == reads_after_start, "a renewal woke the watcher"
            assert changes() == 0
            await a.release(lease)
            await wait_for(lambda: changes() == 1, bound=1.0)
            assert len(queries) == reads_after_start + 1
    finally:
        await a.aclose()
        await b.aclose()


async def test_current_answers_from_the_watch_but_never_stale(tmp_path: Path) -> None:
    path = str(tmp_path / "l.db")
    a, b, c = open_lock(path, "w"), open_lock(path, "w"), open_lock(path, "w")
    queries = count_queries(b)
    try:
        async with watching(b) as changes:
            assert await b.current() is None
            lease = await a.acquire("a", "addr-a", 5.0)
            assert lease is not None
            # Right after the acquire returns, not after the watch caught up.
            seen = await b.current()
            assert seen is not None and (seen.holder, seen.token) == ("a", lease.token)
            # The watch has read the change too (awaited: on a loaded machine
            # 0.1 s was not always enough, and its read then counted below).
            await wait_for(lambda: changes() >= 1, bound=5.0)
            before = len(queries)
            for _ in range(20):
                again = await b.current()
                assert again is not None and again.holder == "a"
                assert 0 < again.remaining <= 5.0
            assert len(queries) == before, "current() read the store with nothing changed"
            await a.release(lease)
            assert await b.current() is None
            got = await c.acquire("c", "addr-c", 5.0)
            assert got is not None
            seen = await b.current()
            assert seen is not None and (seen.holder, seen.token) == ("c", got.token)
    finally:
        for lock in (a, b, c):
            await lock.aclose()


async def test_current_reads_again_once_the_known_expiry_passes(tmp_path: Path) -> None:
    path = str(tmp_path / "l.db")
    a, b = open_lock(path, "w"), open_lock(path, "w")
    try:
        async with watching(b):
            lease = await a.acquire("a", "addr-a", 0.6)
            assert lease is not None
            assert (await b.current()) is not None
            await anyio.sleep(0.3)
            renewed = await a.renew(lease, 0.6)  # no marker touch: b's copy says 0.3s left
            assert renewed is not None
            await anyio.sleep(0.45)  # past the expiry b knew of, before the renewed one
            seen = await b.current()
            assert seen is not None and seen.holder == "a", "renewed lease reported as free"
            await anyio.sleep(0.7)  # now really expired
            assert await b.current() is None
    finally:
        await a.aclose()
        await b.aclose()


async def test_watch_falls_back_on_stat_polls_without_inotify(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[Any] = []

    def no_inotify(database: str, interval: float) -> StatPoller:
        made.append(StatPoller(database, interval))
        return made[-1]

    monkeypatch.setattr(sqlite_lock, "watch_changes", no_inotify)
    path = str(tmp_path / "l.db")
    a, b = open_lock(path, "w"), open_lock(path, "w")
    b.__class__ = type("PolledSqliteLock", (SqliteLock, _Polled), {})
    try:
        lease = await a.acquire("a", "addr-a", 5.0)
        assert lease is not None
        async with watching(b) as changes:
            assert made and b._feed is None  # current() reads the store every time
            await a.release(lease)
            await wait_for(lambda: changes() == 1, bound=1.0)
    finally:
        await a.aclose()
        await b.aclose()


async def test_inotify_ignores_other_files_in_the_folder(tmp_path: Path) -> None:
    changes = FileChanges(str(tmp_path / "l.db"))
    try:
        (tmp_path / "other").write_text("x")
        (tmp_path / "l.db-wal").write_text("x")
        assert not changes.pending()
        sqlite_lock.touch(str(tmp_path / "l.db"))
        assert await changes.wait(1.0)
        assert not changes.pending()
    finally:
        changes.close()


async def test_stat_poller_slows_down_while_idle_and_still_sees_a_touch(tmp_path: Path) -> None:
    database = str(tmp_path / "l.db")
    poller = StatPoller(database, 0.1, longest=0.4)
    stamps: list[float] = []
    stamp = poller._stamp

    def counted() -> Any:
        stamps.append(anyio.current_time())
        return stamp()

    poller._stamp = counted  # type: ignore[method-assign]
    assert not await poller.wait(1.5)
    # Every 0.1 s would be 15 polls; doubling to 0.4 s: 0.1, 0.2, 0.4, 0.4, 0.4.
    assert len(stamps) <= 6, stamps
    sqlite_lock.touch(database)
    assert await poller.wait(2.0)  # one longest period is 0.4 s: slack for a loaded machine
    # After a change it polls fast again.
    assert poller._period == 0.1
