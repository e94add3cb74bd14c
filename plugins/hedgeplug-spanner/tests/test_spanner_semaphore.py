"""The distributed semaphore through the Spanner emulator: the walk-through
in this process (trio and asyncio), and 20 processes contending for 3 slots
while holders are SIGKILLed."""

from __future__ import annotations

import uuid

import pytest
from hedgeplug.testing.semaphore_processes import assert_semaphore_run, run_semaphore_processes
from hedgeplug.testing.semaphore_store import check_semaphore_on_store

from hedgeplug_spanner.emulator import create_emulator_database

TTL = 3.0
PROJECT = "hedgeplug-test"
INSTANCE = "test-instance"


def lock(spanner_emulator, **options: str) -> dict:
    database = f"sem{uuid.uuid4().hex[:16]}"
    create_emulator_database(spanner_emulator.host, PROJECT, INSTANCE, database)
    return {"use": "spanner", "project": PROJECT, "instance": INSTANCE, "database": database,
            "emulator_host": spanner_emulator.host, **options}


@pytest.mark.anyio
async def test_semaphore_walk_through_on_spanner(spanner_emulator):
    figures = await check_semaphore_on_store(lock(spanner_emulator), cluster="spannersem")
    # The polling watch (watch_interval) wakes the waiter before its retry period (a whole ttl).
    assert figures["handover"] < 1.5, figures


@pytest.mark.slow
def test_twenty_processes_never_hold_more_than_three_on_spanner(tmp_path, spanner_emulator):
    run = run_semaphore_processes(
        # 20 nodes each polling up to 4 watched rows every 250 ms keep the emulator
        # busy with reads; a poll per second leaves room for the writes.
        tmp_path, lock(spanner_emulator, watch_interval="1s"), processes=20, limit=3, seconds=20.0, kills=5, ttl=TTL,
        cluster="spannersem",
    )
    print(f"spanner: {len(run.holds)} holds, {len(run.kills)} kills, {run.lost} lost")
    # The emulator runs one read-write transaction at a time: aborted attempts slow hand-overs.
    assert_semaphore_run(run, 3, TTL, slack=2.0)
