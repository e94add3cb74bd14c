"""Request round trips over the tcp and udp transports, next to a bare anyio
TCP echo measured in the same run, so the ratio shows what the transport
layer costs on this machine.

    .venv/bin/python benchmarks/transport_bench.py [--count 2000] [--size 64] [--backend trio]

Everything runs on loopback in one process; every loop is bounded by
--count and by --seconds per measurement.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
from anyio.abc import SocketAttribute, SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream

from hedgeplug.stats import percentile
from hedgeplug.testing.transport_contract import serving
from hedgeplug.transport.tcp import TcpTransport
from hedgeplug.transport.udp import UdpTransport

RoundTrip = Callable[[], Awaitable[None]]


async def throughput(request: RoundTrip, concurrency: int, total: int, seconds: float) -> float:
    """Completed requests per second with `concurrency` requests in flight."""
    done = 0
    started = time.perf_counter()

    async def worker() -> None:
        nonlocal done
        while done < total and time.perf_counter() - started < seconds:
            await request()
            done += 1

    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(worker)
    return done / (time.perf_counter() - started)


async def interleaved(
    paths: dict[str, RoundTrip], count: int, seconds: float
) -> dict[str, list[float]]:
    """Round-trip times in microseconds per path, taken in turn so every path
    sees the same machine load; stops at `count` rounds or after `seconds`."""
    for round_trip in paths.values():
        for _ in range(min(50, count)):  # warm up: connections, caches
            await round_trip()
    samples: dict[str, list[float]] = {name: [] for name in paths}
    order = list(paths.items())
    stop_at = time.perf_counter() + seconds
    for i in range(count):
        if time.perf_counter() > stop_at:
            break
        for name, round_trip in order[i % len(order) :] + order[: i % len(order)]:
            started = time.perf_counter()
            await round_trip()
            samples[name].append((time.perf_counter() - started) * 1e6)
    return samples


@asynccontextmanager
async def raw_echo(size: int) -> AsyncIterator[RoundTrip]:
    """A bare anyio TCP echo server and a round trip against it."""

    async def echo(stream: SocketStream) -> None:
        buffered = BufferedByteReceiveStream(stream)
        async with stream:
            try:
                while True:
                    await stream.send(await buffered.receive_exactly(size))
            except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError):
                pass

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, echo)
        port = listener.extra(SocketAttribute.local_port)
        client = await anyio.connect_tcp("127.0.0.1", port)
        reader = BufferedByteReceiveStream(client)
        payload = b"e" * size

        async def round_trip() -> None:
            await client.send(payload)
            await reader.receive_exactly(size)

        try:
            yield round_trip
        finally:
            await client.aclose()
            tg.cancel_scope.cancel()


@asynccontextmanager
async def transport_pair(transport_class: type, size: int) -> AsyncIterator[RoundTrip]:
    """Two transports of a kind, serving, and a request round trip between them."""

    async def answer(data: bytes, peer: str) -> bytes:
        return data

    server, client = transport_class(), transport_class()
    payload = b"t" * size
    async with serving(server, answer) as address, serving(client):

        async def round_trip() -> None:
            await client.request(address, payload, 5)

        yield round_trip


async def main(args: argparse.Namespace) -> None:
    print(
        f"backend={args.backend} payload={args.size} B, up to {args.count} round trips per path, "
        "paths measured in turn"
    )
    async with (
        raw_echo(args.size) as raw,
        transport_pair(TcpTransport, args.size) as tcp,
        transport_pair(UdpTransport, args.size) as udp,
    ):
        paths = {"raw anyio tcp echo": raw, "tcp transport": tcp, "udp transport": udp}
        samples = await interleaved(paths, args.count, args.seconds)
        rates = {
            name: await throughput(paths[name], 64, args.count * 5, args.seconds)
            for name in ("tcp transport", "udp transport")
        }
    raw_p50 = percentile(samples["raw anyio tcp echo"], 0.5)
    raw_p99 = percentile(samples["raw anyio tcp echo"], 0.99)
    heading = ("path", "n", "p50 us", "p99 us", "p50/raw", "p99/raw", "req/s@64")
    widths = (-22, 6, 10, 10, 9, 9, 10)
    print(
        "".join(
            f"{text:<{-w}}" if w < 0 else f"{text:>{w}}"
            for text, w in zip(heading, widths, strict=True)
        )
    )
    for name, values in samples.items():
        p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
        rate = f"{rates[name]:.0f}" if name in rates else ""
        print(
            f"{name:<22}{len(values):>6}{p50:>10.0f}{p99:>10.0f}"
            f"{p50 / raw_p50:>9.2f}{p99 / raw_p99:>9.2f}{rate:>10}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="round trips per measurement")
    parser.add_argument("--size", type=int, default=64, help="payload bytes")
    parser.add_argument("--seconds", type=float, default=10.0, help="time bound per measurement")
    parser.add_argument("--backend", choices=("trio", "asyncio"), default="trio")
    arguments = parser.parse_args()
    anyio.run(main, arguments, backend=arguments.backend)
