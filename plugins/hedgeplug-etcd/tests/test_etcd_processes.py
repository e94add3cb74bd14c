"""The core issue's cluster check through a real etcd: five `hedgeplug run`
processes, SIGKILL the leader (failover bounded by the lease ttl), then
SIGTERM the new one (release + watch: a quick handover)."""

from __future__ import annotations

import uuid

import pytest
from hedgeplug.testing.processes import ProcessCluster, measure_failover

TTL = 3.0


@pytest.fixture
def anyio_backend():
    return "trio"  # the children are separate processes; one backend here is enough


@pytest.mark.slow
@pytest.mark.anyio
async def test_five_processes_fail_over_through_etcd(tmp_path, etcd_server):
    cluster = ProcessCluster(
        tmp_path,
        cluster=f"etcd-{uuid.uuid4().hex[:8]}",
        overrides=[
            "lock.use=etcd",
            f"lock.endpoints={','.join(etcd_server.endpoints)}",
            f"lock.prefix=processes-{uuid.uuid4().hex}/",
            f"lock.ttl={TTL}s",
        ],
    )
    async with cluster:
        figures = await measure_failover(cluster, nodes=5, ttl=TTL)
    print(f"etcd, 5 processes, ttl {TTL}s: {figures}")
    # The lease runs out a ttl after the last keepalive (sent up to ttl/4
    # before the kill), etcd's expiry sweep takes up to 0.5 s more, then the
    # watch wakes a contender.
    assert figures.killed_leader_replaced < TTL + 3.0
    assert figures.agreed_after_kill < TTL + 2 * 1.0 + 3.0
    assert figures.stopped_leader_replaced < 1.5
