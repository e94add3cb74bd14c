"""The sqlite lock backend: the lock contract with several backend instances
on one database file, real OS processes contending on one file, and the
errors a user gets for a bad path or a corrupt file."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from hedgeplug.errors import StoreError
from hedgeplug.lock.sqlite import SqliteOptions, default_path, make, open_lock
from hedgeplug.registry import Registry
from hedgeplug.testing.lock_contract import (
    FingerprintedContract,
    Grant,
    History,
    LockBackendContract,
    Observation,
    Release,
    Renewal,
    RowStorageContract,
    StallContract,
    StoreOutageContract,
    WatchableContract,
    check_history,
    graceful_failover_seconds,
)
from hedgeplug.testing.lock_processes import run_contender_processes
from hedgeplug.testing.log_contract import FencedLogContract

# A separate OS process that takes SQLite's write lock and holds it until its
# stdin closes: to every backend that is a store it cannot write to.
_HOLD_WRITE_LOCK = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
conn.execute("COMMIT")
"""


class WriteLockHolder:
    """stop()/start() and stall()/resume(): another process holding the database's write lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.proc: subprocess.Popen[str] | None = None

    def stop(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _HOLD_WRITE_LOCK, str(self.path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "locked"

    def start(self) -> None:
        if self.proc is not None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
            self.proc = None

    stall = stop
    resume = start


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "lock.sqlite"


class TestSqliteContract(
    LockBackendContract, WatchableContract, RowStorageContract, StoreOutageContract, StallContract,
    FencedLogContract, FingerprintedContract,
):
    ttl = 0.5
    clock_slack = 0.005  # the store clock is this host's monotonic clock

    @pytest.fixture
    def make_lock(self, db_path: Path) -> Any:
        # busy_timeout above the stall test's bound, so a prompt return proves the interrupt.
        return lambda: open_lock(str(db_path), "contract", busy_timeout=2.0)

    @pytest.fixture
    def store_control(self, db_path: Path) -> Any:
        holder = WriteLockHolder(db_path)
        yield holder
        holder.start()

    @pytest.fixture
    def store_stall(self, store_control: WriteLockHolder) -> Any:
        return store_control


def test_checker_catches_overlap_and_token_regression() -> None:
    """The history checker must fail histories that break mutual exclusion."""
    ok = History(
        grants=[Grant("a", 1, 1.0, 0.0, 0.01), Grant("b", 2, 1.0, 1.2, 1.21)],
        renewals=[Renewal("a", 1, 1.0, 0.1, 0.11)],
    )
    assert check_history(ok) == []
    overlap = History(grants=[Grant("a", 1, 1.0, 0.0, 0.01), Grant("b", 2, 1.0, 0.5, 0.51)])
    assert any("overlap" in p for p in check_history(overlap))
    released = History(
        grants=overlap.grants, releases=[Release("a", 1, 0.4)]
    )
    assert check_history(released) == []
    late_renewal = History(
        grants=[Grant("a", 1, 1.0, 0.0, 0.01), Grant("b", 2, 1.0, 1.2, 1.21)],
        renewals=[Renewal("a", 1, 1.0, 1.5, 1.51)],
    )
    assert any("succeeded after" in p for p in check_history(late_renewal))
    backwards = History(grants=[Grant("a", 5, 1.0, 0.0, 0.01), Grant("b", 3, 1.0, 2.0, 2.01)])
    assert any("token went back" in p for p in check_history(backwards))
    stale_read = History(
        grants=[Grant("a", 1, 1.0, 0.0, 0.01), Grant("b", 2, 1.0, 2.0, 2.01)],
        observations=[Observation("a", 1, 2.5, 2.51)],
    )
    assert any("went back" in p for p in check_history(stale_read))


@pytest.mark.slow
def test_os_processes_contending_on_one_file(db_path: Path) -> None:
    """Six real processes hammer one database file for three seconds."""
    processes = 6
    merged = run_contender_processes(
        "hedgeplug.lock.sqlite:open_lock",
        {"path": str(db_path), "lock_name": "multi"},
        processes=processes, seconds=3.0, ttl=0.25, min_grants=8, min_holders=3,
    )
    problems = check_history(merged, clock_slack=0.005)
    assert not problems, "\n".join(problems[:20])
    holders = {g.holder for g in merged.grants}
    print(  # shown with -s: what the run covered
        f"{processes} processes: {len(merged.grants)} grants to {len(holders)} holders, "
        f"{len(merged.renewals)} renewals, {len(merged.releases)} releases, "
        f"{merged.calls} calls, {merged.store_errors} store errors"
    )
    assert len(merged.grants) >= 8 and len(holders) >= 3, (len(merged.grants), holders)
    assert merged.store_errors <= merged.calls // 20, (merged.store_errors, merged.calls)


# ------------------------------------------------------------ user mistakes


def test_missing_directory_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "lock.sqlite"
    with pytest.raises(StoreError, match=str(path)):
        open_lock(str(path), "x")


def test_directory_as_path_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="is a directory"):
        open_lock(str(tmp_path), "x")


def test_foreign_file_is_refused_at_start(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"this is not a database, " * 200)
    with pytest.raises(StoreError, match=f"{path}: file exists but is not a SQLite database"):
        open_lock(str(path), "x")


@pytest.mark.anyio
async def test_damaged_database_is_a_store_error_naming_the_path(tmp_path: Path) -> None:
    """A real SQLite file whose pages were overwritten: every call fails cleanly."""
    path = tmp_path / "damaged.sqlite"
    lock = open_lock(str(path), "x")
    assert await lock.acquire("a", "addr", 1.0) is not None
    await lock.aclose()
    with open(path, "r+b") as f:  # keep the header, wreck the schema page
        f.seek(100)
        f.write(b"\xff" * 3900)
    for wal in (tmp_path / "damaged.sqlite-wal", tmp_path / "damaged.sqlite-shm"):
        wal.unlink(missing_ok=True)
    lock = open_lock(str(path), "x")
    try:
        with pytest.raises(StoreError, match=str(path)):
            await lock.current()
        with pytest.raises(StoreError, match=str(path)):
            await lock.acquire("a", "addr", 1.0)
    finally:
        await lock.aclose()


@pytest.mark.anyio
async def test_file_readable_by_plain_sqlite(db_path: Path) -> None:
    """One row per lock name, never deleted: a release keeps the row and its token."""
    lock = open_lock(str(db_path), "rows")
    try:
        lease = await lock.acquire("a", "addr", 1.0)
        assert lease is not None
        await lock.release(lease)
        again = await lock.acquire("b", "addr-b", 1.0)
        assert again is not None and again.token == lease.token + 1
    finally:
        await lock.aclose()
    conn = sqlite3.connect(db_path)
    try:
        rows = conn.execute("SELECT name, holder, token FROM hedgeplug_lease").fetchall()
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        conn.close()
    assert rows == [("rows", "b", lease.token + 1)]
    assert mode == "wal"


class _Ctx:
    cluster = "my cluster/1"
    lock_name = "my-lock"
    id = "n1"


def test_default_path_is_per_user_and_per_cluster(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    path = default_path("my cluster/1")
    assert path == str(tmp_path / "hedgeplug" / "my_cluster_1.sqlite")
    lock = make(SqliteOptions(), _Ctx())
    assert lock.path == path and lock.lock_name == "my-lock"
    assert os.path.isdir(tmp_path / "hedgeplug")
    assert (os.stat(tmp_path / "hedgeplug").st_mode & 0o777) == 0o700


def test_registered_through_the_entry_point() -> None:
    impl = Registry.load().get("lock", "sqlite")
    assert impl.options is SqliteOptions


@pytest.mark.anyio
async def test_calls_run_off_the_event_loop(db_path: Path) -> None:
    """While a call waits on another process's write lock, the event loop keeps running."""
    holder = WriteLockHolder(db_path)
    lock = open_lock(str(db_path), "x", busy_timeout=1.0)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.01)
            ticks += 1

    holder.stop()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(tick)
            with pytest.raises(StoreError, match="locked"):
                await lock.acquire("a", "addr", 1.0)
            tg.cancel_scope.cancel()
    finally:
        holder.start()
        await lock.aclose()
    assert ticks >= 20


@pytest.mark.anyio
async def test_nodes_fail_over_quickly_after_a_graceful_stop(db_path: Path) -> None:
    took = await graceful_failover_seconds({"use": "sqlite", "path": str(db_path)})
    assert took < 1.0, f"failover took {took:.2f}s"


def test_config_reads_sqlite_options_and_names_bad_ones(tmp_path: Path) -> None:
    from hedgeplug.config import load_config
    from hedgeplug.errors import ConfigError

    config = load_config(
        data={"lock": {"use": "sqlite", "path": str(tmp_path / "x.db"), "busy_timeout": "250ms"}},
        env={},
    )
    assert config.lock.options == SqliteOptions(path=str(tmp_path / "x.db"), busy_timeout=0.25)
    with pytest.raises(ConfigError, match="busy_timeout"):
        load_config(data={"lock": {"use": "sqlite", "busy_timeout": "soon"}}, env={})
    with pytest.raises(ConfigError, match="busy_timeout"):
        load_config(data={"lock": {"use": "sqlite", "busy_timeout": 0}}, env={})
