"""The gossip membership on the deterministic simulator: small versions of
the acceptance runs (the simulator checks single leader, fencing, convergence
within its bound and no flapping on every run). Larger runs and their
figures are in docs/gossip.md."""

from __future__ import annotations

from typing import Any

from hedgeplug.membership.gossip.settings import PROFILES
from hedgeplug.membership.gossip.suspicion import suspicion_bounds
from hedgeplug.sim.harness import Result, Simulation
from hedgeplug.sim.network import Latency
from hedgeplug.sim.scenarios import load_scenario

LAN = PROFILES["lan"]


def run(name: str, seed: int, options: dict[str, Any] | None = None, **params: Any) -> Result:
    spec = load_scenario(name)
    bound = spec.bind(params)
    sim = Simulation(seed, membership="gossip", membership_options=options or {})
    return sim.run(lambda s: spec.run(s, **bound), name=name, params=bound)


def test_scale_up_by_48_ends_in_one_group_every_time() -> None:
    for seed in (1, 2, 3):
        result = run("scale-up", seed, k=48, settle=20.0)
        assert result.ok, result.first_violation
        assert result.metrics["final_groups"] == 1 and result.metrics["final_size"] == 50


def test_without_healing_the_same_scale_up_splits() -> None:
    # Proof the scenario bites: plain SWIM with Service-style joins.
    results = [run("scale-up", seed, {"heal": False}, k=48, settle=20.0) for seed in (1, 2, 3)]
    assert sum(r.metrics["final_groups"] > 1 for r in results) >= 2


def test_a_partition_with_the_leader_cut_off_heals_into_one_group() -> None:
    result = run("partition-heal", 1, size=10, with_leader=True, duration=20.0, settle=30.0)
    assert result.ok, result.first_violation
    assert result.metrics["final_groups"] == 1


def test_churn_converges_without_flapping() -> None:
    result = run("churn", 2, size=12, duration=40.0, every=2.0, settle=40.0)
    assert result.ok, result.first_violation


def detection_bound(n: int) -> float:
    _, high = suspicion_bounds(n, LAN["probe_interval"], LAN["suspicion_mult"], 6)
    return n * LAN["probe_interval"] + high + 10 * LAN["gossip_interval"]


SLOW = Latency(0.1, 0.1, "exponential")


async def lossy_with_slow_node(sim: Any, out: dict[str, Any], slow_latency: Latency = SLOW) -> None:
    n = 10
    nodes = await sim.start(n)
    await sim.sleep(15)
    # The slow node's round trip averages 0.4s against the 0.5s probe timeout:
    # many probes of it fail, and Lifeguard must keep it alive.
    slow, victim = nodes[1], nodes[-1]
    bad = slow_latency
    sim.faults.links(loss=0.05)
    sim.faults.links(latency=bad, loss=0.05, src=slow)
    sim.faults.links(latency=bad, loss=0.05, dst=slow)
    await sim.sleep(120)
    out["dead_before_crash"] = sum(
        sn.node.counters.get("gossip.dead", 0) for sn in sim.running() if sn.node is not None
    )
    # The trouble bites: the slow node was accused and had to refute.
    out["refuted"] = slow.node.counters.get("gossip.refuted", 0)
    sim.faults.crash(victim)
    await sim.sleep(detection_bound(n))


def test_loss_and_a_slow_node_kill_nobody_healthy_and_a_crash_is_still_detected() -> None:
    out: dict[str, Any] = {}
    sim = Simulation(3, membership="gossip", convergence_bound=detection_bound(10))
    result = sim.run(lambda s: lossy_with_slow_node(s, out), name="lossy-slow")
    assert out["dead_before_crash"] == 0 and out["refuted"] > 0
    assert result.ok, result.first_violation  # no flapping; converged after the crash
    detection = result.metrics["detection_time"]
    assert detection is not None and detection["max"] < detection_bound(10)


async def mass_crash(sim: Any, size: int, crashed: int) -> None:
    nodes = await sim.start(size)
    await sim.sleep(15)
    for sn in nodes[1 : 1 + crashed]:
        sim.faults.crash(sn)
    await sim.sleep(detection_bound(size) + LAN["probe_interval"])


def test_a_mass_crash_is_detected_everywhere_within_the_stated_bound() -> None:
    # The few survivors must find every victim themselves: the slow case of SWIM.
    bound = detection_bound(20) + LAN["probe_interval"]
    sim = Simulation(4, membership="gossip", convergence_bound=bound)
    result = sim.run(lambda s: mass_crash(s, 20, 14), name="mass-crash")
    assert result.ok, result.first_violation
    assert result.metrics["detection_time"]["count"] == 14
    assert result.metrics["detection_time"]["max"] < bound


def test_a_single_crash_leaves_every_view_in_about_five_seconds() -> None:
    # A probe (1s) finds it, relays confirm, the accuser watches it for
    # confirmed_suspicion (2s), the death spreads and is believed: ~4-5s,
    # where the Lifeguard minimum alone was 4 * log10(20) = 5.2s plus pings.
    times = []
    for seed in (1, 2, 3):
        sim = Simulation(seed, membership="gossip", convergence_bound=detection_bound(20))
        result = sim.run(lambda s: mass_crash(s, 20, 1), name="one-crash")
        assert result.ok, result.first_violation
        times.append(result.metrics["detection_time"]["max"])
    assert sorted(times)[1] <= 5.0, times
