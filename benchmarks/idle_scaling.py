"""Idle cost against cluster size: `hedgeplug bench idle` at several sizes,
lock stores and membership strategies, with a plot of how each cost grows.

    .venv/bin/python benchmarks/idle_scaling.py --sizes 5,30,150 \
        --locks sqlite,postgres,etcd --memberships heartbeat,gossip --out results/

Each run prints follower and leader CPU seconds per minute beside the floor
`bench idle` measures in the same run (a bare trio process making one raw
TCP round trip per interval). Heartbeat runs use the issue's settings
(lease 3s, interval 1s); gossip its default profile. PostgreSQL is a
throwaway server started here (hedgeplug_postgres.testing), etcd likewise
(hedgeplug_etcd.testing), and the Spanner emulator with an instance and
database made for the run (hedgeplug_spanner.emulator). Results go to
`<out>/idle_scaling.json` and `<out>/idle_scaling.png` (matplotlib, the
`plot` extra). Every run is bounded by `--timeout`.

`--baseline DIR` runs each case a second time, right after the first, with
the hedgeplug (and plugin) sources found in DIR first on PYTHONPATH: an
export of an older commit (`git archive <commit> src plugins | tar -x -C
DIR`), so a change is measured beside the code before it under the same
load. Its figures go in each row's "baseline".
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any


def source_path(tree: Path) -> str:
    """PYTHONPATH putting the hedgeplug and plugin sources of `tree` first."""
    paths = [tree / "src", *sorted(p / "src" for p in (tree / "plugins").glob("hedgeplug-*"))]
    return os.pathsep.join(str(p) for p in paths if p.is_dir())


def bench_idle(
    size: int, lock: list[str], membership: str, args: argparse.Namespace, tree: Path | None = None
) -> Any:
    command = [
        sys.executable, "-m", "hedgeplug", "bench", "idle", "--size", str(size),
        "--window", str(args.window), "--timeout", str(args.timeout), "--json",
        "--set", "lock.ttl=3s", *lock,
    ]
    if membership == "heartbeat":
        command += ["--set", "membership.interval=1s"]
    else:
        command += ["--membership", membership]
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = source_path(tree)
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=args.timeout * 6 + args.window, env=env
    )
    if done.returncode != 0:
        return {"error": (done.stderr or done.stdout).strip().splitlines()[-1:]}
    return json.loads(done.stdout)


def summary(figures: Any) -> Any:
    return figures.get("error") or {
        "follower": figures["cpu_s_per_node_per_min"]["median"],
        "leader": figures.get("leader_cpu_s_per_min"),
        "floor": figures.get("floor_cpu_s_per_min"),
        "load": round(os.getloadavg()[0], 1),
    }


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    series: dict[str, list[tuple[int, float, float | None]]] = {}
    for r in results:
        f = r["figures"]
        if "error" in f:
            continue
        label = f"{r['lock']}/{r['membership']}"
        series.setdefault(label, []).append(
            (r["size"], f["cpu_s_per_node_per_min"]["median"], f.get("leader_cpu_s_per_min"))
        )
    for label, points in sorted(series.items()):
        points.sort()
        sizes = [p[0] for p in points]
        ax.plot(sizes, [p[1] for p in points], marker="o", label=f"{label} follower (median)")
        if label.endswith("heartbeat"):
            ax.plot(sizes, [p[2] for p in points], marker="s", linestyle="--",
                    label=f"{label} leader")
    before: dict[str, list[tuple[int, float]]] = {}
    for r in results:
        b = r.get("baseline")
        if b and "error" not in b:
            before.setdefault(f"{r['lock']}/{r['membership']}", []).append(
                (r["size"], b["cpu_s_per_node_per_min"]["median"]))
    for label, pairs in sorted(before.items()):
        pairs.sort()
        ax.plot([p[0] for p in pairs], [p[1] for p in pairs], marker="x", linestyle=":",
                alpha=0.6, label=f"{label} follower, baseline")
    floors = [r["figures"]["floor_cpu_s_per_min"] for r in results if "error" not in r["figures"]]
    if floors:
        ax.axhline(max(floors), color="grey", linewidth=0.8, label="floor (raw round trip/s)")
    ax.axhline(0.1, color="green", linestyle=":", label="target: follower 0.1")
    ax.axhline(0.5, color="red", linestyle=":", label="target: leader 0.5 at 150")
    ax.set_xlabel("cluster size (nodes)")
    ax.set_ylabel("CPU seconds per minute")
    ax.set_title("Idle cost per node (loopback, 2 cores shared)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5,30")
    parser.add_argument("--locks", default="sqlite")
    parser.add_argument("--memberships", default="heartbeat")
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--timeout", type=float, default=180.0)
    parser.add_argument("--out", default=".")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="source tree of the code to compare with (see above)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    with ExitStack() as stack:
        locks: dict[str, list[str]] = {}
        for lock in args.locks.split(","):
            if lock == "sqlite":
                locks[lock] = []  # bench's default: sqlite in its folder
            elif lock == "postgres":
                from hedgeplug_postgres.testing import start_postgres

                server = stack.enter_context(start_postgres())
                locks[lock] = ["--set", "lock.use=postgres", "--set", f"lock.dsn={server.dsn}"]
            elif lock == "etcd":
                from hedgeplug_etcd.testing import start_etcd

                etcd = stack.enter_context(start_etcd())
                endpoints = ",".join(etcd.endpoints)
                locks[lock] = ["--set", "lock.use=etcd", "--set", f"lock.endpoints={endpoints}"]
            elif lock == "spanner":
                from hedgeplug_spanner.emulator import create_emulator_database
                from hedgeplug_spanner.testing import start_spanner_emulator

                emulator = stack.enter_context(start_spanner_emulator())
                create_emulator_database(emulator.host, "idle", "idle", "idle")
                locks[lock] = ["--set", "lock.use=spanner", "--set", "lock.project=idle",
                               "--set", "lock.instance=idle", "--set", "lock.database=idle",
                               "--set", f"lock.emulator_host={emulator.host}"]
            else:
                raise SystemExit(f"--locks: {lock!r} is not sqlite, postgres, etcd or spanner")
        for membership in args.memberships.split(","):
            for lock, settings in locks.items():
                for size in (int(s) for s in args.sizes.split(",")):
                    figures = bench_idle(size, settings, membership, args)
                    row = {"size": size, "lock": lock, "membership": membership,
                           "figures": figures}
                    if args.baseline is not None:
                        row["baseline"] = bench_idle(size, settings, membership, args, args.baseline)
                    results.append(row)
                    brief = summary(figures)
                    print(f"{lock:<9}{membership:<10}{size:>4}  {brief}", flush=True)
                    if "baseline" in row:
                        print(f"{'':<23}baseline  {summary(row['baseline'])}", flush=True)
                    (out / "idle_scaling.json").write_text(json.dumps(results, indent=2))
    plot(results, out / "idle_scaling.png")


if __name__ == "__main__":
    main()
