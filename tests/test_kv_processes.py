"""The key/value log across five real `hedgeplug run` processes on the
sqlite store: writes and reads through every node while the leader is
SIGKILLed twice and the next one SIGSTOPped past its lease (see
hedgeplug.testing.kv_processes for what is checked)."""

from __future__ import annotations

import pytest

from hedgeplug.testing.kv_processes import run_kv_faults
from hedgeplug.testing.processes import ProcessCluster

TTL = 2.0


@pytest.fixture
def anyio_backend():
    return "trio"  # the nodes are separate processes; one backend here is enough


@pytest.mark.slow
@pytest.mark.anyio
async def test_kv_through_leader_kills_and_a_stopped_leader_on_sqlite(tmp_path):
    async with ProcessCluster(tmp_path, cluster="kv-sqlite", overrides=[f"lock.ttl={TTL}s"]) as cluster:
        run = await run_kv_faults(cluster)
    print(f"sqlite: {run}")
    assert run.problems == []
    assert run.stale_probe_refused
    assert run.acked >= 100 and run.reads >= 100
    assert len(set(run.leaders)) == 4
