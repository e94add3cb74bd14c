"""Real-process figures for issue #2: failover, join, detection, messaging
latency and idle overhead of `hedgeplug run` nodes on loopback over the
embedded sqlite lock (lease 3s, heartbeat 1s).

    .venv/bin/python benchmarks/cluster_bench.py            # about 4 minutes
    .venv/bin/python benchmarks/cluster_bench.py --quick    # about 1 minute

Not a test: it prints figures. Latencies are compared, as a ratio, with a raw
anyio TCP echo round trip to another process measured in the same run, so the
machine's load cancels out. Every phase is bounded in count and time. Times
of cluster events are measured by polling every node's status every 50 ms,
so they carry up to ~50 ms of polling error.
"""

from __future__ import annotations

import argparse
import json
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

from hedgeplug import open_node
from hedgeplug.processes import NodeProcess, ProcessCluster
from hedgeplug.stats import percentile

TTL = 3.0
INTERVAL = 1.0
CLUSTER = "bench"
PHASE_TIMEOUT = 60.0
PHASES = ("events", "idle", "messaging", "big")  # no single wait in this script may exceed this

# A length-prefixed echo server for the baseline, run as its own process so
# that both round trips cross a process boundary the same way.
ECHO_SERVER = r"""
import struct, sys, anyio

async def handle(stream):
    buf = b""
    async with stream:
        try:
            while True:
                while len(buf) < 4:
                    buf += await stream.receive()
                (size,) = struct.unpack("!I", buf[:4])
                while len(buf) < 4 + size:
                    buf += await stream.receive()
                await stream.send(buf[: 4 + size])
                buf = buf[4 + size :]
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            pass

async def main():
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    print(port, flush=True)
    await listener.serve(handle)

anyio.run(main, backend="trio")
"""


def summary(values: list[float], unit: float = 1.0) -> dict[str, float]:
    scaled = [v * unit for v in values]
    return {
        "n": len(scaled),
        "p50": round(percentile(scaled, 0.5), 3),
        "p99": round(percentile(scaled, 0.99), 3),
        "mean": round(statistics.fmean(scaled), 3),
        "max": round(max(scaled), 3),
    }


def report(name: str, values: list[float], unit_name: str = "s", unit: float = 1.0) -> None:
    s = summary(values, unit)
    print(
        f"{name:<44} n={s['n']:<4} p50={s['p50']:<8} p99={s['p99']:<8} "
        f"mean={s['mean']:<8} max={s['max']} {unit_name}",
        flush=True,
    )


