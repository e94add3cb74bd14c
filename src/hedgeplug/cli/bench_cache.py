"""`hedgeplug bench cache`: the partitioned cache on real node processes,
beside redis-server and memcached measured in the same run.

    hedgeplug bench cache                       # 5 nodes, 100 B, 10 KiB, 1 MiB
    hedgeplug bench cache --json --count 200 --seconds 0.3 --values 100,10KiB

Starts redis-server and memcached (from the PATH or /usr/bin) on free
loopback ports, and `--size` node processes (tcp, sqlite lock in a
temporary folder, the cache "bench" with R=2), each also holding a redis-py
and a pymemcache client. For every value size: one node fills the keys
into all three; then get and set are timed one call at a time, every path
in turn so all see the same load (p50/p99 in microseconds, ops/s = calls
per second of one caller), from one node alone and from every node at
once (ops/s summed over the nodes); then keys read per second in batches
(hedgeplug get_many, redis MGET, memcached get_many) per node; then the
memory one entry costs beyond its value. At the smallest size, each get
path also runs alone for the CPU one call costs all processes together
(caller and server; a figure that, unlike latency, hardly moves with the
machine's load). Every phase is bounded by
`--count` and `--seconds`; a missing redis-server or memcached is said and
the other figures are still measured.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

import anyio

from ..config import Setting, write_config
from ..errors import HedgeplugError
from ..options import parse_size
from ..processes import cluster_config
from ..stats import percentile
from .bench_cache_node import FLOOR
from .bench_cache_output import format_cache_figures
from .bench_cache_servers import (
    BASELINES,
    BaselineServer,
    NodeWorker,
    missing_reason,
    server_version,
)
from .common import print_json

DEFAULT_VALUES = "100,10KiB,1MiB"
MAX_FRAME = 4 << 20  # room for a 1 MiB value (the default frame limit is 1 MiB)
MEMORY_BUDGET = 64 << 20  # bytes of values filled per size (fewer keys for big values)
MAX_NODES = 20
TARGET_REMOTE_OVER_REDIS = 1.5
TARGET_LOCAL_US = 10.0
TARGET_BATCHED_PER_NODE = 20_000
# Timed alone for CPU per call (at the smallest value size).
CPU_PATHS = ("hedgeplug get", "hedgeplug get local", "redis get", "memcached get", FLOOR)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options only `bench cache` reads (the cluster size is --size)."""
    group = parser.add_argument_group("cache")
    group.add_argument("--count", type=int, default=1000,
                       help="cache: calls per path per node at most (default 1000)")
    group.add_argument("--seconds", type=float, default=1.0,
                       help="cache: bound on each timed phase in seconds (default 1)")
    group.add_argument("--values", default=DEFAULT_VALUES,
                       help=f"cache: value sizes, comma-separated (default {DEFAULT_VALUES})")
    group.add_argument("--keys", type=int, default=1000,
                       help="cache: keys per value size at most (default 1000)")
    group.add_argument("--batch", type=int, default=100, help="cache: keys per batched read (default 100)")


def parse_values(text: str) -> list[int]:
    sizes = []
    for word in text.split(","):
        try:
            size = parse_size(word.strip())
        except (ValueError, TypeError) as exc:
            raise HedgeplugError(f"--values: {word.strip()!r} is not a size ({exc})") from None
        if not 1 <= size <= 1 << 20:
            raise HedgeplugError(f"--values: {word.strip()} is outside 1 B .. 1 MiB")
        sizes.append(size)
    return sizes


def check_arguments(args: argparse.Namespace) -> list[int]:
    if not 3 <= args.size <= MAX_NODES:
        raise HedgeplugError(f"--size must be from 3 (with R=2, so that some keys live elsewhere) to {MAX_NODES} nodes for bench cache")
    if args.count < 1 or args.keys < 2 or args.batch < 1:
        raise HedgeplugError("--count and --batch must be at least 1, --keys at least 2")
    if args.seconds <= 0 or args.timeout <= 0:
        raise HedgeplugError("--seconds and --timeout must be positive")
    if getattr(args, "plot", None):
        raise HedgeplugError("--plot: bench cache draws no plot; --json gives every figure")
    if args.transport not in (None, "tcp"):
        raise HedgeplugError("bench cache runs on the tcp transport (values up to 1 MiB)")
    return parse_values(args.values)


def summary(samples: list[float]) -> dict[str, Any]:
    data = sorted(samples)
    mean = sum(data) / len(data)
    return {
        "count": len(data),
        "p50_us": round(percentile(data, 0.5), 1),
        "p99_us": round(percentile(data, 0.99), 1),
        "ops_per_s": round(1e6 / mean, 1),
    }


