"""The tcp transport against real loopback sockets: the transport contract,
then what only a socket transport has (pooling, raw bytes on the port)."""

from __future__ import annotations

import socket
import struct

import anyio
import pytest

from hedgeplug.config import ConfigError, load_config
from hedgeplug.errors import RequestTimeout, TransportError
from hedgeplug.plugin import Address
from hedgeplug.testing.transport_contract import (
    TransportContract,
    dropped,
    echo,
    eventually,
    server_and_client,
    serving,
)
from hedgeplug.transport._framing import HEADER, FrameType, preamble
from hedgeplug.transport.tcp import TcpOptions, TcpTransport


def tcp(max_frame: int | None = None, **options: object) -> TcpTransport:
    if max_frame is not None:
        options["max_frame"] = max_frame
    return TcpTransport(TcpOptions(**options))  # type: ignore[arg-type]


def closed_port_address() -> str:
    # A port that was free a moment ago; nothing listens on it now.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"127.0.0.1:{port}"


async def raw_connection(address: str) -> anyio.abc.SocketStream:
    host, _, port = address.rpartition(":")
    return await anyio.connect_tcp(host.strip("[]"), int(port))


async def read_until_closed(stream: anyio.abc.SocketStream, limit: float = 5) -> bytes:
    """Everything the server writes until it closes the connection (bounded)."""
    data = b""
    with anyio.fail_after(limit):
        while True:
            try:
                data += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionResetError):
                return data


class TestTcpContract(TransportContract):
    @pytest.fixture
    def make_transport(self):
        return tcp

    @pytest.fixture
    def unreachable_address(self) -> str:
        return closed_port_address()

    @pytest.fixture
    def send_garbage(self):
        async def deliver(address: str) -> None:
            stream = await raw_connection(address)
            await stream.send(b"GET / HTTP/1.1\r\nHost: nope\r\n\r\n")
            await read_until_closed(stream)
            await stream.aclose()

        return deliver


pytestmark = pytest.mark.anyio


async def test_one_connection_carries_a_hundred_requests() -> None:
    async with server_and_client(tcp) as (server, client, address):
        for i in range(50):
            assert await client.request(address, b"%d" % i, 5) == b"echo:%d" % i
        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(client.request, address, b"%d" % i, 5)
        for i in range(10):
            await client.send(address, b"one-way %d" % i)
        assert await client.request(address, b"last", 5) == b"echo:last"
        assert server.accepted == 1


async def test_ipv6_loopback() -> None:
    server, client = tcp(bind="[::1]:0"), tcp(bind="[::1]:0")
    async with serving(server) as address, serving(client):
        assert address.startswith("[::1]:")
        assert await client.request(address, b"six", 5) == b"echo:six"


async def test_advertise_with_port_zero_replaces_the_host_and_keeps_the_bound_port() -> None:
    transport = tcp(advertise="localhost:0")
    async with serving(transport) as address:
        assert address == f"localhost:{transport.port}"


async def test_advertise_with_a_port_is_announced_as_given() -> None:
    async with serving(tcp(advertise="[::1]:7946")) as address:
        assert address == "[::1]:7946"


async def test_wildcard_bind_advertises_loopback() -> None:
    transport = tcp(bind="0.0.0.0:0")
    async with serving(transport) as address:
        assert address == f"127.0.0.1:{transport.port}"


async def test_huge_length_prefix_closes_only_that_connection() -> None:
    async with server_and_client(tcp) as (server, client, address):
        raw = await raw_connection(address)
        await raw.send(preamble(b"F") + struct.pack("!IBI", 0xFFFFFFFF, FrameType.ONEWAY, 0))
        assert await read_until_closed(raw) == b""
        await raw.aclose()
        assert server.stats.dropped.get("frame-too-large") == 1
        assert await client.request(address, b"alive", 5) == b"echo:alive"


