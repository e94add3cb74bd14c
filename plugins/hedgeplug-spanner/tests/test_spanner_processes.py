"""The core issue's cluster check through the Spanner emulator: five
`hedgeplug run` processes, SIGKILL the leader, then SIGTERM the new one.
Only the leader writes (the others read), so the emulator's
one-read-write-transaction-at-a-time rule is rarely in the way."""

from __future__ import annotations

import uuid

import pytest
from hedgeplug.testing.processes import ProcessCluster, measure_failover

from hedgeplug_spanner.emulator import create_emulator_database

TTL = 3.0
PROJECT = "hedgeplug-test"
INSTANCE = "test-instance"


@pytest.fixture
def anyio_backend():
    return "trio"  # the children are separate processes; one backend here is enough


@pytest.mark.slow
@pytest.mark.anyio
async def test_five_processes_fail_over_through_spanner(tmp_path, spanner_emulator):
    database = f"procs{uuid.uuid4().hex[:16]}"
    create_emulator_database(spanner_emulator.host, PROJECT, INSTANCE, database)
    cluster = ProcessCluster(
        tmp_path,
        cluster=f"spanner-{uuid.uuid4().hex[:8]}",
        overrides=[
            "lock.use=spanner", f"lock.project={PROJECT}", f"lock.instance={INSTANCE}",
            f"lock.database={database}", f"lock.emulator_host={spanner_emulator.host}",
            f"lock.ttl={TTL}s",
        ],
    )
    async with cluster:
        # On the emulator a release that collides with a contender's read-write
        # transaction waits in the emulator's retry backoff; let reads settle first.
        figures = await measure_failover(cluster, nodes=5, ttl=TTL, settle_before_stop=1.0)
    print(f"spanner emulator, 5 processes, ttl {TTL}s: {figures}")
    # Expiry by Spanner's clock a ttl after the last heartbeat, then the
    # polling watch (250 ms) wakes a contender.
    assert figures.killed_leader_replaced < TTL + 2.0
    assert figures.agreed_after_kill < TTL + 2 * 1.0 + 3.0
    assert figures.stopped_leader_replaced < 1.5
