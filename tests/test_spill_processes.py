"""A spill-over store read on another node, across real processes: writer a
(a child process) spills to b (a child process) and c (this process); c
reads every chunk in write order through the writer's index; after b is
SIGKILLed the read fails naming b, and after a is, naming the writer."""

from __future__ import annotations

import json
import signal
import sys
import uuid
from pathlib import Path

import anyio
import pytest
from spill_worker import chunk_bytes, node_config

import hedgeplug
from hedgeplug.spill import ChunkLost, WriterGone, read_spill, serve_spill
from hedgeplug.spill.placement import rendezvous_order

WORKER = str(Path(__file__).with_name("spill_worker.py"))
CHUNKS, SIZE = 15, 100_000
# One chunk is one piece (1 MiB frames). a and b hold 5 chunks each: 3 in
# memory (400 kB less the in-flight reserve of 100 kB), 2 on disk; c holds the rest.
LIMITS = ["--memory", "400000", "--disk", "200000"]


@pytest.fixture
def anyio_backend():
    return "trio"  # the other nodes are separate processes; one backend here is enough


async def start(processes, ready, command):
    process = processes[command[1]] = await anyio.open_process([sys.executable, WORKER, *command])
    buffer = b""
    with anyio.fail_after(30):
        while b"\n" not in buffer:
            buffer += await process.stdout.receive()
    line = buffer.partition(b"\n")[0].decode()
    assert line.startswith("ready "), line
    ready[command[1]] = json.loads(line[len("ready "):])


async def read_all(node, name, writer=None):
    got = []
    try:
        async for chunk in read_spill(node, name, writer=writer):
            got.append(chunk)
    except (ChunkLost, WriterGone) as exc:
        return got, exc
    return got, None


@pytest.mark.slow
@pytest.mark.anyio
async def test_a_reader_on_another_node_reads_every_chunk_and_names_a_lost_holder(tmp_path):
    cluster = f"spill-{uuid.uuid4().hex[:8]}"
    lock = str(tmp_path / "lock.db")
    # A name whose overflow goes to b first, then c.
    name = next(f"s{i}" for i in range(100) if rendezvous_order(f"s{i}", ["b", "c"])[0] == "b")
    expected = [chunk_bytes(i, SIZE) for i in range(CHUNKS)]
    common = ["--lock", lock, "--cluster", cluster, "--directory", str(tmp_path)]
    processes = {}
    try:
        async with hedgeplug.open_node(node_config("c", lock, cluster)) as c:
            async with serve_spill(c, memory="4MiB", disk="0", directory=tmp_path) as service:
                ready = {}
                writer = ["--write", name, "--chunks", str(CHUNKS), "--size", str(SIZE), "--members", "3"]
                async with anyio.create_task_group() as tg:  # a waits until it sees b and c
                    tg.start_soon(start, processes, ready, ["--id", "b", *common, *LIMITS])
                    tg.start_soon(start, processes, ready, ["--id", "a", *common, *LIMITS, *writer])
                assert ready["a"]["holders"] == {"a": 5 * SIZE, "b": 5 * SIZE, "c": 5 * SIZE}
                assert service.stats()["stores"] == 1
                with anyio.fail_after(10):
                    while not {"a", "b"} <= c.view.ids:
                        await anyio.sleep(0.05)

                got, error = await read_all(c, name)  # the writer found by asking the members
                assert error is None and got == expected
                got, error = await read_all(c, name, writer="a")
                assert error is None and got == expected

                processes["b"].send_signal(signal.SIGKILL)
                await processes["b"].wait()
                got, error = await read_all(c, name, writer="a")
                assert isinstance(error, ChunkLost), error
                assert error.member == "b" and error.chunk == 5, error
                assert "held by member b" in str(error)
                assert got in ([], expected[:5]), len(got)  # what came before b's chunks, never past them
                with anyio.fail_after(10):
                    while "b" in c.view.ids:
                        await anyio.sleep(0.05)
                got, error = await read_all(c, name, writer="a")
                assert str(error) == f"chunk 5 of store {name!r} was held by member b, which left the cluster"
                assert got == []  # checked against the view before the first chunk

                processes["a"].send_signal(signal.SIGKILL)
                await processes["a"].wait()
                got, error = await read_all(c, name, writer="a")
                assert isinstance(error, WriterGone) and error.member == "a", error
                assert "its writer a" in str(error) and got == []
    finally:
        with anyio.CancelScope(shield=True):
            for process in processes.values():
                if process.returncode is None:
                    process.kill()
                    await process.wait()
