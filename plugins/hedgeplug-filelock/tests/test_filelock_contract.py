"""The lock contract suites hedgeplug ships, run against the filelock backend:
several backend instances on one file, another process holding the flock as
an outage and as a stall, and real OS processes contending on one file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flock_holder import FlockHolder
from hedgeplug.testing.lock_contract import (
    FingerprintedContract,
    LockBackendContract,
    StallContract,
    StoreOutageContract,
    WatchableContract,
    check_history,
    graceful_failover_seconds,
)
from hedgeplug.testing.lock_processes import run_contender_processes

from hedgeplug_filelock import open_lock


@pytest.fixture
def lease_path(tmp_path: Path) -> Path:
    return tmp_path / "lease.json"


class TestFileLockContract(
    LockBackendContract, WatchableContract, StoreOutageContract, StallContract, FingerprintedContract
):
    ttl = 0.5
    clock_slack = 0.005  # the store clock is this host's monotonic clock

    @pytest.fixture
    def make_lock(self, lease_path: Path) -> Any:
        # lock_timeout above the stall test's bound, so a prompt return proves
        # that waiting for the flock stops when the caller gives up.
        return lambda: open_lock(str(lease_path), "contract", lock_timeout=2.0)

    @pytest.fixture
    def store_control(self, lease_path: Path) -> Any:
        holder = FlockHolder(lease_path)
        yield holder
        holder.start()

    @pytest.fixture
    def store_stall(self, store_control: FlockHolder) -> Any:
        return store_control


@pytest.mark.slow
def test_os_processes_contending_on_one_file(lease_path: Path) -> None:
    """Six real processes hammer one lease file for three seconds."""
    merged = run_contender_processes(
        "hedgeplug_filelock:open_lock",
        {"path": str(lease_path), "lock_name": "multi"},
        processes=6, seconds=3.0, ttl=0.25, min_grants=8, min_holders=3,
    )
    problems = check_history(merged, clock_slack=0.005)
    assert not problems, "\n".join(problems[:20])
    holders = {g.holder for g in merged.grants}
    assert len(merged.grants) >= 8 and len(holders) >= 3, (len(merged.grants), holders)
    assert merged.store_errors <= merged.calls // 20, (merged.store_errors, merged.calls)


@pytest.mark.anyio
async def test_nodes_fail_over_quickly_after_a_graceful_stop(lease_path: Path) -> None:
    """Release plus watch() hand the lock over well before the 20 s ttl."""
    took = await graceful_failover_seconds({"use": "filelock", "path": str(lease_path)})
    assert took < 1.0, f"failover took {took:.2f}s"
