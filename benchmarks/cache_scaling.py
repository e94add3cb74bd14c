"""The partitioned cache across real node processes while the cluster scales
5 -> 20 -> 5 and two members are SIGKILLed, under get and set.

    .venv/bin/python benchmarks/cache_scaling.py                 # 5 -> 20, kill 2, -> 5
    .venv/bin/python benchmarks/cache_scaling.py --keys 500 --peak 10 --json

Each member is a cache worker process (`hedgeplug run` plus the cache, on the
sqlite lock in a temporary folder, tcp on loopback). A load generator in this
process sets and gets keys through random live members, as `hedgeplug cache
get|set -a ADDR` does; each key has one writer, whose value is a sequence
number, so an acknowledged write is known exactly. After `--hold` seconds at
the start size it starts the new members at once, waits until the hand-off
has settled (every member agrees on the view and holds only the keys it
owns), holds, SIGKILLs `--crash` members at once, settles, holds, stops the
leavers gracefully at once (SIGTERM: each hands its keys off, then leaves),
settles and holds. Then it reads back every acknowledged key and reports
lost acknowledged writes: those whose owners were all among the killed (as
of the view before the kill: the stated bound of R copies) apart from the
rest (0 expected). The hit rate of the steady phase at the start size is the
baseline beside which the phases during and after each change are read.
Not a test; every wait is bounded (--settle-timeout, process start and stop
timeouts, request timeouts).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import anyio

from hedgeplug.testing.cache_processes import CacheProcessCluster, Load
from hedgeplug.testing.cache_scaling import ScalingRun, run_scaling


def table(run: ScalingRun) -> str:
    base = next((p.hit_rate for p in run.phases if p.name.endswith("nodes") and p.reads), None)
    lines = [
        f"{'phase':<24} {'secs':>6} {'reads':>6} {'hit rate':>8} {'vs base':>7} {'stale':>5} "
        f"{'miss':>5} {'rd err':>6} {'sets ok':>7} {'failed':>6} {'settled in':>10}"
    ]
    for p in run.phases:
        if p.name == "start":
            continue
        ratio = f"{p.hit_rate / base:.3f}" if base and p.hit_rate is not None else "-"
        settled = run.settle_seconds.get(p.name)
        lines.append(
            f"{p.name:<24} {p.seconds:>6.1f} {p.reads:>6} {p.hit_rate if p.hit_rate is not None else '-':>8} "
            f"{ratio:>7} {p.stale:>5} {p.misses:>5} {p.read_errors:>6} {p.writes_acked:>7} "
            f"{p.writes_failed:>6} {f'{settled:.1f}s' if settled is not None else '':>10}"
        )
    lines += [
        "",
        f"acknowledged keys read back: {run.acked_keys} (read errors {run.readback_errors}); "
        f"copies held at the end: {run.final_copies}",
        f"lost acknowledged writes, not all owners crashed: {len(run.lost)} {run.lost[:10]}",
        f"lost acknowledged writes, all R owners SIGKILLed at once: "
        f"{len(run.lost_all_owners_crashed)} of {run.all_owners_crashed} such keys",
        f"superseded by a write that did not return ok: {len(run.superseded_by_failed_write)}",
        f"held by a member but not read through one: {len(run.unreadable_but_held)}",
        f"load average (1 min) at the end: {run.load_average}",
        f"problems: {run.problems or 'none'}",
    ]
    return "\n".join(lines)


async def bench(args: argparse.Namespace, workdir: Path) -> ScalingRun:
    options: dict[str, Any] = {"max_memory": args.max_memory, "replicas": args.replicas}
    overrides = [f"lock.ttl={args.lock_ttl}", f"membership.interval={args.interval}",
                 "node.stop_timeout=20s"]
    async with CacheProcessCluster(
        workdir, cluster=f"cache-scaling-{uuid.uuid4().hex[:8]}", overrides=overrides,
        cache_options=options,
    ) as cluster:
        load = Load(cluster, keys=args.keys, writers=args.writers, readers=args.readers,
                    pause=args.pause, seed=args.seed)
        return await run_scaling(
            cluster, load, start=args.start, peak=args.peak, crash=args.crash, end=args.end,
            hold=args.hold, settle_timeout=args.settle_timeout, seed=args.seed,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--start", type=int, default=5, help="members at the start and the end")
    parser.add_argument("--peak", type=int, default=20, help="members after the scale-up")
    parser.add_argument("--crash", type=int, default=2, help="members SIGKILLed at once at the peak")
    parser.add_argument("--keys", type=int, default=2000)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--max-memory", default="64MiB")
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--readers", type=int, default=4)
    parser.add_argument("--pause", type=float, default=0.005, help="seconds between one task's operations")
    parser.add_argument("--hold", type=float, default=5.0, help="seconds of steady load between changes")
    parser.add_argument("--settle-timeout", type=float, default=120.0)
    parser.add_argument("--lock-ttl", default="3s")
    parser.add_argument("--interval", default="500ms", help="heartbeat interval")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    if not 1 <= args.crash < args.peak - 1 or not 1 <= args.start < args.peak or args.keys < 1:
        parser.error("need 1 <= start < peak, 1 <= crash < peak - 1 and keys >= 1")
    args.end = args.start
    with tempfile.TemporaryDirectory(prefix="cache-scaling-") as tmp:
        run = anyio.run(bench, args, Path(tmp), backend="trio")
    if args.json:
        print(json.dumps({"args": vars(args), **run.to_json()}, indent=2, default=str))
    else:
        print(f"cache scaling {args.start} -> {args.peak} -> kill {args.crash} -> {args.end}, "
              f"{args.keys} keys, R={args.replicas}, {os.cpu_count()} cpus")
        print(table(run))
    return 0 if not run.problems else 1


if __name__ == "__main__":
    sys.exit(main())
