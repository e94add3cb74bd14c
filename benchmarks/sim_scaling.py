"""How the simulator's wall time grows with the number of nodes.

Runs the scale-up scenario (2 settled nodes, N-2 more within one second,
then `settle` virtual seconds) for each N and prints one row per N: wall
time, wall time per virtual second and per node-second, frames moved, and
whether the cluster ended as one group. Bounded: one run per N, N <= 2000.

    .venv/bin/python benchmarks/sim_scaling.py 10 50 150 300 600 1000
"""

from __future__ import annotations

import argparse
import resource
import time

from hedgeplug.sim.harness import Simulation
from hedgeplug.sim.scenarios import load_scenario


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[10, 50, 150, 300])
    parser.add_argument(
        "--settle", type=float, default=30.0, help="virtual seconds after the last start"
    )
    parser.add_argument("--membership", default="heartbeat")
    args = parser.parse_args()
    spec = load_scenario("scale-up")
    print(
        f"{'N':>5} {'virtual':>8} {'wall':>8} {'cpu':>8} {'cpu/vs':>8} {'ms/node-s':>9} "
        f"{'frames':>9} {'groups':>6} {'conv':>6} {'rss MB':>7}"
    )
    for n in args.sizes:
        if not 3 <= n <= 2000:
            raise SystemExit("sizes must be between 3 and 2000")
        params = spec.bind({"k": n - 2, "warmup": 5.0, "settle": args.settle})
        sim = Simulation(1, membership=args.membership)
        cpu_started = time.process_time()  # the machine is shared: CPU time is the fairer figure
        result = sim.run(lambda s, p=params: spec.run(s, **p), name="scale-up", params=params)
        cpu = time.process_time() - cpu_started
        m = result.metrics
        node_seconds = result.traffic["node_seconds"] or 1.0
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        conv = "-" if m["convergence_time"] is None else f"{m['convergence_time']:.2f}"
        print(
            f"{n:>5} {result.virtual_seconds:>8.1f} {result.wall_seconds:>8.2f} {cpu:>8.2f} "
            f"{cpu / result.virtual_seconds:>8.3f} "
            f"{1000 * cpu / node_seconds:>9.3f} {result.network['sent']:>9} "
            f"{m['final_groups']:>6} {conv:>6} {rss:>7.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