async def test_oversized_request_header_gets_an_error_reply_naming_the_limit() -> None:
    async with serving(tcp(max_frame=4096)) as address:
        raw = await raw_connection(address)
        await raw.send(preamble(b"F") + HEADER.pack(1 << 20, FrameType.REQUEST, 7))
        data = await read_until_closed(raw)
        await raw.aclose()
    length, kind, request_id = HEADER.unpack_from(data)
    assert (kind, request_id) == (FrameType.ERROR, 7)
    assert b"exceeds the limit of 4096 bytes" in data[HEADER.size : HEADER.size + length]


@pytest.mark.parametrize(
    ("garbage", "reason"),
    [
        (b"\x00" * 64, "bad-preamble"),
        (preamble(b"X") + b"\x00" * 16, "bad-preamble"),
        (preamble(b"F") + struct.pack("!IBI", 3, 99, 1) + b"abc", "bad-frame"),
        (
            preamble(b"F") + struct.pack("!IBI", 10, FrameType.REQUEST, 1) + b"abc",
            "truncated-frame",
        ),
    ],
    ids=["zeros", "bad-purpose", "unknown-type", "truncated"],
)
async def test_raw_garbage_is_counted_by_reason(garbage: bytes, reason: str) -> None:
    async with server_and_client(tcp) as (server, client, address):
        raw = await raw_connection(address)
        await raw.send(garbage)
        await raw.send_eof()
        await read_until_closed(raw)
        await raw.aclose()
        await eventually(lambda: server.stats.dropped.get(reason) == 1)
        assert await client.request(address, b"alive", 5) == b"echo:alive"


async def test_silent_connection_is_dropped_after_connect_timeout() -> None:
    async with serving(tcp(connect_timeout=0.2)) as address:
        raw = await raw_connection(address)
        started = anyio.current_time()
        await read_until_closed(raw)
        assert anyio.current_time() - started < 3
        await raw.aclose()


async def test_connections_over_the_limit_are_refused_and_counted() -> None:
    server = tcp(max_connections=2)
    async with serving(server) as address:
        first, second = await raw_connection(address), await raw_connection(address)
        await eventually(lambda: server.accepted == 2)
        third = await raw_connection(address)
        assert await read_until_closed(third) == b""
        assert server.stats.dropped.get("too-many-connections") == 1
        for stream in (first, second, third):
            await stream.aclose()


async def test_idle_connection_is_closed_and_reopened_on_demand() -> None:
    server, client = tcp(), tcp(idle_timeout=0.2)
    async with serving(server) as address, serving(client):
        assert await client.request(address, b"1", 5) == b"echo:1"
        await eventually(lambda: len(client.pool) == 0)
        assert await client.request(address, b"2", 5) == b"echo:2"
        assert server.accepted == 2


async def test_pooled_connection_to_a_restarted_peer_is_replaced() -> None:
    client = tcp()
    async with serving(client):
        first = tcp()
        async with serving(first) as address:
            assert await client.request(address, b"before", 5) == b"echo:before"
        # A new server on the same port; the pooled connection is now dead.
        second = tcp(bind=address)
        async with serving(second):
            assert await client.request(address, b"after", 5) == b"echo:after"
            assert second.accepted == 1


async def test_reply_larger_than_the_limit_becomes_an_error() -> None:
    async def huge(data: bytes, peer: str) -> bytes:
        return b"z" * 8192

    async with server_and_client(tcp, huge, server_max_frame=4096) as (server, client, address):
        with pytest.raises(TransportError, match="reply of 8192 bytes"):
            await client.request(address, b"go", 5)
        assert server.stats.dropped.get("reply-too-large") == 1


async def test_bind_to_a_port_in_use_names_the_address() -> None:
    async with serving(tcp()) as address:
        with pytest.raises(TransportError, match=address.replace(".", r"\.")):
            await tcp(bind=address).bind()


async def test_request_to_a_malformed_address_is_a_clear_error() -> None:
    async with serving(tcp()):
        client = tcp()
        async with serving(client):
            with pytest.raises(TransportError, match="expected host:port"):
                await client.request("no-port-here", b"x", 1)
            await client.send("no-port-here", b"x")
            assert dropped(client) == 1


