"""Real `hedgeplug run` processes electing a leader through a real etcd:
agreement, failover after SIGKILL of the leader (bounded by the lease ttl),
and a quick handover after a graceful stop (release + watch)."""

from __future__ import annotations

import signal
import uuid

import anyio
import pytest
from hedgeplug.testing.processes import ProcessCluster

TTL = 3.0


@pytest.fixture
def anyio_backend():
    return "trio"  # the children are separate processes; one backend here is enough


def _etcd_cluster(workdir, endpoints: list[str]) -> ProcessCluster:
    cluster = ProcessCluster(workdir, cluster=f"etcd-{uuid.uuid4().hex[:8]}")
    # Replace the kit's sqlite lock settings with etcd ones.
    cluster.overrides = [
        "lock.use=etcd",
        f"lock.endpoints={','.join(endpoints)}",
        f"lock.prefix=processes-{uuid.uuid4().hex}/",
        f"lock.ttl={TTL}s",
        "transport.use=tcp",
    ]
    return cluster


@pytest.mark.slow
@pytest.mark.anyio
async def test_processes_fail_over_through_etcd(tmp_path, etcd_server):
    async with _etcd_cluster(tmp_path, etcd_server.endpoints) as cluster:
        await cluster.start(3)
        await cluster.wait_agreed(timeout=30)
        statuses = await cluster.statuses()
        leader = cluster.leader_process(statuses)
        assert leader is not None

        leader.signal(signal.SIGKILL)
        leader.running = False
        took = await cluster.wait_new_leader(leader.id, timeout=TTL + 10)
        # The lease runs out in etcd a ttl after the leader's last keepalive (which
        # came up to one renew period before the kill), then etcd's expiry sweep
        # (up to 0.5 s) deletes the key and the watch wakes the followers.
        print(f"etcd failover after SIGKILL of the leader: {took:.2f}s (ttl {TTL}s)")
        assert took < TTL + 3.0, f"failover after SIGKILL took {took:.2f}s"

        statuses = await cluster.statuses()
        second = cluster.leader_process(statuses)
        assert second is not None
        cluster.terminate(second)
        second.running = False
        started = anyio.current_time()
        took = await cluster.wait_new_leader(second.id, timeout=TTL + 10)
        print(f"etcd handover after SIGTERM of the leader: {took:.2f}s")
        assert took < 1.5, f"handover after a graceful stop took {took:.2f}s (watch not used?)"
        assert anyio.current_time() - started < TTL
