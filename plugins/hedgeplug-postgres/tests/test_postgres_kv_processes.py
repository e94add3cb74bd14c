"""The key/value log across five real `hedgeplug run` processes on
PostgreSQL: writes and reads through every node while the leader is SIGKILLed
twice and the next one SIGSTOPped past its lease (what is checked:
hedgeplug.testing.kv_processes)."""

from __future__ import annotations

import uuid

import pytest
from hedgeplug.testing.kv_processes import run_kv_faults
from hedgeplug.testing.processes import ProcessCluster

TTL = 2.0


@pytest.fixture
def anyio_backend():
    return "trio"  # the nodes are separate processes; one backend here is enough


@pytest.mark.slow
@pytest.mark.anyio
async def test_kv_through_leader_kills_and_a_stopped_leader_on_postgres(tmp_path, postgres_server):
    cluster = ProcessCluster(
        tmp_path,
        cluster=f"kv-pg-{uuid.uuid4().hex[:8]}",
        overrides=["lock.use=postgres", f"lock.dsn={postgres_server.dsn}", f"lock.ttl={TTL}s"],
    )
    async with cluster:
        run = await run_kv_faults(cluster)
    print(f"postgres: {run}")
    assert run.problems == []
    assert run.stale_probe_refused
    assert run.acked >= 100 and run.reads >= 100
    assert len(set(run.leaders)) == 4
