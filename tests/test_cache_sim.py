"""The cache scenarios on the simulator (many real nodes, virtual time,
the in-process lock and network): their checkers hold, and runs replay."""

from __future__ import annotations

import pytest

from hedgeplug.sim import Simulation, load_scenario
from hedgeplug.sim.cache_checks import MonotonicReads, SettledPlacement
from hedgeplug.sim.scenarios import _from_module


def _spec(module: str):
    import importlib

    return _from_module(importlib.import_module(f"hedgeplug.sim.scenarios.{module}"), module)


def run(module: str, membership: str = "heartbeat", seed: int = 1, **params):
    spec = _spec(module)
    bound = spec.bind(params)
    sim = Simulation(seed=seed, membership=membership)
    result = sim.run(lambda s: spec.run(s, **bound), name=spec.name, params=bound)
    return sim, result


def cache_checker(sim, kind):
    return next(c for c in sim.checkers if isinstance(c, kind))


@pytest.mark.parametrize("membership", ["heartbeat", "gossip"])
def test_cache_scale_up(membership):
    sim, result = run("cache_scale_up", membership, k=20, keys=200, settle=25.0)
    assert result.ok, result.first_violation
    placement = cache_checker(sim, SettledPlacement)
    assert placement.checked_keys == 200  # every key written, every key where it belongs


@pytest.mark.parametrize("membership", ["heartbeat", "gossip"])
def test_cache_partition(membership):
    sim, result = run("cache_partition", membership, size=8, with_leader=membership == "heartbeat")
    assert result.ok, result.first_violation
    assert cache_checker(sim, SettledPlacement).checked_keys == 300


def test_cache_spiky_with_crashes():
    sim, result = run("cache_spiky", high=40, duration=60.0, every=4.0, jump=0.2, keys=200)
    assert result.ok, result.first_violation
    assert result.nodes_started > 20
    assert cache_checker(sim, SettledPlacement).checked_keys > 150


def test_cache_runs_replay():
    _, first = run("cache_scale_up", k=8, keys=100, settle=15.0, seed=7)
    _, again = run("cache_scale_up", k=8, keys=100, settle=15.0, seed=7)
    assert first.digest == again.digest


def test_checkers_catch_what_they_check():
    """Each checker reports when its invariant is broken on purpose."""
    reports: list[tuple[str, str]] = []

    def report(name: str, message: str) -> None:
        reports.append((name, message))

    reads = MonotonicReads()
    reads.on_read(1.0, "n1", b"k", (5, "a"), report)
    reads.on_read(2.0, "n1", b"k", (4, "z"), report)
    reads.on_read(2.0, "n2", b"k", (4, "z"), report)  # another reader: fine
    assert [name for name, _ in reports] == ["cache-monotonic-read"]

    # A lost write and a misplaced key, made by dropping copies behind the cache's back.
    reports.clear()

    async def scenario(sim):
        from hedgeplug.sim.cache_world import CacheWorld

        world = CacheWorld(sim, keys=20, op_every=1000.0)
        async with world.running():
            await world.start(3)
            await sim.sleep(3.0)
            await world.prefill()
            for _, cache in world.live_caches():
                cache.store.drop(b"key00001")
            node, cache = world.live_caches()[0]
            key = next(k for k in world.keys if node not in cache.placement().owners(k))
            cache.store.apply(key, b"\xc0", (10**6, "x"), None)
            cache.handoff._drop_at.clear()  # keep the stray copy past the settle time
            await sim.sleep(1.0)

    sim = Simulation(seed=3)
    result = sim.run(scenario)
    assert set(result.violation_counts) == {"cache-no-lost-write", "cache-placement"}


def test_scenarios_load_as_scenario_files():
    import os

    import hedgeplug.sim.scenarios as scenarios

    folder = os.path.dirname(scenarios.__file__)
    for module, name in (
        ("cache_scale_up", "cache-scale-up"),
        ("cache_spiky", "cache-spiky"),
        ("cache_partition", "cache-partition"),
    ):
        spec = load_scenario(os.path.join(folder, module + ".py"))
        assert spec.name == name
        assert spec.params["plot"][0] == ""
