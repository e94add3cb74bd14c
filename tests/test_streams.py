"""Streams to the leader and stream broadcasts between nodes in this process,
over the real sqlite lock and real loopback tcp, on trio and asyncio."""

from __future__ import annotations

import anyio
import pytest

import hedgeplug
from hedgeplug.errors import LeaderChangedError, RemoteError, StreamClosed


def config(tmp_path, name, transport="tcp"):
    return {
        "node": {"id": name, "cluster": "streams", "stop_timeout": "2s"},
        "lock": {"use": "sqlite", "path": str(tmp_path / "lock.db"), "ttl": "2s"},
        "transport": {"use": transport, "bind": "127.0.0.1:0"},
        "membership": {"use": "heartbeat", "interval": "200ms"},
    }


async def settle(nodes, timeout=10):
    with anyio.fail_after(timeout):
        while True:
            ids = {n.id for n in nodes}
            leaders = [n for n in nodes if n.is_leader]
            if len(leaders) == 1 and all(n.view.ids == ids for n in nodes):
                if all(n.leader is not None and n.leader.holder == leaders[0].id for n in nodes):
                    return leaders[0]
            await anyio.sleep(0.05)


async def doubler(message, stream):
    async for value in stream:
        await stream.send(value * 2)
    await stream.send({"payload": message.payload, "sender": message.sender})


@pytest.mark.anyio
@pytest.mark.parametrize("transport", ["tcp", "udp"])
async def test_stream_to_leader_round_trip_with_half_close(tmp_path, transport):
    async with (
        hedgeplug.open_node(config(tmp_path, "a", transport)) as a,
        hedgeplug.open_node(config(tmp_path, "b", transport)) as b,
    ):
        leader = await settle([a, b])
        for n in (a, b):
            n.channel("work").handle_streams(doubler)
        for opener in (a, b):  # the leader can stream to itself too
            async with await opener.stream_to_leader("work", payload="hello") as stream:
                for i in range(50):
                    await stream.send(i)
                await stream.send_eof()  # our side is done; replies keep coming
                got = [value async for value in stream]
            assert got[:-1] == [2 * i for i in range(50)]
            assert got[-1] == {"payload": "hello", "sender": opener.id}
            assert stream.peer == leader.id


@pytest.mark.anyio
async def test_a_member_that_does_not_lead_refuses_a_leader_stream(tmp_path):
    async with (
        hedgeplug.open_node(config(tmp_path, "a")) as a,
        hedgeplug.open_node(config(tmp_path, "b")) as b,
    ):
        leader = await settle([a, b])
        follower = b if leader is a else a
        follower.channel("work").handle_streams(doubler)
        service = leader.parts.dispatcher.channel("streams")
        opening = {"channel": "work", "payload": None, "leader": leader.token}
        async with await service.open_stream(follower.address, opening) as raw:
            with anyio.fail_after(5):
                answer = await raw.receive()
        assert answer[:2] == [2, "not-leader"] and follower.id in answer[2]


@pytest.mark.anyio
async def test_leader_change_mid_stream_fails_both_ends(tmp_path):
    async with (
        hedgeplug.open_node(config(tmp_path, "a")) as a,
        hedgeplug.open_node(config(tmp_path, "b")) as b,
    ):
        leader = await settle([a, b])
        follower = b if leader is a else a
        seen: list[BaseException] = []
        received: list[int] = []
        handler_done = anyio.Event()

        async def collect(message, stream):
            try:
                async for value in stream:
                    received.append(value)
            except BaseException as exc:
                seen.append(exc)
                raise
            finally:
                handler_done.set()

        leader.channel("work").handle_streams(collect)
        stream = await follower.stream_to_leader("work")
        for i in range(3):
            await stream.send(i)
        with anyio.fail_after(5):
            while len(received) < 3:
                await anyio.sleep(0.02)
        await leader.parts.election.release(1.0)  # the leader steps down while the stream is open
        with anyio.fail_after(5):
            await handler_done.wait()
        assert isinstance(seen[0], LeaderChangedError) and "stopped leading" in str(seen[0])
        with anyio.fail_after(5), pytest.raises(LeaderChangedError, match="leader"):
            await stream.receive()
        with pytest.raises(LeaderChangedError):
            await stream.send(4)
        await stream.aclose()


@pytest.mark.anyio
async def test_cancelling_the_opener_reaches_the_handler_promptly(tmp_path):
    async with (
        hedgeplug.open_node(config(tmp_path, "a")) as a,
        hedgeplug.open_node(config(tmp_path, "b")) as b,
    ):
        leader = await settle([a, b])
        follower = b if leader is a else a
        outcome: list[BaseException | None] = []
        handler_done = anyio.Event()

        async def reader(message, stream):
            try:
                async for _ in stream:
                    pass
                outcome.append(None)
            except StreamClosed as exc:
                outcome.append(exc)
            finally:
                handler_done.set()

        leader.channel("work").handle_streams(reader)
        with anyio.move_on_after(0.3):
            async with await follower.stream_to_leader("work") as stream:
                await stream.send("one")
                await anyio.sleep(10)  # cancelled here
        started = anyio.current_time()
        with anyio.fail_after(2):
            await handler_done.wait()
        assert anyio.current_time() - started < 1.0
        assert isinstance(outcome[0], StreamClosed) and "before finishing" in str(outcome[0])