class Bench:
    def __init__(self, workdir: Path, args: argparse.Namespace) -> None:
        self.args = args
        self.cluster = ProcessCluster(
            workdir,
            cluster=CLUSTER,
            overrides=[f"lock.ttl={TTL}s", f"membership.interval={INTERVAL}s"],
            extra_args=["--log-level", "warning"],
        )
        self.results: dict[str, Any] = {"ttl_s": TTL, "interval_s": INTERVAL}

    async def agreed(self) -> float:
        return await self.cluster.wait_agreed(PHASE_TIMEOUT)

    async def leader(self) -> NodeProcess:
        await self.agreed()
        statuses = await self.cluster.statuses()
        leader = self.cluster.leader_process(statuses)
        assert leader is not None
        return leader

    async def refill(self, size: int) -> None:
        missing = size - len(self.cluster.live)
        if missing > 0:
            await self.cluster.start(missing)
        await self.agreed()

    # ------------------------------------------------------------ cluster events

    async def leader_loss(self, stop: Callable[[NodeProcess], None], label: str) -> None:
        failover, convergence = [], []
        for _ in range(self.args.repeat):
            leader = await self.leader()
            stop(leader)
            t0 = anyio.current_time()
            await self.cluster.wait_new_leader(leader.id, PHASE_TIMEOUT)
            failover.append(anyio.current_time() - t0)
            await self.agreed()
            convergence.append(anyio.current_time() - t0)
            await self.refill(5)
        report(f"failover after {label} of the leader", failover)
        report(f"agreed view after {label} of the leader", convergence)
        self.results[f"failover_{label.lower()}_s"] = summary(failover)
        self.results[f"convergence_{label.lower()}_s"] = summary(convergence)

    async def joins(self) -> None:
        joins, launches = [], []
        for _ in range(self.args.repeat):
            await self.agreed()
            t0 = anyio.current_time()
            node = await self.cluster.add()
            launches.append(anyio.current_time() - t0)
            joins.append(await self.agreed())
            await self.cluster.stop(node)
            await self.agreed()
        report("process launch until it listens", launches)
        report("join: listening until in every view", joins)
        self.results["launch_s"] = summary(launches)
        self.results["join_s"] = summary(joins)

    async def detections(self) -> None:
        times = []
        for _ in range(self.args.repeat):
            leader = await self.leader()
            victim = next(n for n in self.cluster.live if n is not leader)
            self.cluster.kill(victim)
            t0 = anyio.current_time()
            await self.agreed()
            times.append(anyio.current_time() - t0)
            await self.refill(5)
        report("detection: SIGKILL of a follower until gone", times)
        self.results["detection_s"] = summary(times)

    # ------------------------------------------------------------ overhead

    async def idle_cpu(self, size: int) -> None:
        await self.refill(size)
        await anyio.sleep(2 * INTERVAL)  # let start-up work settle
        nodes = list(self.cluster.live)
        before = {n.id: n.cpu_seconds() for n in nodes}
        t0 = time.monotonic()
        await anyio.sleep(self.args.idle_window)
        window = time.monotonic() - t0
        per_minute = {n.id: (n.cpu_seconds() - before[n.id]) / window * 60 for n in nodes}
        ok, why, statuses = await self.cluster.agreed()
        leader = self.cluster.leader_process(statuses)
        report(
            f"idle CPU per node per minute, {size} nodes", list(per_minute.values()), "cpu-s/min"
        )
        if leader is not None and leader.id in per_minute:
            # The leader answers every heartbeat, so it is the busiest node.
            print(
                f"{'  of which the leader':<44} {per_minute[leader.id]:.3f} cpu-s/min", flush=True
            )
            self.results[f"idle_cpu_leader_s_per_min_{size}_nodes"] = round(
                per_minute[leader.id], 3
            )
        self.results[f"idle_cpu_s_per_min_{size}_nodes"] = summary(list(per_minute.values()))
        self.results[f"idle_window_{size}_nodes_agreed"] = ok

    # ------------------------------------------------------------ messaging

    async def messaging(self) -> None:
        # The cluster's own typed Config, as one more member in this process.
        config = self.cluster.config.with_node(id="bench-client")
        await self.agreed()
        self.cluster.external.add("bench-client")  # expected in every view from now on
        async with open_node(config) as node:
            node.on_broadcast(lambda payload: payload)
            lease = await node.wait_leader(PHASE_TIMEOUT)
            assert lease.holder != node.id, "the bench node must not lead"
            with anyio.fail_after(PHASE_TIMEOUT):
                while node.id not in node.view or len(node.view) != len(self.cluster.live) + 1:
                    await anyio.sleep(0.05)

            await self._timed(lambda: node.send("warm-up"), 20)
            sends = await self._timed(lambda: node.send(b"x" * 64), self.args.sends)
            echo = await raw_echo_round_trips(self.args.sends, 64)
            report("send to leader round trip", sends, "ms", 1000)
            report("raw anyio TCP echo round trip (baseline)", echo, "ms", 1000)
            ratio = percentile(sends, 0.5) / percentile(echo, 0.5)
            print(f"{'send p50 / raw echo p50':<44} ratio={ratio:.1f}", flush=True)
            self.results["send_ms"] = summary(sends, 1000)
            self.results["raw_echo_ms"] = summary(echo, 1000)
            self.results["send_vs_echo_p50_ratio"] = round(ratio, 2)

            await self.cluster.start(19 - len(self.cluster.live))
            with anyio.fail_after(PHASE_TIMEOUT):
                while len(node.view) != 20:
                    await anyio.sleep(0.05)
            await self.agreed()

            async def broadcast() -> None:
                replies = await node.broadcast_all(b"y" * 64, timeout=5.0)
                bad = [r for r in replies if not r.ok]
                if len(replies) != 20 or bad:
                    raise RuntimeError(f"broadcast got {len(replies)} replies, failures {bad[:3]}")

            await self._timed(broadcast, 5)
            casts = await self._timed(broadcast, self.args.broadcasts)
            report("broadcast to 20 nodes, all replies", casts, "ms", 1000)
            self.results["broadcast_20_ms"] = summary(casts, 1000)
        self.cluster.external.discard("bench-client")

    @staticmethod
    async def _timed(call: Callable[[], Awaitable[Any]], count: int) -> list[float]:
        times = []
        with anyio.fail_after(PHASE_TIMEOUT):
            for _ in range(count):
                t0 = time.perf_counter()
                await call()
                times.append(time.perf_counter() - t0)
        return times


