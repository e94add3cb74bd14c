"""`hedgeplug bench`: the simulator's scenarios on real OS processes.

Every node is a `hedgeplug run` process on loopback (tcp, or udp with
`--transport udp`), sharing the
embedded sqlite lock in a temporary folder. Cluster state is read by
polling every node's status every 50 ms, so times carry up to ~50 ms of
polling error plus the machine's load. Every phase is bounded by
`--timeout`, every loop by a count.

    hedgeplug bench leader-kill --size 5 --rounds 3
    hedgeplug bench scale-up -k 20 --membership gossip --join one-random
    hedgeplug bench churn --size 6 --rounds 5 --json
    hedgeplug bench idle --size 50 --window 20
    hedgeplug bench detect --size 50 --rounds 3 --membership gossip --transport udp
    hedgeplug bench cache --json

`idle` measures what a settled cluster costs: CPU seconds per node per
minute and bytes sent per node per second over `--window`, beside the CPU of
a bare trio process making one raw TCP round trip per heartbeat interval
over the same window (the floor), and a status request/reply round trip
beside a raw TCP echo round trip measured in the same run (the baseline).

`cache` measures the partitioned cache beside redis-server and memcached
(see bench_cache).

`detect` measures crash detection: SIGKILL a random follower (never the
leader, so the lease does not move), time until no live node's view holds
it, then until all views agree again; `--rounds` times.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from random import Random
from typing import Any

import anyio
import msgpack

from ..config import Config, Setting
from ..errors import HedgeplugError
from ..processes import NodeProcess, ProcessCluster, ProcessError, cluster_config
from ..sim.metrics import count_groups
from ..stats import percentile
from . import bench_cache
from .bench_baselines import FloorProcess, raw_echo_rtts
from .bench_output import check_plotting, format_figures, plot_samples
from .progress import ProgressLine

HELP = (
    "measure scale-up, churn, leader-kill, crash detection, idle cost "
    "or the cache on real node processes (loopback)"
)
SCENARIOS = ("scale-up", "churn", "leader-kill", "idle", "detect", "cache")
TRANSPORTS = ("tcp", "udp")
JOIN_RULES = ("one-random", "sample-1-3", "none")
MAX_PROCESSES = 200  # a bound on what one command may start
_ENVELOPE_BYTES = 64  # header, cluster, sender, channel and ids around a reply (about)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenario", choices=SCENARIOS)
    parser.add_argument(
        "--size", type=int, default=5, help="cluster size (churn, leader-kill, cache; default 5)"
    )
    parser.add_argument(
        "-k", type=int, default=20, help="nodes added at once by scale-up (default 20)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="kills or replacements (default 3)")
    parser.add_argument(
        "--membership", help="membership strategy (default heartbeat)"
    )
    parser.add_argument(
        "--join",
        choices=JOIN_RULES,
        default="one-random",
        help="seeds for strategies that take them",
    )
    parser.add_argument(
        "--transport",
        choices=TRANSPORTS,
        help="transport of every node and of the status polling (default tcp)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="config override for every node",
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="bound on each phase in seconds (default 60)"
    )
    parser.add_argument(
        "--window", type=float, default=20.0, help="idle: seconds to measure over (default 20)"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the bench's own choices")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--plot", metavar="FILE.png", help="plot every measured sample (needs matplotlib)"
    )
    bench_cache.add_arguments(parser)


def _groups(statuses: dict[str, Any]) -> int:
    live = {node_id for node_id, s in statuses.items() if s is not None}
    views = {
        node_id: frozenset(m["id"] for m in s.get("members", []) if m["id"] in live)
        for node_id, s in statuses.items()
        if s is not None
    }
    return count_groups(views)


def _flag_settings(args: argparse.Namespace) -> list[Setting]:
    """--membership and --transport as typed settings (a --set of the same key is an error)."""
    flags = (("--membership", "membership"), ("--transport", "transport"))
    return [
        Setting(section, "use", getattr(args, flag[2:]), flag)
        for flag, section in flags
        if getattr(args, flag[2:]) is not None
    ]


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.random = Random(args.seed)
        # Read once; every child gets this typed Config (plus its own seeds) as its file.
        config = cluster_config(
            workdir,
            cluster="hedgeplug-bench",
            overrides=[*args.set, *_flag_settings(args)],
        )
        self.cluster = ProcessCluster(workdir, config=config)
        self._seeds = hasattr(config.membership.options, "seeds")
        self.figures: dict[str, Any] = {
            "scenario": args.scenario,
            "membership": config.membership.use,
            "transport": config.transport.use,
        }
        self.samples: dict[str, list[float]] = {}  # raw values behind each summary, for --plot
        self.progress = ProgressLine(enabled=not args.json)

    def summarise(self, name: str, values: list[float]) -> None:
        self.samples[name] = list(values)
        self.figures[name] = _summary(values)

    def _join_config(self) -> Config | None:
        """The cluster's Config with this node's join seeds, or None for the cluster's own."""
        rule = self.args.join
        if not self._seeds or rule == "none":
            return None
        live = [n.address for n in self.cluster.live]
        if rule == "one-random":
            # The new process itself is a candidate too; it then starts alone (no seed).
            choice = self.random.choice([*live, None])
            picks = [] if choice is None else [choice]
        else:
            picks = (
                self.random.sample(live, min(len(live), self.random.randint(1, 3))) if live else []
            )
        if not picks:
            return None
        return self.cluster.config.with_options("membership", seeds=picks)

    async def add(self, count: int) -> list[NodeProcess]:
        started = []
        for _ in range(count):
            # The start limit is --timeout too: a hundred processes starting
            # at once on two cores can take longer than a fixed 30 s.
            started.append(
                await self.cluster.add(ready_timeout=self.args.timeout, config=self._join_config())
            )
        return started

    async def agreed(self) -> float:
        return await self.cluster.wait_agreed(self.args.timeout)

    # ------------------------------------------------------------ scenarios

    async def scale_up(self) -> None:
        await self.add(2)
        self.figures["initial_agreement_s"] = round(await self.agreed(), 3)
        began = anyio.current_time()
        # Start them concurrently, as a deployment scaling up would.
        async with anyio.create_task_group() as tg:
            for _ in range(self.args.k):
                tg.start_soon(self.add, 1)
        self.figures["start_spread_s"] = round(anyio.current_time() - began, 3)
        statuses = await self.cluster.statuses()
        self.figures["groups_right_after_start"] = _groups(statuses)
        try:
            await self.agreed()
            self.figures["convergence_s"] = round(anyio.current_time() - began, 3)
        except ProcessError as exc:
            self.figures["convergence_s"] = None
            self.figures["not_converged"] = str(exc).splitlines()[0]
        self.figures["groups_at_end"] = _groups(await self.cluster.statuses())
        self.figures["size"] = len(self.cluster.live)

    async def churn(self) -> None:
        await self.add(self.args.size)
        await self.agreed()
        times = []
        for _ in range(self.args.rounds):
            victim = self.random.choice(self.cluster.live)
            if self.random.random() < 0.5:
                self.cluster.kill(victim)
            else:
                self.cluster.terminate(victim)
            await self.cluster.wait_exit(victim, self.args.timeout)
            await self.add(1)
            times.append(await self.agreed())
        self.summarise("agreement_after_replacement_s", times)

    async def leader_kill(self) -> None:
        await self.add(self.args.size)
        await self.agreed()
        failovers, agreements = [], []
        for _ in range(self.args.rounds):
            statuses = await self.cluster.statuses()
            leader = self.cluster.leader_process(statuses)
            if leader is None:
                raise HedgeplugError("no leader among the processes to kill")
            self.cluster.kill(leader)
            began = anyio.current_time()
            await self.cluster.wait_exit(leader, self.args.timeout)
            failovers.append(await self.cluster.wait_new_leader(leader.id, self.args.timeout))
            await self.agreed()
            agreements.append(anyio.current_time() - began)
        self.summarise("failover_s", failovers)
        self.summarise("agreement_after_kill_s", agreements)

    async def detect(self) -> None:
        await self.cluster.start(self.args.size, ready_timeout=max(60.0, self.args.timeout))
        self.figures["agreement_s"] = round(await self.agreed(), 3)
        detections, agreements = [], []
        for _ in range(self.args.rounds):
            statuses = await self.cluster.statuses()
            leader = self.cluster.leader_process(statuses)
            followers = [n for n in self.cluster.live if leader is None or n.id != leader.id]
            if not followers:
                raise HedgeplugError("no follower left to kill")
            victim = self.random.choice(followers)
            self.cluster.kill(victim)
            began = anyio.current_time()

            def gone(statuses: dict[str, Any], victim: str = victim.id) -> bool:
                answered = [s for s in statuses.values() if s is not None]
                return bool(answered) and all(
                    victim not in {m["id"] for m in s.get("members", [])} for s in answered
                )

            detections.append(
                await self.cluster.wait_for(
                    gone, self.args.timeout, describe=f"{victim.id} gone from every view"
                )
            )
            await self.agreed()
            agreements.append(anyio.current_time() - began)
        self.figures["size"] = len(self.cluster.live)
        self.summarise("detection_s", detections)
        self.summarise("agreement_after_kill_s", agreements)
        self.figures["groups_at_end"] = _groups(await self.cluster.statuses())

    async def idle(self) -> None:
        await self.cluster.start(self.args.size, ready_timeout=max(60.0, self.args.timeout))
        self.figures["agreement_s"] = round(await self.agreed(), 3)
        nodes = self.cluster.live
        interval = getattr(self.cluster.config.membership.options, "interval", 1.0)
        async with FloorProcess(float(interval)) as floor:
            before_cpu = {n.id: n.cpu_seconds() for n in nodes}
            floor_before = floor.cpu_seconds()
            before = await self.cluster.statuses()
            began = anyio.current_time()
            await anyio.sleep(self.args.window)
            after = await self.cluster.statuses()
            took = anyio.current_time() - began
            floor_per_min = (floor.cpu_seconds() - floor_before) * 60 / took
        cpu_per_min = {n.id: (n.cpu_seconds() - before_cpu[n.id]) * 60 / took for n in nodes}
        # The first status reply itself leaves after its counters were read:
        # take its size (payload plus envelope) back out of the window.
        sent_per_s: dict[str, float] = {}
        for n in nodes:
            first, last = before.get(n.id), after.get(n.id)
            if first and last:
                sent = last["transport"]["bytes_out"] - first["transport"]["bytes_out"]
                sent -= len(msgpack.packb(first)) + _ENVELOPE_BYTES
                # That size is an estimate within a few bytes; an idle leader
                # (one-way beats need no reply) sends about nothing, so the
                # difference may dip just below zero.
                sent_per_s[n.id] = max(0.0, sent / took)
        leader = self.cluster.leader_process(after)
        followers = [n.id for n in nodes if leader is None or n.id != leader.id]
        self.figures["window_s"] = round(took, 1)
        self.summarise("cpu_s_per_node_per_min", [cpu_per_min[i] for i in followers])
        # The baseline: a bare trio process making one raw TCP round trip per
        # interval, the least a heartbeating follower could cost here.
        self.figures["floor_cpu_s_per_min"] = round(floor_per_min, 3)
        self.summarise("bytes_sent_per_node_per_s",
            [sent_per_s[i] for i in followers if i in sent_per_s]
        )
        if leader is not None:
            self.figures["leader_cpu_s_per_min"] = round(cpu_per_min[leader.id], 3)
            self.figures["leader_bytes_sent_per_s"] = round(sent_per_s.get(leader.id, 0.0), 1)
        # Request/reply through a node beside a raw TCP echo, in this run.
        target = nodes[0]
        rtts = []
        for _ in range(200):
            t0 = anyio.current_time()
            await self.cluster.status_of(target)
            rtts.append(anyio.current_time() - t0)
        echo = await raw_echo_rtts(200)
        self.summarise("status_rtt_ms", [r * 1000 for r in rtts])
        self.summarise("raw_tcp_echo_rtt_ms", [r * 1000 for r in echo])
        self.figures["status_over_echo_median"] = round(
            statistics.median(rtts) / statistics.median(echo), 1
        )

    async def run(self) -> dict[str, Any]:
        try:
            async with self.cluster, anyio.create_task_group() as tg:
                tg.start_soon(self._show_progress)
                await getattr(self, self.args.scenario.replace("-", "_"))()
                cpu = [n.cpu_seconds() for n in self.cluster.live]
                self.summarise("cpu_seconds_per_node", cpu)
                tg.cancel_scope.cancel()
        finally:
            self.progress.done()
            self.cluster.kill_all_now()
        return self.figures

    async def _show_progress(self) -> None:
        label = f"bench {self.args.scenario}"
        while True:
            done = [k for k, v in self.samples.items() if v]
            self.progress.update(
                f"{label}: {len(self.cluster.live)} processes" + (f", measured {', '.join(done)}" if done else "")
            )
            await anyio.sleep(0.5)


