"""The core issue's cluster check through one lease file: three `hedgeplug
run` processes, SIGKILL the leader (failover bounded by the lease ttl), then
SIGTERM the new one (release + watch: a quick handover)."""

from __future__ import annotations

import uuid

import pytest
from hedgeplug.testing.processes import ProcessCluster, measure_failover

TTL = 2.0


@pytest.fixture
def anyio_backend():
    return "trio"  # the nodes are separate processes; one event loop here is enough


@pytest.mark.slow
@pytest.mark.anyio
async def test_three_processes_fail_over_through_the_file(tmp_path):
    cluster = ProcessCluster(
        tmp_path,
        cluster=f"filelock-{uuid.uuid4().hex[:8]}",
        overrides=["lock.use=filelock", f"lock.path={tmp_path / 'lease.json'}", f"lock.ttl={TTL}s"],
    )
    async with cluster:
        figures = await measure_failover(cluster, nodes=3, ttl=TTL)
    print(f"filelock, 3 processes, ttl {TTL}s: {figures}")
    # The killed leader's lease runs out a ttl after its last renewal (sent up
    # to ttl/4 before the kill), then a contender's next try or the watch takes it.
    assert figures.killed_leader_replaced < TTL + 2.0
    assert figures.stopped_leader_replaced < 1.5
