"""Gossip between real `hedgeplug run` OS processes over udp with the sqlite
lock: agree, lose one to SIGKILL, lose one to SIGTERM, take a new one in."""

from __future__ import annotations

import pytest

from hedgeplug.testing.processes import ProcessCluster

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

FAST = [
    "membership.use=gossip",
    "membership.profile=local",
    "membership.probe_interval=200ms",
    "membership.probe_timeout=100ms",
    "membership.gossip_interval=50ms",
    "membership.anchor_interval=500ms",
    "membership.heal_after=500ms",
    "lock.ttl=2s",
]
# Crash bound for these timings and 4 members: one probe pass (0.8s), the
# longest unconfirmed suspicion (3 * 0.2s * 6 = 3.6s), the last-chance ping
# (0.2s), then gossip; generous for a shared machine.
CRASH_BOUND = 8.0


@pytest.fixture
def anyio_backend() -> str:
    return "trio"


async def test_processes_agree_detect_a_crash_and_a_leave_and_take_a_new_one(tmp_path) -> None:
    async with ProcessCluster(
        tmp_path, cluster="gossip-procs", overrides=FAST, transport="udp"
    ) as cluster:
        await cluster.start(4)
        await cluster.wait_agreed(timeout=20)

        victim = next(n for n in cluster.live if n.id == "n3")
        cluster.kill(victim)
        took = await cluster.wait_agreed(timeout=CRASH_BOUND)
        assert took < CRASH_BOUND

        leaver = next(n for n in cluster.live if n.id == "n2")
        await cluster.stop(leaver)
        assert await cluster.wait_agreed(timeout=2.0) < 2.0

        await cluster.add()
        assert await cluster.wait_agreed(timeout=5.0) < 5.0