def test_bad_options_are_config_errors_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"\[transport\] max_frame: expected a size"):
        load_config(data={"transport": {"use": "tcp", "max_frame": "huge"}}, env={})
    with pytest.raises(ConfigError, match=r"\[transport\] bind: .*expected host:port"):
        load_config(data={"transport": {"use": "tcp", "bind": "localhost"}}, env={})
    with pytest.raises(ConfigError, match=r"\[transport\] advertise: .*'10\.0\.0\.5'"):
        load_config(data={"transport": {"use": "tcp", "advertise": "10.0.0.5"}}, env={})
    with pytest.raises(ConfigError, match=r"\[transport\] bind: .*'\[nope\]:1'"):
        load_config(data={"transport": {"use": "tcp", "bind": "[nope]:1"}}, env={})
    config = load_config(
        data={"transport": {"use": "tcp", "max_frame": "64KiB", "idle_timeout": "500ms"}}, env={}
    )
    assert config.transport.options == TcpOptions(max_frame=65536, idle_timeout=0.5)


def test_bind_and_advertise_are_parsed_once_by_the_loader() -> None:
    config = load_config(
        data={"transport": {"use": "tcp", "bind": "[::1]:7000", "advertise": "node-1:0"}}, env={}
    )
    options = config.transport.options
    assert options.bind == Address("::1", 7000) and str(options.bind) == "[::1]:7000"
    assert options.advertise == Address("node-1", 0)
    assert TcpOptions().advertise is None and TcpOptions(advertise="").advertise is None


async def test_serving_handler_can_be_echo_on_both_backends() -> None:
    # Smallest end-to-end check kept separate so a failure here points at setup.
    async with server_and_client(tcp, echo) as (_, client, address):
        assert await client.request(address, b"x", 5) == b"echo:x"


async def test_handlers_per_connection_are_bounded() -> None:
    running = 0
    most = 0

    async def busy(data: bytes, peer: str) -> bytes:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await anyio.sleep(0.05)
        running -= 1
        return data

    server = tcp(max_inflight=3)
    async with serving(server, busy) as address, serving(client := tcp()):
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for i in range(12):
                    tg.start_soon(client.request, address, b"%d" % i, 8)
    assert 2 <= most <= 3  # concurrent, but never over the bound


async def test_one_way_to_a_closed_port_is_counted() -> None:
    async with serving(client := tcp()):
        await client.send(closed_port_address(), b"lost")
        assert client.stats.dropped == {"send-failed": 1}


async def test_server_closes_abandoned_connections_and_clients_recover() -> None:
    server, client = tcp(idle_timeout=0.1), tcp(idle_timeout=60)
    async with serving(server) as address, serving(client):
        assert await client.request(address, b"1", 5) == b"echo:1"
        await eventually(lambda: len(server.incoming) == 0)
        # The client's pooled connection is dead now; the request retries once.
        assert await client.request(address, b"2", 5) == b"echo:2"
        assert server.accepted == 2


async def test_close_also_closes_streams_opened_from_it() -> None:
    ended = anyio.Event()

    async def wait_for_end(stream) -> None:
        try:
            await stream.receive()
        except (anyio.EndOfStream, TransportError):
            ended.set()

    server, client = tcp(), tcp()
    async with serving(server, on_stream=wait_for_end) as address:
        async with serving(client):
            await client.open_stream(address)
        with anyio.fail_after(5):
            await ended.wait()


async def test_replies_overtake_each_other_on_one_connection() -> None:
    # Handler i finishes only after handler i+1 did, so replies go back in the
    # reverse of the order the requests were sent, all on one connection.
    done = {i: anyio.Event() for i in range(10)}
    finished: list[int] = []

    async def reverse_order(data: bytes, peer: str) -> bytes:
        i = int(data)
        if i < 9:
            await done[i + 1].wait()
        finished.append(i)
        done[i].set()
        return data

    async with server_and_client(tcp, reverse_order) as (server, client, address):
        replies: dict[int, bytes] = {}

        async def ask(i: int) -> None:
            replies[i] = await client.request(address, b"%d" % i, 5)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for i in range(10):
                    tg.start_soon(ask, i)
        assert replies == {i: b"%d" % i for i in range(10)}
        assert finished == list(reversed(range(10)))
        assert server.accepted == 1


