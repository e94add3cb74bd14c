"""A write taken by new owners before the hand-off reaches them must still
win over the older value being handed to them.

Two members join at once; for the keys both of them now own, neither holds
anything yet. A write through one of the joiners carries a version from the
joiner's young Lamport clock, lower than the version the old owners hold.
Unless the new owners first learn the key's version from its previous
owners, they take that write, acknowledge it, and then let the older value
arriving by hand-off replace it: an acknowledged write lost."""

from __future__ import annotations

import anyio
import pytest
from cache_cluster import CacheCluster

pytestmark = pytest.mark.anyio


async def test_a_write_to_new_owners_during_hand_off_is_not_undone_by_it():
    async with anyio.create_task_group() as tg:
        # A slow hand-off (long debounce is not configurable; a low rate is):
        # the joiners' writes land before the old values reach them.
        cluster = CacheCluster(tg, handoff_grace=1.0, repair_interval=0.5)
        a = await cluster.start("a")
        await cluster.start("b")
        await cluster.settle(2)
        keys = [f"key{i:04d}".encode() for i in range(400)]
        for round_ in range(3):  # the old owners' clocks run well ahead of a joiner's
            await a.set_many({k: f"old{round_}" for k in keys})
        c = await cluster.start("c")
        await cluster.start("d")
        await cluster.settle(4)
        moved = [k for k in keys if cluster.owners(k) == {"c", "d"}]
        assert len(moved) > 20
        assert c.clock.counter < a.clock.counter
        for k in moved:
            await c.set(k, "new")
        await cluster.placed(keys, timeout=60)
        lost = [k for k in moved if await a.get(k) != "new"]
        assert lost == []
        cluster.close()
