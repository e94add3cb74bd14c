"""Streams and spill-over stores through the blocking facade, from threads."""

from __future__ import annotations

import os

import anyio
import pytest

import hedgeplug
from hedgeplug.spill import SpillError


def config(tmp_path, name):
    return {
        "node": {"id": name, "cluster": "blocking", "stop_timeout": "2s"},
        "lock": {"use": "sqlite", "path": str(tmp_path / "lock.db"), "ttl": "2s"},
        "transport": {"use": "tcp", "bind": "127.0.0.1:0", "max_frame": "64KiB"},
        "membership": {"use": "heartbeat", "interval": "200ms"},
    }


def wait_for(predicate, timeout=10.0):
    import time

    deadline = time.monotonic() + timeout  # test-side wall clock, outside the nodes
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


async def echo(message, stream):
    async for value in stream:
        await stream.send([message.payload, value])


def test_streams_and_spill_from_threads(tmp_path):
    with (
        hedgeplug.BlockingNode(config(tmp_path, "a")) as a,
        hedgeplug.BlockingNode(config(tmp_path, "b")) as b,
    ):
        wait_for(lambda: len(a.members) == 2 and len(b.members) == 2 and a.leader and b.leader)
        for n in (a, b):
            n.channel("echo").handle_streams(echo)
        with b.stream_to_leader("echo", payload="p") as stream:
            for i in range(5):
                stream.send(i)
            stream.send_eof()
            assert list(stream) == [["p", i] for i in range(5)]
        with a.stream_broadcast("echo", payload="all") as fan:
            assert sorted(fan.members) == ["a", "b"]
            assert fan.send("x") == 2
            fan.send_eof()
            assert sorted((r.member, r.value[1]) for r in fan.replies()) == [("a", "x"), ("b", "x")]

        data = [os.urandom(n) for n in (10, 70_000, 0, 150_000, 33)]
        with b.serve_spill(memory="256KiB", disk="0", directory=tmp_path):
            with a.spill("t", memory="64KiB", disk="64KiB", directory=tmp_path) as store:
                for chunk in data:
                    store.append(chunk)
                assert list(store.read()) == data
                assert set(store.holders()) == {"a", "b"}
                # ... and from the other member, which holds only some pieces.
                assert list(b.read_spill("t")) == data
                assert list(b.read_spill("t", writer="a")) == data
                for first in b.read_spill("t"):  # left early: the reader ends cleanly
                    assert first == data[0]
                    break
                store.delete()
                with pytest.raises(SpillError, match="deleted"):
                    store.append(b"no")
            with pytest.raises(anyio.EndOfStream):
                with b.stream_to_leader("echo") as s:
                    s.send_eof()
                    s.receive()
