"""Stream throughput: messages/s and MB/s of a stream to the leader, a plain
node stream and a stream broadcast, next to a raw anyio TCP stream (4-byte
length prefix) measured in the same run on the same machine.

    .venv/bin/python benchmarks/stream_bench.py [--count 20000] [--sizes 64,65536] [--backend trio]

Everything runs on loopback in one process: two nodes (sqlite lock in a
temporary directory, tcp), plus a third for the broadcast. Each measurement
sends --count messages (fewer for large ones, at most --megabytes in all)
and is bounded by --seconds; the receiver counts them and answers once.
"""

from __future__ import annotations

import argparse
import struct
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import anyio
from anyio.abc import SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream

import hedgeplug

Run = Callable[[bytes, int], Awaitable[int]]


def config(directory: str, name: str) -> dict[str, Any]:
    return {
        "node": {"id": name, "cluster": "streambench", "stop_timeout": "2s"},
        "lock": {"use": "sqlite", "path": f"{directory}/lock.db", "ttl": "3s"},
        "transport": {"use": "tcp", "bind": "127.0.0.1:0", "max_frame": "2MiB"},
        "membership": {"use": "heartbeat", "interval": "500ms"},
    }


async def raw_tcp(message: bytes, count: int) -> int:
    """A bare anyio TCP stream: the same messages with a 4-byte length prefix."""
    received = 0
    done = anyio.Event()

    async def serve(stream: SocketStream) -> None:
        nonlocal received
        buffered = BufferedByteReceiveStream(stream)
        async with stream:
            while received < count:
                (size,) = struct.unpack(">I", await buffered.receive_exactly(4))
                await buffered.receive_exactly(size)
                received += 1
        done.set()

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve)
        async with await anyio.connect_tcp("127.0.0.1", port) as client:
            frame = struct.pack(">I", len(message)) + message
            for _ in range(count):
                await client.send(frame)
            await done.wait()
        tg.cancel_scope.cancel()
    await listener.aclose()
    return received


async def counting(message: Any, stream: Any) -> None:
    count = 0
    async for _ in stream:
        count += 1
    await stream.send(count)


async def measure(name: str, run: Run, message: bytes, count: int, seconds: float) -> None:
    with anyio.move_on_after(seconds) as scope:
        started = time.perf_counter()
        received = await run(message, count)
        elapsed = time.perf_counter() - started
    if scope.cancelled_caught:
        print(f"  {name:<28} did not finish within {seconds:g}s")
        return
    assert received == count, (name, received, count)
    rate = count / elapsed
    print(f"  {name:<28} {rate:>12,.0f} msg/s {rate * len(message) / 1e6:>10,.1f} MB/s")


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="streambench-") as directory:
        async with AsyncExitStack() as stack:
            nodes = [
                await stack.enter_async_context(hedgeplug.open_node(config(directory, n))) for n in ("n1", "n2", "n3")
            ]
            with anyio.fail_after(20):
                while not all(len(n.members) == 3 and n.leader for n in nodes):
                    await anyio.sleep(0.05)
            for node in nodes:
                node.channel("count").handle_streams(counting)
            leader = next(n for n in nodes if n.is_leader)
            follower = next(n for n in nodes if not n.is_leader)

            async def to_leader(message: bytes, count: int) -> int:
                async with await follower.stream_to_leader("count") as stream:
                    for _ in range(count):
                        await stream.send(message)
                    await stream.send_eof()
                    return int(await stream.receive())

            async def plain(message: bytes, count: int) -> int:
                async with await follower.open_stream(leader.id, "plain") as stream:
                    for _ in range(count):
                        await stream.send(message)
                    await stream.send(None)
                    return int(await stream.receive())

            async def plain_counting(message: Any, stream: Any) -> None:
                count = 0
                while await stream.receive() is not None:
                    count += 1
                await stream.send(count)

            leader.channel("plain").handle_streams(plain_counting)

            async def broadcast(message: bytes, count: int) -> int:
                async with await follower.stream_broadcast("count", include_self=False) as fan:
                    for _ in range(count):
                        await fan.send(message)
                    await fan.send_eof()
                    counts = [int(r.value) async for r in fan.replies() if r.ok]
                assert len(counts) == 2, counts
                return min(counts)

            runs: dict[str, Run] = {
                "raw anyio tcp stream": raw_tcp,
                "node.open_stream": plain,
                "node.stream_to_leader": to_leader,
                "stream_broadcast (2 members)": broadcast,
            }
            for size in args.sizes:
                count = max(10, min(args.count, args.megabytes * 1_000_000 // max(1, size)))
                message = bytes(size)
                print(f"{count} messages of {size} bytes ({args.backend}):")
                for name, run in runs.items():
                    await measure(name, run, message, count, args.seconds)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=20000, help="messages per measurement, at most")
    parser.add_argument("--megabytes", type=int, default=512, help="bytes per measurement, at most (MB)")
    parser.add_argument(
        "--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[64, 65536], help="message sizes"
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="bound on each measurement")
    parser.add_argument("--backend", default="trio", choices=["trio", "asyncio"])
    args = parser.parse_args()
    anyio.run(main, args, backend=args.backend)
