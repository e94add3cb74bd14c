"""What protecting the tcp transport costs: send-to-leader round trips and CPU
per message unsealed, sealed with a shared cluster key, and over mutual TLS,
all three in the same run beside a raw anyio TCP echo to another process;
and the cost of opening one connection with and without the TLS handshake.

    .venv/bin/python benchmarks/tls_bench.py [--rounds 20] [--batch 100] [--json out.json]

Three clusters run at once (two `hedgeplug run` processes each on loopback,
over the embedded sqlite lock), one per mode; the sender of each is one more
node in this process (it never leads). Each round times a batch of sends of
every path, the paths in a rotating order, so all see the same machine load.
CPU per message: this process's CPU time during a batch plus the leader
process's (or the echo server's), divided by the messages; it includes the
background work of the nodes (heartbeats every second), the same for all
modes. Every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio

from hedgeplug import open_node
from hedgeplug.processes import ProcessCluster
from hedgeplug.stats import percentile
from hedgeplug.transport.tcp import TcpOptions, TcpTransport
from hedgeplug.transport.tcp.certificates import create_ca, issue_node

PHASE_TIMEOUT = 120.0
SIZE = 64
MODES = ("unsealed", "sealed", "tls")

# The raw echo baseline the messaging benchmark uses (this script runs from
# benchmarks/, so the sibling module imports).
from messaging_bench import Echo  # noqa: E402

RoundTrip = Callable[[], Awaitable[Any]]


def cpu_seconds(pid: int) -> float:
    """utime + stime of process `pid` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def overrides_for(mode: str, pki: Path) -> list[str]:
    common = ["lock.ttl=3s", "membership.interval=1s"]
    if mode == "sealed":
        return [*common, "node.key=bench-secret-key-of-some-length"]
    if mode == "tls":
        return [*common, *issue_node(pki, "member").overrides()]
    return common


class MeasuredPath:
    """One measured path: its round trip, and the process serving it (for CPU)."""

    def __init__(self, call: RoundTrip, server_pid: int) -> None:
        self.call = call
        self.server_pid = server_pid
        self.samples_ms: list[float] = []
        self.cpu_s = 0.0
        self.messages = 0

    async def batch(self, count: int) -> None:
        cpu_here, cpu_there = time.process_time(), cpu_seconds(self.server_pid)
        for _ in range(count):
            t0 = time.perf_counter()
            await self.call()
            self.samples_ms.append((time.perf_counter() - t0) * 1000)
        self.cpu_s += time.process_time() - cpu_here + cpu_seconds(self.server_pid) - cpu_there
        self.messages += count

    def figures(self) -> dict[str, float]:
        return {
            "n": len(self.samples_ms),
            "p50_ms": round(percentile(self.samples_ms, 0.5), 4),
            "p99_ms": round(percentile(self.samples_ms, 0.99), 4),
            "cpu_us_per_message": round(self.cpu_s / self.messages * 1e6, 1),
        }


async def start_mode(stack: AsyncExitStack, mode: str, workdir: Path, pki: Path) -> MeasuredPath:
    folder = workdir / mode
    folder.mkdir()
    cluster = ProcessCluster(
        folder, cluster=f"tlsbench-{mode}", overrides=overrides_for(mode, pki),
        extra_args=["--log-level", "warning"],
    )
    await stack.enter_async_context(cluster)
    await cluster.start(2)
    await cluster.wait_agreed(PHASE_TIMEOUT)
    cluster.external.add("bench-client")
    node = await stack.enter_async_context(open_node(cluster.config.with_node(id="bench-client")))
    lease = await node.wait_leader(PHASE_TIMEOUT)
    assert lease.holder != node.id, "the bench node must not lead"
    leader = cluster.by_id(lease.holder)
    payload = b"x" * SIZE

    async def send() -> None:
        await node.send(payload)

    return MeasuredPath(send, leader.pid)