async def raw_echo_round_trips(count: int, size: int) -> list[float]:
    server = subprocess.Popen(
        [sys.executable, "-c", ECHO_SERVER], stdout=subprocess.PIPE, text=True
    )
    try:
        port = int(server.stdout.readline())  # type: ignore[union-attr]
        message = struct.pack("!I", size) + b"z" * size
        times = []
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            with anyio.fail_after(PHASE_TIMEOUT):
                for i in range(count + 20):
                    t0 = time.perf_counter()
                    await stream.send(message)
                    got = b""
                    while len(got) < len(message):
                        got += await stream.receive()
                    if i >= 20:  # the first 20 warm up
                        times.append(time.perf_counter() - t0)
        return times
    finally:
        server.kill()
        server.wait()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="hedgeplug-bench-") as folder:
        bench = Bench(Path(folder), args)
        async with bench.cluster:
            t0 = anyio.current_time()
            await bench.cluster.start(5)
            await bench.agreed()
            print(f"5 nodes agreed {anyio.current_time() - t0:.2f}s after launch", flush=True)
            if "events" in args.phases:
                await bench.leader_loss(bench.cluster.kill, "SIGKILL")
                await bench.leader_loss(bench.cluster.terminate, "SIGTERM")
                await bench.joins()
                await bench.detections()
            if "idle" in args.phases:
                await bench.idle_cpu(5)
            if "messaging" in args.phases:
                await bench.messaging()
            if "big" in args.phases and args.big > 0:
                await bench.idle_cpu(args.big)
        return bench.results


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="cluster events of each kind")
    parser.add_argument("--sends", type=int, default=500, help="timed send round trips")
    parser.add_argument("--broadcasts", type=int, default=100, help="timed broadcasts to 20 nodes")
    parser.add_argument(
        "--idle-window", type=float, default=30.0, help="seconds of idle CPU sampling"
    )
    parser.add_argument("--big", type=int, default=50, help="cluster size of the second idle run")
    parser.add_argument("--quick", action="store_true", help="fewer repeats, short windows")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument(
        "--phases",
        default=",".join(PHASES),
        help=f"comma-separated subset of {', '.join(PHASES)} (default: all)",
    )
    args = parser.parse_args()
    if args.quick:
        args.repeat, args.sends, args.broadcasts, args.idle_window = 2, 200, 30, 10.0
    args.repeat = max(1, min(args.repeat, 20))
    args.phases = {p.strip() for p in args.phases.split(",") if p.strip()}
    unknown = args.phases - set(PHASES)
    if unknown:
        parser.error(
            f"--phases: unknown {', '.join(sorted(unknown))}; choose from {', '.join(PHASES)}"
        )
    args.big = max(0, min(args.big, 100))
    return args


if __name__ == "__main__":
    arguments = parse_args()
    started = time.monotonic()
    figures = anyio.run(main, arguments, backend="trio")
    print(f"bench finished in {time.monotonic() - started:.0f}s", flush=True)
    if arguments.json:
        Path(arguments.json).write_text(json.dumps(figures, indent=2, sort_keys=True))
