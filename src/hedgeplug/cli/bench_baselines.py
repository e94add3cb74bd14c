"""Baselines `hedgeplug bench` measures beside the nodes, in the same run:
a raw anyio TCP echo round trip, and the floor of idle cost (a bare trio
process making one raw TCP round trip per heartbeat interval)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import anyio.abc

# The floor process: connect, then one 64-byte round trip per interval, forever
# (the parent kills it; it also stops when the parent's echo goes away).
_FLOOR = r"""
import sys, anyio

async def main(port, interval):
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        while True:
            await stream.send(b"b" * 64)
            got = 0
            while got < 64:
                got += len(await stream.receive())
            await anyio.sleep(interval)

anyio.run(main, int(sys.argv[1]), float(sys.argv[2]), backend="trio")
"""


async def _echo(stream: Any) -> None:
    async with stream:
        try:
            while True:
                await stream.send(await stream.receive(64))
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            pass


class FloorProcess:
    """The floor process and the echo it talks to (served in this process)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._process: subprocess.Popen[bytes] | None = None
        self._tg: Any = None

    async def __aenter__(self) -> FloorProcess:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(listener.serve, _echo)
        self._process = subprocess.Popen(
            [sys.executable, "-c", _FLOOR, str(port), str(self.interval)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        await anyio.sleep(2 * self.interval)  # past its start-up
        return self

    def cpu_seconds(self) -> float:
        assert self._process is not None
        fields = Path(f"/proc/{self._process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(None, None, None)


async def raw_echo_rtts(count: int) -> list[float]:
    """Round trips of 64 bytes over one raw anyio TCP connection on loopback."""
    async def echo(stream: Any) -> None:
        async with stream:
            try:
                while True:
                    await stream.send(await stream.receive(64))
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    rtts = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, echo)
        async with await anyio.connect_tcp("127.0.0.1", port) as client:
            payload = b"x" * 64
            for _ in range(count):
                t0 = anyio.current_time()
                await client.send(payload)
                got = b""
                while len(got) < len(payload):
                    got += await client.receive(64)
                rtts.append(anyio.current_time() - t0)
        tg.cancel_scope.cancel()
    return rtts