def _summary(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    data = sorted(values)
    return {
        "count": len(data),
        "median": round(statistics.median(data), 3),
        "p99": round(percentile(data, 0.99), 3),
        "max": round(data[-1], 3),
    }


def run(args: argparse.Namespace) -> int:
    if args.scenario == "cache":
        return bench_cache.run(args)
    total = (
        args.k + 2
        if args.scenario == "scale-up"
        else args.size + (args.rounds if args.scenario == "churn" else 0)
    )
    if args.size < 2 or args.k < 1 or args.rounds < 1:
        raise HedgeplugError("--size must be at least 2, -k and --rounds at least 1")
    if total > MAX_PROCESSES:
        raise HedgeplugError(
            f"that would start {total} processes; the bench allows {MAX_PROCESSES}"
        )
    if args.timeout <= 0:
        raise HedgeplugError("--timeout must be positive")
    if args.plot:
        check_plotting()
    with tempfile.TemporaryDirectory(prefix="hedgeplug-bench-") as folder:
        bench = Bench(args, Path(folder))
        figures = anyio.run(bench.run)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(format_figures(figures))
    if args.plot:
        plot_samples(bench.samples, figures, args.plot)
        print(f"plot written to {os.path.abspath(args.plot)}", file=sys.stderr)
    return 0
