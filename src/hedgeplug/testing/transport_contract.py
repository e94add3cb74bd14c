"""The behaviour every hedgeplug transport promises, as a reusable pytest class.

Use it by subclassing in a test module and providing three fixtures::

    class TestMyTransport(TransportContract):
        @pytest.fixture
        def make_transport(self):
            return lambda max_frame=None: MyTransport(...)   # unbound, not serving

        @pytest.fixture
        def unreachable_address(self):
            return "..."        # an address nothing serves at

        @pytest.fixture
        def send_garbage(self):
            async def deliver(address): ...   # malformed input through the real medium
            return deliver

The tests run under pytest's anyio plugin (`anyio_backend` picks the backend).
What a transport must do, as checked here:

- a request gets the handler's reply; a None reply arrives as b"";
- many concurrent requests to one peer each get their own reply;
- one-way frames reach the handler; `send` never raises;
- no reply within the timeout raises RequestTimeout, and the server lives on;
  other requests in flight at the time still get their replies;
- an unreachable address raises TransportError naming the address;
- a frame over the sender's limit raises FrameTooLarge before it leaves
  (`send` counts it instead); over the receiver's limit it is refused with a
  TransportError that is not a timeout, and the receiver keeps answering;
- malformed input is counted in `stats.dropped` and the server keeps answering;
- a handler that raises fails that request with TransportError (not a
  timeout) and the server keeps answering;
- streams keep order both ways, block a sender whose peer does not read, and
  end with anyio.EndOfStream when the other side closes;
- after `aclose` the serve task ends and requests raise TransportError.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import pytest

from hedgeplug.contracts import MessageStream, Transport
from hedgeplug.errors import FrameTooLarge, RequestTimeout, TransportError

MakeTransport = Callable[..., Transport]
FrameHandler = Callable[[bytes, str], Awaitable[bytes | None]]

SMALL_LIMIT = 64 * 1024
STALL_SECONDS = 0.5


async def echo(data: bytes, peer: str) -> bytes:
    return b"echo:" + data


async def close_at_once(stream: MessageStream) -> None:
    await stream.aclose()


def dropped(transport: Transport) -> int:
    return sum(transport.stats.dropped.values())


@asynccontextmanager
async def serving(
    transport: Transport,
    on_frame: FrameHandler = echo,
    on_stream: Callable[[MessageStream], Awaitable[None]] = close_at_once,
) -> AsyncIterator[str]:
    """Bind and serve `transport` for the block; yields its address, closes it after."""
    address = await transport.bind()
    async with anyio.create_task_group() as tg:
        tg.start_soon(transport.serve, on_frame, on_stream)
        try:
            yield address
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await transport.aclose()
            tg.cancel_scope.cancel()


@asynccontextmanager
async def server_and_client(
    make_transport: MakeTransport,
    on_frame: FrameHandler = echo,
    on_stream: Callable[[MessageStream], Awaitable[None]] = close_at_once,
    *,
    server_max_frame: int | None = None,
    client_max_frame: int | None = None,
) -> AsyncIterator[tuple[Transport, Transport, str]]:
    """A serving transport and a client (serving too, as in a node)."""
    server = make_transport(max_frame=server_max_frame)
    client = make_transport(max_frame=client_max_frame)
    async with serving(server, on_frame, on_stream) as address, serving(client):
        yield server, client, address


async def eventually(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """Wait (bounded) until `condition()` holds."""
    with anyio.fail_after(seconds):
        while not condition():
            await anyio.sleep(0.01)


@pytest.mark.anyio
class TransportContract:
    """Subclass and provide `make_transport`, `unreachable_address`, `send_garbage`."""

    @pytest.fixture
    def make_transport(self) -> MakeTransport:
        raise NotImplementedError("a TransportContract subclass must provide make_transport")

    @pytest.fixture
    def unreachable_address(self) -> str:
        raise NotImplementedError("a TransportContract subclass must provide unreachable_address")

    @pytest.fixture
    def send_garbage(self) -> Callable[[str], Awaitable[None]]:
        raise NotImplementedError("a TransportContract subclass must provide send_garbage")

    # ------------------------------------------------------------ requests

    async def test_bind_returns_a_distinct_address(self, make_transport: MakeTransport) -> None:
        first, second = make_transport(), make_transport()
        async with serving(first) as a, serving(second) as b:
            assert isinstance(a, str) and a
            assert a != b
            assert isinstance(first.max_frame, int) and first.max_frame > 0

    async def test_request_gets_the_handler_reply(self, make_transport: MakeTransport) -> None:
        peers: list[str] = []

        async def handler(data: bytes, peer: str) -> bytes | None:
            peers.append(peer)
            return None if data == b"quiet" else b"echo:" + data

        async with server_and_client(make_transport, handler) as (server, client, address):
            assert await client.request(address, b"ping", 5) == b"echo:ping"
            assert await client.request(address, b"", 5) == b"echo:"
            assert await client.request(address, b"quiet", 5) == b""
            binary = bytes(range(256)) * 4
            assert await client.request(address, binary, 5) == b"echo:" + binary
            assert all(isinstance(p, str) and p for p in peers)
            assert client.stats.frames_out >= 4 and client.stats.bytes_out > len(binary)
            assert server.stats.frames_in >= 4 and server.stats.bytes_in > len(binary)

    async def test_many_concurrent_requests_to_one_peer(
        self, make_transport: MakeTransport
    ) -> None:
        async def slow_echo(data: bytes, peer: str) -> bytes:
            # Uneven delays make replies come back out of order.
            await anyio.sleep((int(data) % 7) * 0.003)
            return data * 2

        replies: dict[int, bytes] = {}
        async with server_and_client(make_transport, slow_echo) as (_, client, address):

            async def one(i: int) -> None:
                replies[i] = await client.request(address, str(i).encode(), 10)

            with anyio.fail_after(20):
                async with anyio.create_task_group() as tg:
                    for i in range(200):
                        tg.start_soon(one, i)
        assert replies == {i: str(i).encode() * 2 for i in range(200)}

    async def test_one_way_frames_reach_the_handler(self, make_transport: MakeTransport) -> None:
        seen: list[bytes] = []

        async def collect(data: bytes, peer: str) -> None:
            seen.append(data)
            return None

        async with server_and_client(make_transport, collect) as (_, client, address):
            for i in range(50):
                await client.send(address, b"note-%d" % i)
            await eventually(lambda: len(seen) >= 50)
        assert sorted(seen) == sorted(b"note-%d" % i for i in range(50))

    async def test_no_reply_in_time_raises_request_timeout(
        self, make_transport: MakeTransport
    ) -> None:
        async def stalls_on_slow(data: bytes, peer: str) -> bytes:
            if data == b"slow":
                await anyio.sleep(30)
            return b"ok"

        async with server_and_client(make_transport, stalls_on_slow) as (_, client, address):
            started = anyio.current_time()
            with pytest.raises(RequestTimeout) as info:
                await client.request(address, b"slow", 0.3)
            elapsed = anyio.current_time() - started
            assert 0.25 <= elapsed < 3, elapsed
            assert address in str(info.value)
            assert await client.request(address, b"fast", 5) == b"ok"

    async def test_a_timed_out_request_does_not_hold_up_the_others(
        self, make_transport: MakeTransport
    ) -> None:
        # The first request is the one waiting longest; when it gives up, the
        # replies for the requests behind it must still be picked up.
        async def staggered(data: bytes, peer: str) -> bytes:
            await anyio.sleep(2 if data == b"first" else 0.4)
            return b"done:" + data

        async with server_and_client(make_transport, staggered) as (_, client, address):
            results: dict[bytes, bytes | str] = {}

            async def ask(data: bytes, timeout: float) -> None:
                try:
                    results[data] = await client.request(address, data, timeout)
                except RequestTimeout:
                    results[data] = "timeout"

            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(ask, b"first", 0.2)
                    await anyio.sleep(0.05)
                    for i in range(5):
                        tg.start_soon(ask, b"later-%d" % i, 5)
        assert results.pop(b"first") == "timeout"
        assert results == {b"later-%d" % i: b"done:later-%d" % i for i in range(5)}

    async def test_unreachable_address_raises_naming_it(
        self, make_transport: MakeTransport, unreachable_address: str
    ) -> None:
        async with serving(make_transport()):
            pass
        client = make_transport()
        async with serving(client):
            with anyio.fail_after(10):
                with pytest.raises(TransportError) as info:
                    await client.request(unreachable_address, b"anyone?", 2)
                assert unreachable_address in str(info.value)
                await client.send(unreachable_address, b"best effort")  # must not raise

    async def test_handler_error_fails_only_that_request(
        self, make_transport: MakeTransport
    ) -> None:
        async def fragile(data: bytes, peer: str) -> bytes:
            if data == b"boom":
                raise RuntimeError("handler bug")
            return b"fine"

        async with server_and_client(make_transport, fragile) as (_, client, address):
            with anyio.fail_after(5), pytest.raises(TransportError) as info:
                await client.request(address, b"boom", 4)
            assert not isinstance(info.value, RequestTimeout)
            await client.send(address, b"boom")
            assert await client.request(address, b"again", 5) == b"fine"

    # ------------------------------------------------------------ bad input

    async def test_frame_over_own_limit_is_refused_before_sending(
        self, make_transport: MakeTransport
    ) -> None:
        async with server_and_client(make_transport, client_max_frame=SMALL_LIMIT) as (
            server,
            client,
            address,
        ):
            big = b"x" * (client.max_frame + 1)
            with pytest.raises(FrameTooLarge) as info:
                await client.request(address, big, 5)
            assert str(client.max_frame) in str(info.value)
            before = dropped(client)
            await client.send(address, big)  # counted, not raised
            assert dropped(client) == before + 1
            assert server.stats.frames_in == 0  # nothing of it left the client
            stream = await client.open_stream(address)
            try:
                with pytest.raises(FrameTooLarge):
                    await stream.send(big)
            finally:
                await stream.aclose()
            assert await client.request(address, b"ok", 5) == b"echo:ok"

    async def test_frame_over_receiver_limit_is_refused_and_receiver_lives(
        self, make_transport: MakeTransport
    ) -> None:
        async with server_and_client(
            make_transport, server_max_frame=SMALL_LIMIT, client_max_frame=1 << 20
        ) as (server, client, address):
            before = dropped(server)
            with anyio.fail_after(10), pytest.raises(TransportError) as info:
                await client.request(address, b"y" * (4 * SMALL_LIMIT), 5)
            assert not isinstance(info.value, RequestTimeout), info.value
            assert dropped(server) > before
            assert await client.request(address, b"small", 5) == b"echo:small"

    async def test_garbage_is_counted_and_server_keeps_answering(
        self, make_transport: MakeTransport, send_garbage: Callable[[str], Awaitable[None]]
    ) -> None:
        async with server_and_client(make_transport) as (server, client, address):
            before = dropped(server)
            await send_garbage(address)
            await eventually(lambda: dropped(server) > before)
            assert await client.request(address, b"still there?", 5) == b"echo:still there?"

    # ------------------------------------------------------------ streams

    async def test_stream_keeps_order_both_ways(self, make_transport: MakeTransport) -> None:
        async def echo_stream(stream: MessageStream) -> None:
            while True:
                try:
                    message = await stream.receive()
                except anyio.EndOfStream:
                    return
                await stream.send(b"back:" + message)

        count = 300
        async with server_and_client(make_transport, on_stream=echo_stream) as (_, client, address):
            stream = await client.open_stream(address)
            received: list[bytes] = []

            async def read_all() -> None:
                for _ in range(count):
                    received.append(await stream.receive())

            with anyio.fail_after(20):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(read_all)
                    for i in range(count):
                        await stream.send(b"%06d" % i)
            await stream.aclose()
        assert received == [b"back:%06d" % i for i in range(count)]

    async def test_stream_sender_blocks_while_receiver_does_not_read(
        self, make_transport: MakeTransport
    ) -> None:
        message_size = 64 * 1024
        total = 1024  # 64 MiB: far more than any sane buffer
        release = anyio.Event()
        received: list[int] = []
        finished = anyio.Event()

        async def slow_reader(stream: MessageStream) -> None:
            await release.wait()
            while True:
                try:
                    message = await stream.receive()
                except anyio.EndOfStream:
                    break
                received.append(int.from_bytes(message[:8], "big"))
            finished.set()

        async with server_and_client(make_transport, on_stream=slow_reader) as (_, client, address):
            stream = await client.open_stream(address)
            sent = 0
            filler = b"\0" * (message_size - 8)

            async def produce() -> None:
                nonlocal sent
                for i in range(total):
                    await stream.send(i.to_bytes(8, "big") + filler)
                    sent += 1
                await stream.aclose()

            async with anyio.create_task_group() as tg:
                tg.start_soon(produce)
                stalled = False
                with anyio.fail_after(30):
                    while sent < total:
                        before = sent
                        await anyio.sleep(STALL_SECONDS)
                        if sent == before:
                            stalled = True
                            break
                assert stalled, f"sender was never held back ({sent} messages went out)"
                assert sent < total
                release.set()
                with anyio.fail_after(60):
                    await finished.wait()
        assert received == list(range(total))

    async def test_stream_ends_when_either_side_closes(self, make_transport: MakeTransport) -> None:
        got: list[bytes] = []
        server_done = anyio.Event()

        async def read_then_say_bye(stream: MessageStream) -> None:
            while True:
                try:
                    got.append(await stream.receive())
                except anyio.EndOfStream:
                    break
            server_done.set()

        async def say_bye(stream: MessageStream) -> None:
            await stream.send(b"bye")
            await stream.aclose()

        async with server_and_client(make_transport, on_stream=read_then_say_bye) as (
            _,
            c,
            address,
        ):
            stream = await c.open_stream(address)
            for part in (b"a", b"b", b"c"):
                await stream.send(part)
            await stream.aclose()
            with anyio.fail_after(5):
                await server_done.wait()
        assert got == [b"a", b"b", b"c"]

        async with server_and_client(make_transport, on_stream=say_bye) as (_, c, address):
            stream = await c.open_stream(address)
            with anyio.fail_after(5):
                assert await stream.receive() == b"bye"
                with pytest.raises(anyio.EndOfStream):
                    await stream.receive()
            await stream.aclose()

    # ------------------------------------------------------------ closing

    async def test_close_ends_serving_and_refuses_requests(
        self, make_transport: MakeTransport
    ) -> None:
        server, client = make_transport(), make_transport()
        address = await server.bind()
        async with serving(client):
            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(server.serve, echo, close_at_once)
                    assert await client.request(address, b"hi", 5) == b"echo:hi"
                    await server.aclose()
                # the serve task returned by itself once closed
            with anyio.fail_after(10), pytest.raises(TransportError):
                await client.request(address, b"hi", 2)
            await server.aclose()  # closing twice is harmless
        with pytest.raises(TransportError):
            await client.request(address, b"hi", 2)
        await client.send(address, b"after close")  # counted, not raised


__all__ = ["TransportContract", "serving", "server_and_client", "eventually", "echo", "dropped"]
