"""Real `hedgeplug run` processes electing a leader through the Spanner
emulator: agreement, failover after SIGKILL of the leader, and a handover
after a graceful stop. Only the leader writes (the others read), so the
emulator's one-read-write-transaction-at-a-time rule is rarely in the way."""

from __future__ import annotations

import signal
import uuid

import anyio
import pytest
from hedgeplug.testing.processes import ProcessCluster

from hedgeplug_spanner.emulator import create_emulator_database

TTL = 3.0
PROJECT = "hedgeplug-test"
INSTANCE = "test-instance"


@pytest.fixture
def anyio_backend():
    return "trio"  # the children are separate processes; one backend here is enough


@pytest.mark.slow
@pytest.mark.anyio
async def test_processes_fail_over_through_spanner(tmp_path, spanner_emulator):
    database = f"procs{uuid.uuid4().hex[:16]}"
    create_emulator_database(spanner_emulator.host, PROJECT, INSTANCE, database)
    cluster = ProcessCluster(tmp_path, cluster=f"spanner-{uuid.uuid4().hex[:8]}")
    # Replace the kit's sqlite lock settings with Spanner ones.
    cluster.overrides = [
        "lock.use=spanner", f"lock.project={PROJECT}", f"lock.instance={INSTANCE}",
        f"lock.database={database}", f"lock.emulator_host={spanner_emulator.host}",
        f"lock.ttl={TTL}s", "transport.use=tcp",
    ]
    async with cluster:
        await cluster.start(3)
        await cluster.wait_agreed(timeout=30)
        leader = cluster.leader_process(await cluster.statuses())
        assert leader is not None

        leader.signal(signal.SIGKILL)
        leader.running = False
        took = await cluster.wait_new_leader(leader.id, timeout=TTL + 10)
        print(f"spanner failover after SIGKILL of the leader: {took:.2f}s (ttl {TTL}s)")
        # Expiry by Spanner's clock a ttl after the last heartbeat, then the
        # polling watch (250 ms) wakes a follower.
        assert took < TTL + 2.0, f"failover after SIGKILL took {took:.2f}s"

        second = cluster.leader_process(await cluster.statuses())
        assert second is not None
        # Let the others settle into reading: on the emulator a release that
        # collides with a contender's read-write transaction waits in the
        # emulator's retry backoff, and may outlast the node's stop timeout.
        await anyio.sleep(1.0)
        cluster.terminate(second)
        second.running = False
        took = await cluster.wait_new_leader(second.id, timeout=TTL + 10)
        print(f"spanner handover after SIGTERM of the leader: {took:.2f}s")
        assert took < 1.5, f"handover after a graceful stop took {took:.2f}s"
