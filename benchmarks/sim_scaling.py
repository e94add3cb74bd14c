"""How the simulator's cost grows with the number of nodes.

Runs the heartbeat scale-up scenario (2 settled nodes, N-2 more within one
second, then `settle` virtual seconds) once per N, each in its own process
so that its peak RSS is its own, and prints one row per N: wall and CPU
time, CPU per virtual second and per simulated node-second, frames moved,
groups at the end, convergence time and peak RSS. The last column is the
cost per node-second relative to the smallest N of the same run, the
baseline: a flat simulator keeps it near 1; then the start of the run's
trace digest (equal code and seed, equal digest).

Bounded: every run carries a wall-time limit (`--max-wall`, the simulator
stops itself) and the child process a hard one on top; N <= 10,000.

    .venv/bin/python benchmarks/sim_scaling.py                 # 10 100 1000 3000
    .venv/bin/python benchmarks/sim_scaling.py 10 100 1000 3000 10000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

MAX_N = 10_000


def one(n: int, settle: float, membership: str, max_wall: float) -> dict[str, object]:
    """Run scale-up at size n in this process; its figures as a dict."""
    from hedgeplug.sim.harness import Simulation
    from hedgeplug.sim.scenarios import load_scenario

    spec = load_scenario("scale-up")
    params = spec.bind({"k": n - 2, "warmup": 5.0, "settle": settle})
    sim = Simulation(1, membership=membership, max_wall=max_wall, max_nodes=max(n, 5000))
    cpu_started = time.process_time()  # the machine may be shared: CPU time is the fairer figure
    result = sim.run(lambda s, p=params: spec.run(s, **p), name="scale-up", params=params)
    cpu = time.process_time() - cpu_started
    m = result.metrics
    return {
        "n": n,
        "virtual": result.virtual_seconds,
        "wall": result.wall_seconds,
        "cpu": cpu,
        "node_seconds": result.traffic["node_seconds"] or 1.0,
        "frames": result.network["sent"],
        "groups": m["final_groups"],
        "convergence": m["convergence_time"],
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "digest": result.digest,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[10, 100, 1000, 3000])
    parser.add_argument(
        "--settle", type=float, default=30.0, help="virtual seconds after the last start"
    )
    parser.add_argument("--membership", default="heartbeat")
    parser.add_argument(
        "--max-wall", type=float, default=900.0, help="wall seconds one size may take"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    for n in args.sizes:
        if not 3 <= n <= MAX_N:
            raise SystemExit(f"sizes must be between 3 and {MAX_N}")
    if args.child:
        print(json.dumps(one(args.sizes[0], args.settle, args.membership, args.max_wall)))
        return
    print(
        f"{'N':>6} {'virtual':>8} {'wall s':>8} {'cpu s':>8} {'cpu/vs':>8} {'wall ms/ns':>10} "
        f"{'cpu ms/ns':>9} {'frames':>9} {'groups':>6} {'conv':>6} {'rss MB':>7} {'load':>5} "
        f"{'vs base':>7}  digest",
        flush=True,
    )
    base: float | None = None
    for n in args.sizes:
        command = [sys.executable, __file__, "--child", str(n), "--settle", str(args.settle)]
        command += ["--membership", args.membership, "--max-wall", str(args.max_wall)]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=args.max_wall + 120, check=False
            )
        except subprocess.TimeoutExpired:
            print(f"{n:>6} did not finish within {args.max_wall + 120:.0f}s of wall time", flush=True)
            continue
        if done.returncode != 0:
            reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
            print(f"{n:>6} failed: {reason}", flush=True)
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        per_node_second = 1000 * r["cpu"] / r["node_seconds"]
        wall_per_node_second = 1000 * r["wall"] / r["node_seconds"]
        base = base or per_node_second
        conv = "-" if r["convergence"] is None else f"{r['convergence']:.2f}"
        print(
            f"{n:>6} {r['virtual']:>8.1f} {r['wall']:>8.2f} {r['cpu']:>8.2f} "
            f"{r['cpu'] / r['virtual']:>8.3f} {wall_per_node_second:>10.3f} {per_node_second:>9.3f} "
            f"{r['frames']:>9} {r['groups']:>6} {conv:>6} {r['rss_mb']:>7.0f} {os.getloadavg()[0]:>5.1f} "
            f"{per_node_second / base:>7.2f}  {r['digest'][:12]}",
            flush=True,
        )


if __name__ == "__main__":
    main()
