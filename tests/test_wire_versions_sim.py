"""The version rule in the simulator: a cluster holding nodes pinned to the
older wire version (as nodes of the previous release are) writes that version
everywhere and drops nothing; once they are restarted unpinned, every node
writes the newest one without a restart of its own. Virtual time, both
membership strategies."""

from __future__ import annotations

from typing import Any

import pytest

from hedgeplug.sim.harness import Simulation
from hedgeplug.versions import WIRE_VERSION_ENV


def wire_in_use(sim: Simulation) -> dict[str, int]:
    return {sn.id: sn.node.parts.dispatcher.versions.in_use for sn in sim.running()}


def dropped(sim: Simulation) -> int:
    return sum(sn.node.counters.get("drop.version", 0) for sn in sim.running())


@pytest.mark.parametrize("membership", ["heartbeat", "gossip"])
def test_a_simulated_cluster_moves_up_once_its_pinned_members_come_back_unpinned(membership, monkeypatch):
    seen: dict[str, Any] = {}

    async def scenario(sim: Simulation) -> None:
        monkeypatch.setenv(WIRE_VERSION_ENV, "1")  # read as each node is built
        pinned = await sim.start(2)
        monkeypatch.delenv(WIRE_VERSION_ENV)
        await sim.start(4)
        await sim.sleep(20)
        seen["mixed"], seen["mixed drops"] = wire_in_use(sim), dropped(sim)
        for sn in pinned:  # the rolling upgrade, one node after the other
            await sim.restart(sn, graceful=True)
            await sim.sleep(10)
        await sim.sleep(10)
        seen["upgraded"], seen["upgraded drops"] = wire_in_use(sim), dropped(sim)
        seen["moved"] = sorted(sn.node.counters.get("wire.now-v2", 0) for sn in sim.running())

    result = Simulation(5, membership=membership).run(scenario)
    assert result.ok, result.first_violation
    assert len(seen["mixed"]) == 6 and set(seen["mixed"].values()) == {1}
    assert len(seen["upgraded"]) == 6 and set(seen["upgraded"].values()) == {2}
    assert seen["mixed drops"] == 0 and seen["upgraded drops"] == 0
    # Every node counted its move to 2 (a gossip node may count more than one: it
    # learns members one by one, and writes 2 until it hears of a pinned one).
    assert min(seen["moved"]) >= 1
    if membership == "heartbeat":  # the leader hands out whole views: exactly one move each
        assert seen["moved"] == [1] * 6