async def connection_setup(pki: Path, count: int) -> dict[str, dict[str, float]]:
    """The first request over a new connection (connect, TLS handshake if any,
    one round trip), plain and TLS in turn, to servers in this process: its
    wall time and the CPU time of both ends."""
    files = issue_node(pki, "setup")
    options = {
        "plain": TcpOptions(),
        "tls": TcpOptions(tls_cert=files.cert, tls_key=files.key, tls_ca=files.ca),
    }

    async def echo(body: bytes, peer: str) -> bytes:
        return body

    async def no_streams(stream: object) -> None:
        return None

    samples: dict[str, list[float]] = {name: [] for name in options}
    cpu_s = dict.fromkeys(options, 0.0)
    async with anyio.create_task_group() as tg:
        servers = {}
        for name, opts in options.items():
            servers[name] = TcpTransport(opts)
            await servers[name].bind()
            tg.start_soon(servers[name].serve, echo, no_streams)
        with anyio.fail_after(PHASE_TIMEOUT):
            for i in range(count):
                for name in sorted(options, reverse=bool(i % 2)):
                    client = TcpTransport(options[name])
                    t0, cpu0 = time.perf_counter(), time.process_time()
                    await client.request(servers[name].address, b"x" * SIZE, 10)
                    samples[name].append((time.perf_counter() - t0) * 1000)
                    cpu_s[name] += time.process_time() - cpu0
                    await client.aclose()
        for server in servers.values():
            await server.aclose()
        tg.cancel_scope.cancel()
    return {
        name: {
            "p50_ms": round(percentile(v, 0.5), 3),
            "p99_ms": round(percentile(v, 0.99), 3),
            # Both ends run here, so this is the whole cost of a new connection.
            "cpu_ms_both_ends": round(cpu_s[name] / len(v) * 1000, 3),
        }
        for name, v in samples.items()
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    echo = Echo()
    try:
        with tempfile.TemporaryDirectory(prefix="hedgeplug-tlsbench-") as folder:
            workdir = Path(folder)
            pki = workdir / "pki"
            create_ca(pki)
            async with AsyncExitStack() as stack:
                paths = {mode: await start_mode(stack, mode, workdir, pki) for mode in MODES}
                paths["echo"] = MeasuredPath(await echo.connect(), echo.server.pid)
                order = list(paths.values())
                for path in order:  # warm up: connections open, caches hot
                    for _ in range(50):
                        await path.call()
                with anyio.fail_after(PHASE_TIMEOUT * 4):
                    for i in range(args.rounds):
                        shift = i % len(order)
                        for path in order[shift:] + order[:shift]:
                            await path.batch(args.batch)
                figures: dict[str, Any] = {name: p.figures() for name, p in paths.items()}
            figures["connection_setup"] = await connection_setup(pki, args.connections)
        base = figures["unsealed"]
        for mode in ("sealed", "tls"):
            figures[f"{mode}_over_unsealed"] = {
                key: round(figures[mode][key] / base[key], 2)
                for key in ("p50_ms", "p99_ms", "cpu_us_per_message")
            }
        figures["unsealed_over_echo_p50"] = round(base["p50_ms"] / figures["echo"]["p50_ms"], 2)
        figures["load_average"] = [round(x, 2) for x in os.getloadavg()]
        figures["cpus"] = os.cpu_count()
        return figures
    finally:
        echo.close()


def report(figures: dict[str, Any]) -> None:
    print(f"{'path':10} {'p50 ms':>9} {'p99 ms':>9} {'CPU us/msg':>11}")
    for name in (*MODES, "echo"):
        f = figures[name]
        print(f"{name:10} {f['p50_ms']:9.3f} {f['p99_ms']:9.3f} {f['cpu_us_per_message']:11.1f}")
    for mode in ("sealed", "tls"):
        print(f"{mode} / unsealed:", json.dumps(figures[f"{mode}_over_unsealed"]))
    print("unsealed / echo p50:", figures["unsealed_over_echo_p50"])
    print("first request on a new connection:", json.dumps(figures["connection_setup"]))
    print("load average:", figures["load_average"], "on", figures["cpus"], "CPUs")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="rounds of batches")
    parser.add_argument("--batch", type=int, default=100, help="sends per path per round")
    parser.add_argument("--connections", type=int, default=50, help="new connections timed")
    parser.add_argument("--json", help="also write the figures to this file")
    arguments = parser.parse_args()
    result = anyio.run(main, arguments, backend="trio")
    report(result)
    if arguments.json:
        Path(arguments.json).write_text(json.dumps(result, indent=2))