async def test_many_clients_at_once_each_get_one_connection() -> None:
    server = tcp()
    clients = [tcp() for _ in range(12)]
    async with serving(server) as address:
        async with anyio.create_task_group() as outer:
            for client in clients:
                await client.bind()
                outer.start_soon(client.serve, echo, lambda stream: stream.aclose())
            try:

                async def hammer(client: TcpTransport, n: int) -> None:
                    for i in range(15):
                        assert await client.request(
                            address, b"%d-%d" % (n, i), 5
                        ) == b"echo:%d-%d" % (n, i)

                with anyio.fail_after(20):
                    async with anyio.create_task_group() as tg:
                        for n, client in enumerate(clients):
                            tg.start_soon(hammer, client, n)
            finally:
                for client in clients:
                    await client.aclose()
        assert server.accepted == len(clients)
        assert server.stats.frames_in == 12 * 15


async def test_requests_queued_behind_a_failing_connect_share_its_failure() -> None:
    # A listener that never accepts, its backlog filled: further connection
    # attempts get no answer at all, like a host that went away.
    with socket.socket() as black_hole:
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen(0)
        address = f"127.0.0.1:{black_hole.getsockname()[1]}"
        fillers = []
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(black_hole.getsockname())
            fillers.append(filler)
        try:
            client = tcp(connect_timeout=0.5)
            async with serving(client):
                errors: list[str] = []

                async def ask() -> None:
                    try:
                        await client.request(address, b"hello?", 10)
                    except TransportError as exc:
                        errors.append(str(exc))

                started = anyio.current_time()
                async with anyio.create_task_group() as tg:
                    for _ in range(6):
                        tg.start_soon(ask)
                elapsed = anyio.current_time() - started
        finally:
            for filler in fillers:
                filler.close()
    assert errors == [f"cannot connect to {address}: no answer within 0.5s"] * 6
    assert elapsed < 1.5, elapsed  # one connect_timeout, not six in a row


async def test_bounded_soak_with_timeouts_mixed_in_leaves_nothing_behind() -> None:
    # 2000 requests, one in ten given a timeout shorter than the handler takes:
    # their late replies are counted and the shared connection carries on.
    slow_handled = 0

    async def sometimes_slow(data: bytes, peer: str) -> bytes:
        nonlocal slow_handled
        if data.startswith(b"slow"):
            slow_handled += 1
            await anyio.sleep(0.05)
        return data

    outcomes = {"ok": 0, "timeout": 0}
    async with server_and_client(tcp, sometimes_slow) as (server, client, address):

        async def worker(n: int) -> None:
            for i in range(100):
                slow = i % 10 == 0
                data = b"%s-%d-%d" % (b"slow" if slow else b"fast", n, i)
                try:
                    assert await client.request(address, data, 0.01 if slow else 5) == data
                    outcomes["ok"] += 1
                except RequestTimeout:
                    outcomes["timeout"] += 1

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for n in range(20):
                    tg.start_soon(worker, n)
        # Late replies are read by whichever request waits next (there is no
        # background reader), so let them all arrive, then ask once more.
        await anyio.sleep(0.2)
        assert await client.request(address, b"final", 5) == b"final"
        # A request may time out before it is even written; every one that
        # reached the handler came back late and was counted.
        assert 0 < slow_handled <= 200
        assert client.stats.dropped.get("late-reply") == slow_handled
        assert outcomes == {"ok": 1800, "timeout": 200}
        assert server.accepted == 1
        (conn,) = client.pool.connections()
        assert len(conn.mux) == 0 and conn.broken is None
        assert set(client.stats.dropped) == {"late-reply"} and not server.stats.dropped
