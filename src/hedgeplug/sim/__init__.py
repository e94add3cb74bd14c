"""The deterministic simulator: many real nodes in one process on trio's
MockClock, over the memory lock and memory transport (simulator parts).

    from hedgeplug.sim import Simulation, load_scenario
    spec = load_scenario("leader-kill")
    params = spec.bind({"size": 5})
    result = Simulation(seed=1).run(lambda sim: spec.run(sim, **params))
    print(result.digest, result.metrics["failover_time"])

See docs/simulator.md.
"""

from __future__ import annotations

from .harness import Result, SimNode, Simulation
from .scenarios import ScenarioSpec, load_scenario
from .trace import Violation

__all__ = ["Result", "ScenarioSpec", "SimNode", "Simulation", "Violation", "load_scenario"]
