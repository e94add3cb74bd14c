"""The distributed semaphore through the Spanner emulator: the walk-through
in this process (trio and asyncio), and 20 processes contending for 3 slots
while holders are SIGKILLed or SIGSTOPped past their lease."""

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
    # 20 nodes each polling up to 4 watched rows every 250 ms keep the emulator busy
    # with reads; a poll per second leaves room for the writes. Hand-overs are slow on
    # the emulator (one read-write transaction at a time; contenders that meet are
    # aborted), so holds are longer and the run too.
    run = run_semaphore_processes(
        tmp_path, lock(spanner_emulator, watch_interval="1s"), processes=20, limit=3,
        seconds=30.0, kills=5, freezes=2, ttl=TTL, hold=(0.5, 1.5), cluster="spannersem",
    )
    print(f"spanner: {len(run.holds)} holds, {len(run.kills)} kills, {len(run.freezes)} freezes, {run.lost} lost")
    assert_semaphore_run(run, 3, TTL, slack=2.0, min_holds=15)
