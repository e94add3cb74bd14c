"""Messaging overhead on real processes: send to the leader, its throughput
with many requests in flight, broadcast with all replies, sealed and not,
each beside a raw anyio TCP echo to another process measured in the same run.

    .venv/bin/python benchmarks/messaging_bench.py [--sends 1000] [--concurrency 64]
        [--broadcast-size 20] [--sealed both|no|yes] [--json out.json]

The cluster is `hedgeplug run` processes on loopback over the embedded
sqlite lock; the sender is one more node in this process (it never leads).
Round trips of the node and of the echo are taken in turn, so both see the
same machine load. Throughput: `--concurrency` tasks each sending one
message after another from the one node, against the same number of tasks
each with its own echo connection (the echo has no multiplexing to pay
for). Every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
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
from hedgeplug.processes import ProcessCluster
from hedgeplug.stats import percentile

PHASE_TIMEOUT = 120.0
SIZE = 64

# The same length-prefixed echo server the cluster benchmark uses (this
# script runs from benchmarks/, so the sibling module imports).
from cluster_bench import ECHO_SERVER  # noqa: E402

RoundTrip = Callable[[], Awaitable[Any]]


class Echo:
    """A length-prefixed echo server in its own process."""

    def __init__(self) -> None:
        self.server = subprocess.Popen(
            [sys.executable, "-c", ECHO_SERVER], stdout=subprocess.PIPE, text=True
        )
        assert self.server.stdout is not None
        self.port = int(self.server.stdout.readline())
        self.message = struct.pack("!I", SIZE) + b"z" * SIZE

    async def connect(self) -> RoundTrip:
        stream = await anyio.connect_tcp("127.0.0.1", self.port)

        async def round_trip() -> None:
            await stream.send(self.message)
            got = b""
            while len(got) < len(self.message):
                got += await stream.receive()

        return round_trip

    def close(self) -> None:
        self.server.kill()
        self.server.wait()


async def interleaved(paths: dict[str, RoundTrip], count: int) -> dict[str, list[float]]:
    for call in paths.values():
        for _ in range(50):
            await call()
    samples: dict[str, list[float]] = {name: [] for name in paths}
    order = list(paths.items())
    with anyio.fail_after(PHASE_TIMEOUT):
        for i in range(count):
            for name, call in order[i % 2:] + order[:i % 2]:
                t0 = time.perf_counter()
                await call()
                samples[name].append((time.perf_counter() - t0) * 1000)
    return samples


async def rate(calls: list[RoundTrip], seconds: float) -> float:
    """Completed calls per second with one task per entry of `calls`."""
    done = 0
    stop = time.perf_counter() + seconds

    async def worker(call: RoundTrip) -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await call()
            done += 1

    started = time.perf_counter()
    with anyio.fail_after(seconds + PHASE_TIMEOUT):
        async with anyio.create_task_group() as tg:
            for call in calls:
                tg.start_soon(worker, call)
    return done / (time.perf_counter() - started)


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": round(percentile(values, 0.5), 4),
        "p99": round(percentile(values, 0.99), 4),
    }


async def measure(args: argparse.Namespace, sealed: bool, echo: Echo) -> dict[str, Any]:
    overrides = ["lock.ttl=3s", "membership.interval=1s"]
    if sealed:
        overrides.append("node.key=bench-secret-key-of-some-length")
    with tempfile.TemporaryDirectory(prefix="hedgeplug-msgbench-") as folder:
        cluster = ProcessCluster(
            Path(folder), cluster="msgbench", overrides=overrides,
            extra_args=["--log-level", "warning"],
        )
        async with cluster:
            await cluster.start(2)
            await cluster.wait_agreed(PHASE_TIMEOUT)
            config = cluster.config.with_node(id="bench-client")
            cluster.external.add("bench-client")
            async with open_node(config) as node:
                node.on_broadcast(lambda payload: payload)
                lease = await node.wait_leader(PHASE_TIMEOUT)
                assert lease.holder != node.id, "the bench node must not lead"
                payload = b"x" * SIZE

                async def send() -> None:
                    await node.send(payload)

                echo_rt = await echo.connect()
                rts = await interleaved({"send": send, "echo": echo_rt}, args.sends)
                figures: dict[str, Any] = {
                    "send_ms": summary(rts["send"]), "echo_ms": summary(rts["echo"]),
                }
                figures["send_over_echo_p50"] = round(
                    figures["send_ms"]["p50"] / figures["echo_ms"]["p50"], 2
                )
                figures["send_over_echo_p99"] = round(
                    figures["send_ms"]["p99"] / figures["echo_ms"]["p99"], 2
                )
                c = args.concurrency
                echo_calls = [await echo.connect() for _ in range(c)]
                figures[f"send_per_s_{c}_in_flight"] = round(
                    await rate([send] * c, args.seconds)
                )
                figures[f"echo_per_s_{c}_connections"] = round(
                    await rate(echo_calls, args.seconds)
                )
                if args.broadcast_size > 0:
                    want = args.broadcast_size
                    await cluster.start(max(0, want - 1 - len(cluster.live)))
                    with anyio.fail_after(PHASE_TIMEOUT):
                        while len(node.view) != want:
                            await anyio.sleep(0.05)

                    async def broadcast() -> None:
                        replies = await node.broadcast_all(payload, timeout=10.0)
                        if len(replies) != want or not all(r.ok for r in replies):
                            raise RuntimeError(f"broadcast: {len(replies)} replies of {want}")

                    casts = []
                    with anyio.fail_after(PHASE_TIMEOUT):
                        for i in range(args.broadcasts + 3):
                            t0 = time.perf_counter()
                            await broadcast()
                            if i >= 3:
                                casts.append((time.perf_counter() - t0) * 1000)
                    figures[f"broadcast_{want}_ms"] = summary(casts)
            cluster.external.discard("bench-client")
    return figures


async def main(args: argparse.Namespace) -> dict[str, Any]:
    echo = Echo()
    try:
        modes = {"both": (False, True), "no": (False,), "yes": (True,)}[args.sealed]
        results = {}
        for sealed in modes:
            name = "sealed" if sealed else "unsealed"
            results[name] = await measure(args, sealed, echo)
            print(name, json.dumps(results[name]), flush=True)
        if "sealed" in results and "unsealed" in results:
            results["sealed_over_unsealed_send_p50"] = round(
                results["sealed"]["send_ms"]["p50"] / results["unsealed"]["send_ms"]["p50"], 2
            )
            print("sealed / unsealed send p50:", results["sealed_over_unsealed_send_p50"])
        return results
    finally:
        echo.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sends", type=int, default=1000, help="timed round trips of each path")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight")
    parser.add_argument("--seconds", type=float, default=5.0, help="throughput window")
    parser.add_argument("--broadcast-size", type=int, default=20, help="nodes (0: skip)")
    parser.add_argument("--broadcasts", type=int, default=30, help="timed broadcasts")
    parser.add_argument("--sealed", choices=("both", "no", "yes"), default="both")
    parser.add_argument("--json", help="also write the figures to this file")
    arguments = parser.parse_args()
    arguments.broadcast_size = min(arguments.broadcast_size, 190)
    figures = anyio.run(main, arguments, backend="trio")
    if arguments.json:
        Path(arguments.json).write_text(json.dumps(figures, indent=2))