def merge(answers: list[dict[str, Any]]) -> dict[str, Any]:
    """Every node's samples pooled per path; ops/s summed over the nodes."""
    out: dict[str, Any] = {}
    paths = {p for a in answers for p in a["samples"]}
    for path in sorted(paths):
        per_node = [a["samples"][path] for a in answers if a["samples"].get(path)]
        pooled = summary([s for samples in per_node for s in samples])
        pooled["ops_per_s"] = round(sum(1e6 / (sum(s) / len(s)) for s in per_node), 1)
        pooled["nodes"] = len(per_node)
        out[path] = pooled
    return out


class CacheBench:
    def __init__(self, args: argparse.Namespace, sizes: list[int], workdir: Path) -> None:
        self.args = args
        self.sizes = sizes
        self.workdir = workdir
        self.servers: dict[str, BaselineServer] = {}
        self.nodes: list[NodeWorker] = []
        self.figures: dict[str, Any] = {
            "scenario": "cache",
            "nodes": args.size,
            "replicas": 2,
            "transport": "tcp",
            "value_sizes": sizes,
            "baselines": {},
            "missing": {},
        }

    def keys_for(self, size: int) -> int:
        return max(2, min(self.args.keys, MEMORY_BUDGET // size))

    async def start(self) -> None:
        for kind in BASELINES:
            why = missing_reason(kind)
            if why is not None:
                self.figures["missing"][kind] = why
                continue
            server = BaselineServer(kind, self.workdir)
            self.servers[kind] = server
            await anyio.to_thread.run_sync(server.wait_listening)
            self.figures["baselines"][kind] = await anyio.to_thread.run_sync(server_version, kind, server.port)
        settings = [*self.args.set]
        if self.args.transport is not None:
            settings.append(Setting("transport", "use", self.args.transport, "--transport"))
        if self.args.membership is not None:
            settings.append(Setting("membership", "use", self.args.membership, "--membership"))
        config = cluster_config(
            self.workdir, cluster=f"bench-cache-{uuid.uuid4().hex[:8]}", overrides=settings
        )
        self.figures["transport"] = config.transport.use
        if int(getattr(config.transport.options, "max_frame", MAX_FRAME)) < MAX_FRAME:
            config = config.with_options("transport", max_frame=MAX_FRAME)
        ports = {kind: s.port for kind, s in self.servers.items()}

        async def one(index: int) -> None:
            path = write_config(config.with_node(id=f"c{index}"), self.workdir / f"c{index}.toml")
            node = await NodeWorker.start(path, ports, self.workdir / f"c{index}.log", self.args.timeout)
            self.nodes.append(node)

        async with anyio.create_task_group() as tg:
            for index in range(1, self.args.size + 1):
                tg.start_soon(one, index)
        self.nodes.sort(key=lambda n: n.id)
        answers = await self.on_all("settle", size=self.args.size, timeout=self.args.timeout)
        if any(a["members"] < self.args.size for a in answers):
            seen = [a["members"] for a in answers]
            raise HedgeplugError(f"the {self.args.size} nodes did not all see each other within "
                                 f"{self.args.timeout:g}s (views of {seen} members)")
        for index, node in enumerate(self.nodes):  # each to the next one's echo
            peer = self.nodes[(index + 1) % len(self.nodes)]
            await node.ask(self.args.timeout, "connect_echo", port=peer.echo_port)

    async def on_all(self, op: str, **args: Any) -> list[Any]:
        answers: list[Any] = [None] * len(self.nodes)

        async def one(index: int) -> None:
            answers[index] = await self.nodes[index].ask(self.args.timeout, op, **args)

        async with anyio.create_task_group() as tg:
            for index in range(len(self.nodes)):
                tg.start_soon(one, index)
        return answers

    async def measure(self, size: int) -> dict[str, Any]:
        keys = self.keys_for(size)
        first, timeout = self.nodes[0], self.args.timeout
        count = self.args.count
        filled = await first.ask(timeout, "fill", size=size, count=keys)
        figures: dict[str, Any] = {"keys": keys}
        timed = {"size": size, "keys": keys, "count": count, "seconds": self.args.seconds}
        figures["one_node"] = merge([await first.ask(timeout, "latency", **timed)])
        figures["all_nodes"] = merge(await self.on_all("latency", **timed))
        batched = {"size": size, "keys": keys, "batch": self.args.batch, "seconds": self.args.seconds}
        one = (await first.ask(timeout, "batch", **batched))["keys_per_s"]
        every = [a["keys_per_s"] for a in await self.on_all("batch", **batched)]
        figures["batched_keys_per_s"] = {
            path: {
                "one_node": round(rate, 1),
                "per_node_all_at_once": round(sum(e.get(path, 0.0) for e in every) / len(every), 1),
            }
            for path, rate in one.items()
        }
        entries = max(2, min(2000, MEMORY_BUDGET // 4 // size))
        own = await first.ask(timeout, "memory", size=size, entries=entries)
        memory = {
            "hedgeplug": {
                "overhead_bytes_per_entry": round(own["bytes_per_entry"] - size - own["key_bytes"], 1),
                "key_bytes": own["key_bytes"],
            }
        }
        key_bytes = len(f"bench:{size}:{keys // 2}")
        for kind, per_entry in filled.items():
            memory[kind] = {"overhead_bytes_per_entry": round(per_entry - size - key_bytes, 1), "key_bytes": key_bytes}
        figures["memory"] = memory
        return figures

    def cpu_seconds(self) -> float:
        """CPU time of every process a get can touch: the nodes and the servers."""
        pids = [n.process.pid for n in self.nodes] + [s.process.pid for s in self.servers.values()]
        return sum(process_cpu(pid) for pid in pids)

    async def cpu_per_call(self, size: int) -> dict[str, float]:
        """Each path alone from the first node: CPU microseconds per call of all
        processes together (caller and server), less their idle rate. Unlike
        latency this hardly depends on how loaded the machine is."""
        keys, first = self.keys_for(size), self.nodes[0]
        began, idle_cpu = anyio.current_time(), self.cpu_seconds()
        await anyio.sleep(min(1.0, self.args.seconds))
        idle_rate = (self.cpu_seconds() - idle_cpu) / (anyio.current_time() - began)
        out = {}
        for path in CPU_PATHS:
            began, cpu = anyio.current_time(), self.cpu_seconds()
            answer = await first.ask(self.args.timeout, "latency", size=size, keys=keys,
                                     count=self.args.count, seconds=self.args.seconds, only=[path])
            calls = len(answer["samples"].get(path, []))
            if calls:
                used = self.cpu_seconds() - cpu - idle_rate * (anyio.current_time() - began)
                out[path] = round(max(used, 0.0) / calls * 1e6, 1)
        return out

    def targets(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        smallest = self.figures["sizes"].get(str(min(self.sizes)))
        if smallest is None:
            return out
        one = smallest["one_node"]
        remote, local, redis = one.get("hedgeplug get"), one.get("hedgeplug get local"), one.get("redis get")
        floor = one.get(FLOOR)
        if remote and floor:
            out["remote_get_over_floor_p50"] = round(remote["p50_us"] / floor["p50_us"], 2)
        if remote and redis:
            ratio = remote["p50_us"] / redis["p50_us"]
            out["remote_get_over_redis_get_p50"] = {
                "value": round(ratio, 2), "target": TARGET_REMOTE_OVER_REDIS, "met": ratio <= TARGET_REMOTE_OVER_REDIS
            }
        cpu = smallest.get("cpu_us_per_call", {})
        if cpu.get("hedgeplug get") and cpu.get("redis get"):
            ratio = cpu["hedgeplug get"] / cpu["redis get"]
            out["remote_get_over_redis_get_cpu"] = {
                "value": round(ratio, 2), "target": TARGET_REMOTE_OVER_REDIS, "met": ratio <= TARGET_REMOTE_OVER_REDIS
            }
        if local:
            out["local_get_p50_us"] = {
                "value": local["p50_us"], "target": TARGET_LOCAL_US, "met": local["p50_us"] < TARGET_LOCAL_US
            }
        batched = smallest["batched_keys_per_s"].get("hedgeplug get_many")
        if batched:
            rate = batched["one_node"]
            out["batched_gets_per_s_per_node"] = {
                "value": rate, "target": TARGET_BATCHED_PER_NODE, "met": rate >= TARGET_BATCHED_PER_NODE
            }
        out["value_size"] = min(self.sizes)
        return out

    async def run(self) -> dict[str, Any]:
        try:
            await self.start()
            self.figures["sizes"] = {}
            for size in self.sizes:
                self.figures["sizes"][str(size)] = await self.measure(size)
            smallest = self.figures["sizes"][str(min(self.sizes))]
            smallest["cpu_us_per_call"] = await self.cpu_per_call(min(self.sizes))
            self.figures["targets"] = self.targets()
        finally:
            with anyio.CancelScope(shield=True):
                async with anyio.create_task_group() as tg:
                    for node in self.nodes:
                        tg.start_soon(node.stop)
                for server in self.servers.values():
                    server.stop()
        self.figures["load_average"] = [round(x, 2) for x in os.getloadavg()]
        return self.figures


def process_cpu(pid: int) -> float:
    """utime + stime of a process so far (Linux /proc); 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(args: argparse.Namespace) -> int:
    sizes = check_arguments(args)
    with tempfile.TemporaryDirectory(prefix="hedgeplug-bench-cache-") as folder:
        figures = anyio.run(CacheBench(args, sizes, Path(folder)).run)
    if args.json:
        print_json(figures)
    else:
        print(format_cache_figures(figures), flush=True)
    return 0
