"""A kill -9 storm: chaos-worker nodes SIGKILLed one after another (the
leader first, then about half the time), each replaced by a fresh process,
for a given time; then the storm stops and the survivors must settle on one leader and
one view. The records of every process, killed ones included, must show no
overlapping leadership and growing tokens.

    python tests/chaos_storm.py --minutes 1 --store sqlite|postgres|etcd
    scripts/chaos-storm --minutes 1 --store etcd

(tests/test_chaos_storm.py runs a shorter storm in the suite.) The command
starts its own throwaway PostgreSQL or etcd on loopback, prints the figures
as JSON, and exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import attrs
from chaos_kit import STORES, WorkerCluster, check_windows, leaders, store_overrides

from hedgeplug.testing.processes import NodeProcess

TTL = 2.0
INTERVAL = 0.5
NODES = 5
KILL_EVERY = (1.0, 3.0)  # seconds between kills, drawn uniformly
LEADER_SHARE = 0.5  # chance that the victim is the node saying it leads
TOLERANCE = 3.0
TAKEOVER_BOUND = TTL + TTL / 4 + 0.5 + TOLERANCE  # expiry, one contender poll, etcd's sweep
SETTLE_TIMEOUT = 60.0


@attrs.define
class Kill:
    t: float
    node: str
    said_leader: bool


async def storm(
    cluster: WorkerCluster, *, seconds: float, nodes: int = NODES, seed: int | None = None
) -> dict[str, Any]:
    """Run the storm on a started-empty `cluster`; returns its figures. Raises
    AssertionError when the records or the bounds say something went wrong."""
    seed = seed if seed is not None else random.SystemRandom().randrange(2**32)
    rng = random.Random(seed)
    await cluster.start(nodes)
    await cluster.wait_agreed(SETTLE_TIMEOUT)
    kills: list[Kill] = []
    spawn_failures: list[str] = []
    skipped = 0
    began = time.monotonic()

    async def replace() -> None:
        try:
            await cluster.add()
        except Exception as exc:  # a replacement that does not start is a finding, not a crash
            spawn_failures.append(str(exc)[:300])

    async with anyio.create_task_group() as spawns:
        for _ in range(int(seconds / KILL_EVERY[0]) + 1):  # bounded in count and in time
            await anyio.sleep(rng.uniform(*KILL_EVERY))
            if time.monotonic() - began >= seconds:
                break
            live = cluster.live
            if len(live) < nodes - 1:  # replacements still starting: never more than two down
                skipped += 1
                continue
            said = leaders(await cluster.statuses(live))
            pool: list[NodeProcess] = [n for n in live if n.id in said]
            # The first victim is the leader, so even a short storm hits one.
            if not pool or (kills and rng.random() >= LEADER_SHARE):
                pool = [n for n in live if n.id not in said] or live
            victim = rng.choice(pool)
            kills.append(Kill(time.monotonic(), victim.id, victim.id in said))
            cluster.kill(victim)
            spawns.start_soon(replace)
    storm_seconds = time.monotonic() - began
    (cluster.workdir / "kills.jsonl").write_text(
        "".join(json.dumps(attrs.asdict(k)) + "\n" for k in kills)
    )
    for node in cluster.nodes:
        if not node.running:
            await cluster.wait_exit(node, 5.0)
    settled = await cluster.wait_agreed(SETTLE_TIMEOUT)

    windows = cluster.windows()
    handovers = check_windows(windows)
    leaderless = [_leaderless_after(windows, kill) for kill in kills if kill.said_leader]
    span = (began, began + storm_seconds)
    figures = {
        "store": cluster.config.lock.use, "seed": seed, "nodes": nodes, "ttl": TTL, "storm_seconds": round(storm_seconds, 1),
        "kills": len(kills), "skipped_rounds": skipped, "leader_kills": sum(k.said_leader for k in kills),
        "processes_started": len(cluster.nodes), "spawn_failures": spawn_failures,
        "max_leaderless_after_leader_kill": round(max(leaderless, default=0.0), 3),
        "mean_leaderless_after_leader_kill": round(sum(leaderless) / len(leaderless), 3) if leaderless else 0.0,
        "led_fraction": round(_led_fraction(windows, *span), 3),
        "agreed_after_storm": round(settled, 2), **handovers.figures(),
    }
    assert not spawn_failures, spawn_failures
    assert max(leaderless, default=0.0) < TAKEOVER_BOUND, figures
    return figures


def _leaderless_after(windows: list[Any], kill: Kill) -> float:
    """Seconds from the kill until a node other than the victim acts as leader."""
    others = [w for w in windows if w.node != kill.node and w.t_leave >= kill.t]
    if not others:
        return float("inf")
    return max(0.0, min(w.t_enter for w in others) - kill.t)


def _led_fraction(windows: list[Any], start: float, end: float) -> float:
    """Share of [start, end] in which some node acted as leader."""
    covered = sum(max(0.0, min(w.t_leave, end) - max(w.t_enter, start)) for w in windows)
    return covered / (end - start) if end > start else 0.0


def start_server(store: str) -> Any:
    if store == "postgres":
        from hedgeplug_postgres.testing import start_postgres

        return start_postgres()
    if store == "etcd":
        from hedgeplug_etcd.testing import start_etcd

        return start_etcd()
    return None


def run_storm(store: str, seconds: float, workdir: Path, seed: int | None = None,
              server: Any = None) -> dict[str, Any]:
    """Start the server (unless given), the cluster, the storm; clean all up."""
    owned = server is None
    server = server if server is not None else start_server(store)
    try:
        cluster = WorkerCluster(
            workdir, cluster=f"storm-{store}-{uuid.uuid4().hex[:6]}",
            overrides=[*store_overrides(store, server), f"lock.ttl={TTL}s",
                       f"membership.interval={INTERVAL}s"],
        )

        async def go() -> dict[str, Any]:
            async with cluster:
                return await storm(cluster, seconds=seconds, seed=seed)

        figures = anyio.run(go, backend="trio")
        figures["store"] = store
        return figures
    finally:
        if owned and server is not None:
            server.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="kill -9 storm over real node processes")
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--store", choices=STORES, default="sqlite")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the nodes' configs, logs and records here (default: a temporary folder)")
    args = parser.parse_args(argv)
    if not 0 < args.minutes <= 30:
        parser.error("--minutes must be more than 0 and at most 30")
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        return _report(args.store, args.minutes * 60, args.workdir, args.seed)
    with tempfile.TemporaryDirectory(prefix="hedgeplug-storm-") as workdir:
        return _report(args.store, args.minutes * 60, Path(workdir), args.seed)


def _report(store: str, seconds: float, workdir: Path, seed: int | None) -> int:
    try:
        figures = run_storm(store, seconds, workdir, seed)
    except AssertionError as exc:
        print(f"storm check failed: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