@pytest.mark.anyio
async def test_a_handler_that_gives_up_reaches_the_opener_promptly(tmp_path):
    async with (
        hedgeplug.open_node(config(tmp_path, "a")) as a,
        hedgeplug.open_node(config(tmp_path, "b")) as b,
    ):
        leader = await settle([a, b])
        follower = b if leader is a else a

        async def impatient(message, stream):
            # The handler's own block is cancelled after 300 ms while it waits.
            with anyio.move_on_after(0.3):
                async with stream:
                    await stream.receive()

        leader.channel("work").handle_streams(impatient)
        async with await follower.stream_to_leader("work") as stream:
            started = anyio.current_time()
            with anyio.fail_after(3), pytest.raises(StreamClosed, match="before finishing"):
                await stream.receive()
            assert anyio.current_time() - started < 1.5


@pytest.mark.anyio
async def test_a_failing_handler_reaches_the_opener(tmp_path):
    async with hedgeplug.open_node(config(tmp_path, "a")) as a:
        await settle([a])

        async def picky(message, stream):
            async for value in stream:
                if value == "bad":
                    raise ValueError("no bad values")

        a.channel("work").handle_streams(picky)
        async with await a.stream_to_leader("work") as stream:
            await stream.send("good")
            await stream.send("bad")
            with anyio.fail_after(5), pytest.raises(RemoteError, match="ValueError: no bad values"):
                await stream.receive()
        with pytest.raises(StreamClosed, match="no stream handler for channel 'nothing'"):
            await a.stream_to_leader("nothing", timeout=2)
        with pytest.raises(hedgeplug.HedgeplugError, match="stream channel must be a non-empty string"):
            await a.stream_broadcast("")


@pytest.mark.anyio
async def test_backpressure_bounds_the_writer_until_the_reader_reads(tmp_path):
    async with (
        hedgeplug.open_node(config(tmp_path, "a")) as a,
        hedgeplug.open_node(config(tmp_path, "b")) as b,
    ):
        leader = await settle([a, b])
        follower = b if leader is a else a
        go = anyio.Event()
        counted: list[int] = []

        async def slow(message, stream):
            await go.wait()
            counted.append(sum([1 async for _ in stream]))

        leader.channel("work").handle_streams(slow)
        block = b"x" * 65536
        sent = 0
        async with await follower.stream_to_leader("work") as stream:

            async def writer():
                nonlocal sent
                while sent < 4096:  # 256 MiB if nothing pushed back
                    await stream.send(block)
                    sent += 1

            async with anyio.create_task_group() as tg:
                tg.start_soon(writer)
                await anyio.sleep(2)
                # The writer stalled: only the sockets' buffers are in flight.
                stalled_at = sent
                assert 0 < stalled_at < 512, stalled_at
                go.set()
            assert sent == 4096
        with anyio.fail_after(10):
            while not counted:
                await anyio.sleep(0.02)
        assert counted == [4096]


@pytest.mark.anyio
async def test_stream_broadcast_fans_out_and_reports_member_failures(tmp_path):
    async with (
        hedgeplug.open_node(config(tmp_path, "a")) as a,
        hedgeplug.open_node(config(tmp_path, "b")) as b,
        hedgeplug.open_node(config(tmp_path, "c")) as c,
    ):
        await settle([a, b, c])
        a.channel("fan").handle_streams(doubler)
        b.channel("fan").handle_streams(doubler)
        # c has no handler for "fan": reported, not raised.

        async with await a.stream_broadcast("fan", payload="p") as fan:
            assert set(fan.members) == {"a", "b"} and set(fan.failures) == {"c"}
            assert "no stream handler" in str(fan.failures["c"])
            for i in range(20):
                assert await fan.send(i) == 2
            await fan.send_eof()
            replies = [r async for r in fan.replies()]
        by_member: dict[str, list] = {}
        for reply in replies:
            by_member.setdefault(reply.member, []).append(reply.value if reply.ok else reply.error)
        assert by_member["a"][:-1] == by_member["b"][:-1] == [2 * i for i in range(20)]
        assert by_member["a"][-1] == {"payload": "p", "sender": "a"}
        assert "no stream handler" in by_member["c"][0]


@pytest.mark.anyio
async def test_stream_broadcast_goes_on_when_one_member_fails_mid_stream(tmp_path):
    async with (
        hedgeplug.open_node(config(tmp_path, "a")) as a,
        hedgeplug.open_node(config(tmp_path, "b")) as b,
    ):
        await settle([a, b])
        a.channel("fan").handle_streams(doubler)

        async def quits(message, stream):
            await stream.receive()
            raise RuntimeError("b gives up")

        b.channel("fan").handle_streams(quits)
        async with await a.stream_broadcast("fan", include_self=True) as fan:
            with anyio.fail_after(10):
                for i in range(200):
                    await fan.send(i)
                    if "b" in fan.failures:
                        break
                    await anyio.sleep(0.01)
            assert fan.members == ("a",)
            assert isinstance(fan.failures["b"], StreamClosed)
            await fan.send_eof()
            replies = [r async for r in fan.replies()]
        assert replies[-1].member == "a" and all(r.ok for r in replies if r.member == "a")
