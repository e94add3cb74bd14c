"""The key/value log across five real `hedgeplug run` processes on the
Spanner emulator: writes and reads through every node while the leader is
SIGKILLed twice and the next one SIGSTOPped past its lease (what is checked:
hedgeplug.testing.kv_processes)."""

from __future__ import annotations

import uuid

import pytest
from hedgeplug.testing.kv_processes import run_kv_faults
from hedgeplug.testing.processes import ProcessCluster

from hedgeplug_spanner.emulator import create_emulator_database

TTL = 2.0
PROJECT = "hedgeplug-test"
INSTANCE = "test-instance"


@pytest.fixture
def anyio_backend():
    return "trio"  # the nodes are separate processes; one backend here is enough


@pytest.mark.slow
@pytest.mark.anyio
async def test_kv_through_leader_kills_and_a_stopped_leader_on_spanner(tmp_path, spanner_emulator):
    database = f"kvprocs{uuid.uuid4().hex[:16]}"
    create_emulator_database(spanner_emulator.host, PROJECT, INSTANCE, database)
    cluster = ProcessCluster(
        tmp_path,
        cluster=f"kv-spanner-{uuid.uuid4().hex[:8]}",
        overrides=[
            "lock.use=spanner", f"lock.project={PROJECT}", f"lock.instance={INSTANCE}",
            f"lock.database={database}", f"lock.emulator_host={spanner_emulator.host}",
            f"lock.ttl={TTL}s",
        ],
    )
    async with cluster:
        run = await run_kv_faults(cluster)
    print(f"spanner emulator: {run}")
    assert run.problems == []
    assert run.stale_probe_refused
    assert run.acked >= 50 and run.reads >= 100
    assert len(set(run.leaders)) == 4
