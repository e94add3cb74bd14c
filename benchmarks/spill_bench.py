"""Spill-over store over 5 local node processes: write and read back --size
bytes (default 1 GiB) in 1 MiB chunks, next to a raw local file write/read
and a raw loopback TCP stream of the same bytes measured in the same run,
and each node's peak memory beside its memory limit.

    .venv/bin/python benchmarks/spill_bench.py [--size 1GiB] [--chunk 1MiB] [--nodes 5]

This process is the writer node; the others are `--member` processes of
this script, and the last of them also reads the whole store back (the
index from the writer, the chunks from every holder) (sqlite lock and spill directories in a temporary directory).
Every node gets the same limits: memory = 40% and disk = 80% of size/nodes,
so the data fills the writer's memory and disk and then spreads over the
members. Peak memory is the kernel's high-water mark of each process
(VmHWM), printed with the resident size after start-up, so the growth can
be compared with the memory limit.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import tempfile
import time
from typing import Any

import anyio
from anyio.abc import Process, SocketStream

import hedgeplug
from hedgeplug.options import parse_size
from hedgeplug.spill import open_spill, read_spill, serve_spill

MiB = 1 << 20


def config(directory: str, name: str) -> dict[str, Any]:
    return {
        "node": {"id": name, "cluster": "spillbench", "stop_timeout": "3s"},
        "lock": {"use": "sqlite", "path": f"{directory}/lock.db", "ttl": "5s"},
        # Frames big enough for a whole 1 MiB chunk in one piece.
        "transport": {"use": "tcp", "bind": "127.0.0.1:0", "max_frame": "2MiB"},
        "membership": {"use": "heartbeat", "interval": "500ms", "missed": 10},
    }


def memory_status() -> dict[str, int]:
    """Resident and peak resident size of this process, in bytes (Linux)."""
    figures: dict[str, int] = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                figures[key] = int(value.split()[0]) * 1024
    return figures


def chunk_bytes(base: bytes, index: int) -> bytes:
    return struct.pack(">Q", index) + base[8:]


# ------------------------------------------------------------ member processes


async def read_here(node: Any, writer: str) -> dict[str, Any]:
    """Read the whole store from this member (the index from the writer, the
    chunks from every holder); the seconds it took and what came back."""
    started = time.perf_counter()
    seen = size = 0
    async for data in read_spill(node, "bench", writer=writer):
        assert data[:8] == struct.pack(">Q", seen), f"chunk {seen} out of order"
        seen += 1
        size += len(data)
    return {"read_s": time.perf_counter() - started, "chunks": seen, "bytes": size}


async def member(args: argparse.Namespace) -> None:
    async with hedgeplug.open_node(config(args.workdir, args.member)) as node:
        async with serve_spill(node, memory=args.memory, disk=args.disk, directory=args.workdir) as service:
            start = memory_status()
            print("ready", flush=True)
            # The writer says "read" (read the store from here) and then stop (or exits).
            while (await anyio.to_thread.run_sync(sys.stdin.readline)).strip() == "read":
                print(json.dumps(await read_here(node, "n1")), flush=True)
            end = memory_status()
            figures = {"id": node.id, "rss_start": start["VmRSS"], "rss_peak": end["VmHWM"], **service.stats()}
            print(json.dumps(figures), flush=True)


class Lines:
    """Whole lines from a child process's stdout (reads may split or join them)."""

    def __init__(self, process: Process) -> None:
        assert process.stdout is not None
        self._stdout = process.stdout
        self._buffer = b""

    async def next(self) -> bytes:
        while b"\n" not in self._buffer:
            self._buffer += await self._stdout.receive()
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line


# ------------------------------------------------------------ baselines


