"""Gossip on real processes under packet loss: false deaths and detection.

    sudo .venv/bin/python benchmarks/gossip_loss.py --size 50 --loss 0.05 --soak 120 --rounds 3

Creates a network namespace of its own (a fresh name), brings its loopback
up, drops `--loss` of the udp packets arriving on it at random (iptables
`statistic --mode random`; tc netem is not available everywhere), and runs
itself inside it: `--size` `hedgeplug run` processes over udp with the
gossip membership (lan profile unless `--set` says otherwise) and the
sqlite lock. After they agree it soaks for `--soak` seconds and reads every
node's counters: a `gossip.dead` there is a false death (nobody was
killed). Then `--rounds` times it SIGKILLs a random follower and times
until no answering node's view holds it. The same cluster without loss is
the baseline (`--loss 0`, no namespace needed). Status polling goes over
the same lossy udp: a node that does not answer one poll is skipped for it.
Every phase is bounded by `--timeout`; the namespace is deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from random import Random
from typing import Any

import anyio

from hedgeplug.processes import ProcessCluster, cluster_config

COUNTERS = ("gossip.dead", "gossip.suspect", "gossip.refuted", "gossip.suspect.spared")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, timeout=20)


def run_in_namespace(argv: list[str], loss: float, timeout: float) -> int:
    name = f"hpgl-{uuid.uuid4().hex[:8]}"
    _ip("netns", "add", name)
    try:
        _ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
        # getaddrinfo(AI_ADDRCONFIG), which anyio uses to bind, finds no IPv4
        # address when 127.0.0.1 is the only one: give loopback another.
        _ip("-n", name, "addr", "add", "10.254.0.1/32", "dev", "lo")
        rule = ["-p", "udp", "-m", "statistic", "--mode", "random", "--probability", str(loss)]
        subprocess.run(
            ["ip", "netns", "exec", name, "iptables", "-A", "INPUT", "-i", "lo", *rule, "-j", "DROP"],
            check=True,
            timeout=20,
        )
        inner = ["ip", "netns", "exec", name, sys.executable, __file__, *argv, "--inside"]
        return subprocess.run(inner, timeout=timeout).returncode
    finally:
        subprocess.run(["ip", "netns", "del", name], timeout=20)


async def counters(cluster: ProcessCluster, tries: int = 20) -> dict[str, dict[str, int]]:
    """Counters of every live node (polled again for those a lost packet hid)."""
    got: dict[str, dict[str, int]] = {}
    for _ in range(tries):
        missing = [n for n in cluster.live if n.id not in got]
        if not missing:
            break
        for node_id, status in (await cluster.statuses(missing)).items():
            if status is not None:
                got[node_id] = {k: status["counters"].get(k, 0) for k in COUNTERS}
    return got


async def wait_views(
    cluster: ProcessCluster, wanted: frozenset[str], timeout: float, poll: float = 0.05
) -> float:
    """Seconds until every live node's latest answered status shows exactly
    `wanted` as alive members (a poll lost to the loss keeps that node's
    previous answer; one that said otherwise since is not done)."""
    start = anyio.current_time()
    latest: dict[str, frozenset[str]] = {}
    with anyio.fail_after(timeout):
        while True:
            for node_id, status in (await cluster.statuses()).items():
                if status is not None:
                    latest[node_id] = frozenset(m["id"] for m in status.get("members", []))
            live = {n.id for n in cluster.live}
            if all(latest.get(node_id) == wanted for node_id in live):
                return anyio.current_time() - start
            await anyio.sleep(poll)


def _total(per_node: dict[str, dict[str, int]], key: str) -> int:
    return sum(c[key] for c in per_node.values())


async def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    overrides = ["membership.use=gossip", "transport.use=udp", *args.set]
    config = cluster_config(workdir, cluster="gossip-loss", overrides=overrides)
    random = Random(args.seed)
    out: dict[str, Any] = {"size": args.size, "loss": args.loss, "soak_s": args.soak}
    async with ProcessCluster(workdir, config=config) as cluster:
        try:
            await cluster.start(args.size, ready_timeout=max(60.0, args.timeout))
            live = frozenset(n.id for n in cluster.live)
            out["agreement_s"] = round(await wait_views(cluster, live, args.timeout), 2)
            before = await counters(cluster)
            await anyio.sleep(args.soak)
            after = await counters(cluster)
            common = before.keys() & after.keys()
            out["read_nodes"] = len(common)
            for key in COUNTERS:
                out[f"soak_{key}"] = _total({k: after[k] for k in common}, key) - _total(
                    {k: before[k] for k in common}, key
                )
            detections = []
            for _ in range(args.rounds):
                statuses = await cluster.statuses()
                leader = cluster.leader_process(statuses)
                followers = [n for n in cluster.live if leader is None or n.id != leader.id]
                victim = random.choice(followers)
                cluster.kill(victim)
                live = frozenset(n.id for n in cluster.live)
                detections.append(round(await wait_views(cluster, live, args.timeout), 2))
                await anyio.sleep(2.0)
            out["detection_s"] = detections
            if detections:
                out["detection_median_s"] = round(statistics.median(detections), 2)
        finally:
            cluster.kill_all_now()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=30)
    parser.add_argument("--loss", type=float, default=0.05, help="fraction of udp packets dropped")
    parser.add_argument("--soak", type=float, default=60.0, help="seconds under loss before kills")
    parser.add_argument("--rounds", type=int, default=3, help="kills timed after the soak")
    parser.add_argument("--timeout", type=float, default=90.0, help="bound on each phase")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not 0 <= args.loss < 1 or not 2 <= args.size <= 200 or args.rounds < 0:
        parser.error("--loss must be in [0, 1), --size in [2, 200], --rounds >= 0")
    if args.loss > 0 and not args.inside:
        if os.geteuid() != 0:
            parser.error("a lossy run creates a network namespace: run it as root")
        bound = args.timeout * (4 + args.rounds) + args.soak
        return run_in_namespace(sys.argv[1:], args.loss, bound)
    with tempfile.TemporaryDirectory(prefix="hedgeplug-gossip-loss-") as folder:
        figures = anyio.run(measure, args, Path(folder), backend="trio")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
