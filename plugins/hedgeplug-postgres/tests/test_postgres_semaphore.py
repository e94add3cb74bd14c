"""The distributed semaphore through a real PostgreSQL: the walk-through in
this process (trio and asyncio), and 20 processes contending for 3 slots
while holders are SIGKILLed or SIGSTOPped past their lease."""

from __future__ import annotations

import uuid

import pytest
from hedgeplug.testing.semaphore_processes import assert_semaphore_run, run_semaphore_processes
from hedgeplug.testing.semaphore_store import check_semaphore_on_store

TTL = 3.0


@pytest.mark.anyio
async def test_semaphore_walk_through_on_postgres(postgres_server):
    figures = await check_semaphore_on_store(
        {"use": "postgres", "dsn": postgres_server.dsn}, cluster=f"pgsem-{uuid.uuid4().hex[:8]}"
    )
    # LISTEN/NOTIFY wakes the waiter long before its retry period (a whole ttl, jittered).
    assert figures["handover"] < 1.0, figures


@pytest.mark.slow
def test_twenty_processes_never_hold_more_than_three_on_postgres(tmp_path, postgres_server):
    run = run_semaphore_processes(
        tmp_path, {"use": "postgres", "dsn": postgres_server.dsn},
        processes=20, limit=3, seconds=15.0, kills=5, freezes=2, ttl=TTL, cluster=f"pgsem-{uuid.uuid4().hex[:8]}",
    )
    print(f"postgres: {len(run.holds)} holds, {len(run.kills)} kills, {len(run.freezes)} freezes, {run.lost} lost")
    assert_semaphore_run(run, 3, TTL)