async def raw_file(path: str, base: bytes, size: int, chunk: int) -> tuple[float, float]:
    def write() -> None:
        with open(path, "wb") as f:
            for i in range(size // chunk):
                f.write(chunk_bytes(base, i))

    def read() -> None:
        with open(path, "rb") as f:
            while f.read(chunk):
                pass

    started = time.perf_counter()
    await anyio.to_thread.run_sync(write)
    wrote = time.perf_counter() - started
    started = time.perf_counter()
    await anyio.to_thread.run_sync(read)
    read_s = time.perf_counter() - started
    os.unlink(path)
    return wrote, read_s


async def raw_tcp(base: bytes, size: int, chunk: int) -> float:
    received = 0
    done = anyio.Event()

    async def serve(stream: SocketStream) -> None:
        nonlocal received
        async with stream:
            while received < size:
                received += len(await stream.receive(1 << 20))
        done.set()

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve)
        async with await anyio.connect_tcp("127.0.0.1", port) as client:
            for i in range(size // chunk):
                await client.send(chunk_bytes(base, i))
            await done.wait()
        tg.cancel_scope.cancel()
    await listener.aclose()
    return time.perf_counter() - started


# ------------------------------------------------------------ the writer


async def writer(args: argparse.Namespace) -> None:
    size, chunk = parse_size(args.size), parse_size(args.chunk)
    count = size // chunk
    size = count * chunk
    share = size // args.nodes
    memory, disk = int(share * 0.4), int(share * 0.8)
    base = os.urandom(chunk)
    mb = size / 1e6
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="spillbench-") as workdir:
        args.workdir = workdir
        members = []
        command = [sys.executable, __file__, "--workdir", workdir, "--memory", str(memory), "--disk", str(disk)]
        async with hedgeplug.open_node(config(workdir, "n1")) as node:
            for i in range(2, args.nodes + 1):
                members.append(await anyio.open_process([*command, "--member", f"n{i}"]))
            lines = [Lines(process) for process in members]
            for reader in lines:
                with anyio.fail_after(60):
                    line = await reader.next()
                assert line == b"ready", line
            with anyio.fail_after(60):
                while len(node.members) < args.nodes:
                    await anyio.sleep(0.1)
            async with serve_spill(node, memory=memory, disk=disk, directory=workdir) as service:
                rss_start = memory_status()["VmRSS"]
                async with open_spill(node, "bench", ttl="10m") as store:
                    started = time.perf_counter()
                    for i in range(count):
                        await store.append(chunk_bytes(base, i))
                    write_s = time.perf_counter() - started
                    started = time.perf_counter()
                    seen = 0
                    async for data in store.read():
                        assert data[:8] == struct.pack(">Q", seen), f"chunk {seen} out of order"
                        assert len(data) == chunk, f"chunk {seen} has {len(data)} bytes"
                        seen += 1
                    read_s = time.perf_counter() - started
                    assert seen == count, (seen, count)
                    holders = store.holders()
                    # The same store read from another member: index from the writer, chunks from every holder.
                    reader_process, reader_lines = members[-1], lines[-1]
                    assert reader_process.stdin is not None
                    await reader_process.stdin.send(b"read\n")
                    with anyio.fail_after(600):
                        remote = json.loads(await reader_lines.next())
                    assert remote["chunks"] == count and remote["bytes"] == size, remote
                own = {"id": node.id, "rss_start": rss_start, "rss_peak": memory_status()["VmHWM"], **service.stats()}
            figures = [own]
            for process, reader in zip(members, lines, strict=True):
                assert process.stdin is not None
                await process.stdin.send(b"stop\n")
                with anyio.fail_after(30):
                    figures.append(json.loads(await reader.next()))
                await process.wait()
        file_write, file_read = await raw_file(f"{workdir}/raw.bin", base, size, chunk)
        tcp = await raw_tcp(base, size, chunk)

    print(f"spill-over store: {size / MiB:.0f} MiB in {count} chunks of {chunk / MiB:g} MiB over {args.nodes} nodes;")
    print(f"  machine load average (1 min) at the start {load_start:.1f}, at the end {os.getloadavg()[0]:.1f}")
    print(f"  limits per node: memory {memory / MiB:.0f} MiB, disk {disk / MiB:.0f} MiB")
    print(f"  {'spill write (append)':<28} {mb / write_s:>9,.0f} MB/s")
    print(f"  {'spill read (in order)':<28} {mb / read_s:>9,.0f} MB/s")
    print(f"  {'spill read on n' + str(args.nodes):<28} {mb / remote['read_s']:>9,.0f} MB/s")
    print(f"  {'raw local file write':<28} {mb / file_write:>9,.0f} MB/s")
    print(f"  {'raw local file read':<28} {mb / file_read:>9,.0f} MB/s")
    print(f"  {'raw loopback tcp stream':<28} {mb / tcp:>9,.0f} MB/s")
    print("  where the bytes went: " + ", ".join(f"{h} {b / MiB:.0f} MiB" for h, b in holders.items()))
    print("  memory per node: budget = the memory limit given; held = what held pieces may take of it;")
    print("  growth = peak resident size (VmHWM) less the resident size after start-up")
    print(
        f"  {'node':<5} {'budget':>8} {'held max':>9} {'held peak':>10} {'disk peak':>10}"
        f" {'rss start':>10} {'rss peak':>9} {'growth':>8}"
    )
    for f in figures:
        growth = f["rss_peak"] - f["rss_start"]
        verdict = "under budget" if growth <= f["memory_budget"] else "OVER BUDGET"
        print(
            f"  {f['id']:<5} {f['memory_budget'] / MiB:>7.1f}M {f['memory_limit'] / MiB:>8.1f}M"
            f" {f['memory_peak'] / MiB:>9.1f}M {f['disk_peak'] / MiB:>9.1f}M {f['rss_start'] / MiB:>9.1f}M"
            f" {f['rss_peak'] / MiB:>8.1f}M {growth / MiB:>7.1f}M  {verdict}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1GiB", help="bytes to write and read back (e.g. 256MiB)")
    parser.add_argument("--chunk", default="1MiB", help="bytes per chunk")
    parser.add_argument("--nodes", type=int, default=5, help="nodes, this process included")
    parser.add_argument("--backend", default="trio", choices=["trio", "asyncio"])
    parser.add_argument("--member", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--memory", help=argparse.SUPPRESS)
    parser.add_argument("--disk", help=argparse.SUPPRESS)
    args = parser.parse_args()
    anyio.run(member if args.member else writer, args, backend=args.backend)
