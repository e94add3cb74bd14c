"""The deterministic simulator: many real nodes in one process on trio's
MockClock, over the memory lock and the memory transport on the simulator's
fault-injecting network (network.py).

    from hedgeplug.sim import Simulation, load_scenario
    spec = load_scenario("leader-kill")
    params = spec.bind({"size": 5})
    result = Simulation(seed=1).run(lambda sim: spec.run(sim, **params))
    print(result.digest, result.metrics["failover_time"])

See docs/simulator.md.
"""

from __future__ import annotations

from .harness import Result, SimNode, Simulation
from .network import Latency, LinkFaults
from .scenarios import ScenarioSpec, load_scenario
from .trace import Violation

__all__ = [
    "Latency",
    "LinkFaults",
    "Result",
    "ScenarioSpec",
    "SimNode",
    "Simulation",
    "Violation",
    "load_scenario",
]
