"""The core issue's cluster check through a real PostgreSQL: five
`hedgeplug run` processes, SIGKILL the leader (failover bounded by the lease
ttl), then SIGTERM the new one (release + LISTEN/NOTIFY: a quick handover)."""

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
async def test_five_processes_fail_over_through_postgres(tmp_path, postgres_server):
    cluster = ProcessCluster(
        tmp_path,
        cluster=f"pg-{uuid.uuid4().hex[:8]}",
        overrides=["lock.use=postgres", f"lock.dsn={postgres_server.dsn}", f"lock.ttl={TTL}s"],
    )
    async with cluster:
        figures = await measure_failover(cluster, nodes=5, ttl=TTL)
    print(f"postgres, 5 processes, ttl {TTL}s: {figures}")
    # Expiry by the database clock a ttl after the last renewal (sent up to
    # ttl/4 before the kill), then the next contender poll (ttl/4).
    assert figures.killed_leader_replaced < TTL + 2.0
    assert figures.agreed_after_kill < TTL + 2 * 1.0 + 3.0
    assert figures.stopped_leader_replaced < 1.0
