"""The distributed semaphore through a real etcd: the walk-through in this
process (trio and asyncio), and 20 processes contending for 3 slots while
holders are SIGKILLed or SIGSTOPped past their lease."""

from __future__ import annotations

import uuid

import pytest
from hedgeplug.testing.semaphore_processes import assert_semaphore_run, run_semaphore_processes
from hedgeplug.testing.semaphore_store import check_semaphore_on_store

TTL = 3.0


def lock(etcd_server) -> dict:
    return {"use": "etcd", "endpoints": list(etcd_server.endpoints), "prefix": f"sem-{uuid.uuid4().hex}/"}


@pytest.mark.anyio
async def test_semaphore_walk_through_on_etcd(etcd_server):
    figures = await check_semaphore_on_store(lock(etcd_server), cluster="etcdsem")
    # The etcd watch wakes the waiter long before its retry period (a whole ttl, jittered).
    assert figures["handover"] < 1.0, figures


@pytest.mark.slow
def test_twenty_processes_never_hold_more_than_three_on_etcd(tmp_path, etcd_server):
    run = run_semaphore_processes(
        tmp_path, lock(etcd_server), processes=20, limit=3, seconds=15.0, kills=5, freezes=2, ttl=TTL,
        cluster="etcdsem",
    )
    print(f"etcd: {len(run.holds)} holds, {len(run.kills)} kills, {len(run.freezes)} freezes, {run.lost} lost")
    # etcd leases are whole seconds, rounded up: a slot may outlive the ttl by up to a second.
    assert_semaphore_run(run, 3, TTL, slack=2.0)
