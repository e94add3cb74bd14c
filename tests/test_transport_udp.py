"""The udp transport on real loopback sockets: the transport contract, then
the datagram/tcp split and raw datagrams sent to the real port."""

from __future__ import annotations

import socket

import anyio
import pytest

from hedgeplug.config import ConfigError, load_config
from hedgeplug.errors import TransportError
from hedgeplug.plugin import Address
from hedgeplug.testing.transport_contract import (
    TransportContract,
    eventually,
    server_and_client,
    serving,
)
from hedgeplug.transport.udp import (
    HEADER_SIZE,
    REPLY,
    REQUEST,
    UdpOptions,
    UdpTransport,
    encode_datagram,
)


def udp(max_frame: int | None = None, **options: object) -> UdpTransport:
    if max_frame is not None:
        options["max_frame"] = max_frame
    return UdpTransport(UdpOptions(**options))  # type: ignore[arg-type]


def free_port_address() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"127.0.0.1:{port}"


async def send_datagram(address: str, data: bytes) -> None:
    # A plain socket: asyncio's datagram transport silently skips empty datagrams.
    host, _, port = address.rpartition(":")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(data, (host, int(port)))


class TestUdpContract(TransportContract):
    @pytest.fixture
    def make_transport(self):
        return udp

    @pytest.fixture
    def unreachable_address(self) -> str:
        return free_port_address()

    @pytest.fixture
    def send_garbage(self):
        async def deliver(address: str) -> None:
            await send_datagram(address, b"\xde\xad\xbe\xef" * 8)

        return deliver


pytestmark = pytest.mark.anyio


async def test_small_frames_never_touch_tcp() -> None:
    async with server_and_client(udp) as (server, client, address):
        for i in range(20):
            assert await client.request(address, b"%d" % i, 5) == b"echo:%d" % i
        await client.send(address, b"note")
        assert server.tcp.accepted == 0


async def test_frame_over_the_datagram_limit_goes_over_tcp() -> None:
    async with server_and_client(udp) as (server, client, address):
        big = bytes(range(256)) * 40  # 10 KiB
        assert await client.request(address, big, 5) == b"echo:" + big
        assert server.tcp.accepted == 1


async def test_datagram_limit_is_exact() -> None:
    server, client = udp(max_datagram=200), udp(max_datagram=200)

    async def short(data: bytes, peer: str) -> bytes:
        return b"k"

    async with serving(server, short) as address, serving(client):
        assert await client.request(address, b"a" * (200 - HEADER_SIZE), 5) == b"k"
        assert server.tcp.accepted == 0
        assert await client.request(address, b"a" * (201 - HEADER_SIZE), 5) == b"k"
        assert server.tcp.accepted == 1


async def test_big_reply_is_fetched_over_tcp_and_the_handler_runs_once() -> None:
    calls = 0

    async def large(data: bytes, peer: str) -> bytes:
        nonlocal calls
        calls += 1
        return b"r" * 100_000

    async with server_and_client(udp, large) as (server, client, address):
        assert await client.request(address, b"small question", 5) == b"r" * 100_000
        assert calls == 1
        assert server.tcp.accepted == 1
        assert server.parked_replies == 0


async def test_big_one_way_frame_goes_over_tcp() -> None:
    seen: list[bytes] = []

    async def collect(data: bytes, peer: str) -> None:
        seen.append(data)

    async with server_and_client(udp, collect) as (server, client, address):
        await client.send(address, b"b" * 5000)
        await eventually(lambda: seen == [b"b" * 5000])
        assert server.tcp.accepted == 1


@pytest.mark.parametrize(
    ("garbage", "reason"),
    [
        (b"", "bad-datagram"),
        (b"HU", "bad-datagram"),
        (b"XX\x01\x02\x00\x00\x00\x01body", "bad-datagram"),
        (b"HU\x09\x02\x00\x00\x00\x01body", "bad-datagram"),
        (b"HU\x01\x63\x00\x00\x00\x01body", "bad-datagram"),
        (encode_datagram(REPLY, 5, b"nobody asked"), "unexpected-datagram"),
    ],
    ids=["empty", "short", "magic", "version", "type", "stray-reply"],
)
async def test_raw_garbage_datagrams_are_counted_by_reason(garbage: bytes, reason: str) -> None:
    async with server_and_client(udp) as (server, client, address):
        await send_datagram(address, garbage)
        await eventually(lambda: server.stats.dropped.get(reason) == 1)
        assert await client.request(address, b"alive", 5) == b"echo:alive"


async def test_raw_request_datagram_gets_a_reply_datagram() -> None:
    async with serving(udp()) as address:
        host, _, port = address.rpartition(":")
        async with await anyio.create_udp_socket(socket.AF_INET, local_host="127.0.0.1") as sock:
            await sock.sendto(encode_datagram(REQUEST, 42, b"hello"), host, int(port))
            with anyio.fail_after(5):
                data, _ = await sock.receive()
    assert data == encode_datagram(REPLY, 42, b"echo:hello")


async def test_tcp_and_udp_share_the_port_number() -> None:
    transport = udp()
    async with serving(transport) as address:
        port = int(address.rpartition(":")[2])
        assert transport.tcp.port == port
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            with pytest.raises(OSError):
                probe.bind(("127.0.0.1", port))


async def test_ipv6_loopback() -> None:
    server, client = udp(bind="[::1]:0"), udp(bind="[::1]:0")
    async with serving(server) as address, serving(client):
        assert address.startswith("[::1]:")
        assert await client.request(address, b"six", 5) == b"echo:six"
        assert await client.request(address, b"6" * 3000, 5) == b"echo:" + b"6" * 3000


async def test_hostname_address_is_resolved() -> None:
    server = udp(advertise="localhost:0")
    async with serving(server) as address, serving(client := udp()):
        assert address.startswith("localhost:")
        assert await client.request(address, b"named", 5) == b"echo:named"


async def test_udp_port_taken_is_a_clear_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with pytest.raises(TransportError, match=f"cannot bind udp on 127.0.0.1:{port}"):
            await udp(bind=f"127.0.0.1:{port}").bind()


async def test_request_to_a_malformed_address_is_a_clear_error() -> None:
    async with serving(client := udp()):
        with pytest.raises(TransportError, match="expected host:port"):
            await client.request("no-port-here", b"x", 1)
        with pytest.raises(TransportError, match="not an IPv6 address"):
            await client.request("[nope]:7000", b"x" * 3000, 1)  # the tcp path parses too
        await client.send("no-port-here", b"x")
        assert client.stats.dropped == {"send-failed": 1}


def test_bad_options_are_config_errors_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"\[transport\] max_datagram"):
        load_config(data={"transport": {"use": "udp", "max_datagram": 10}}, env={})
    with pytest.raises(ConfigError, match=r"\[transport\] bind: .*expected host:port"):
        load_config(data={"transport": {"use": "udp", "bind": "localhost"}}, env={})
    loaded = load_config(data={"transport": {"use": "udp", "bind": "[::1]:0"}}, env={})
    assert loaded.transport.options.bind == Address("::1", 0)
    config = load_config(data={"transport": {"use": "udp", "max_datagram": "1KiB"}}, env={})
    assert config.transport.options == UdpOptions(max_datagram=1024)


async def test_bounded_soak_mixing_datagrams_tcp_and_parked_replies() -> None:
    async def shaped(data: bytes, peer: str) -> bytes:
        if data.startswith(b"big-reply"):
            return data * 200  # too large for a datagram: parked, fetched over tcp
        return data

    async with server_and_client(udp, shaped) as (server, client, address):

        async def worker(n: int) -> None:
            for i in range(40):
                if i % 3 == 0:
                    data = b"big-reply-%d-%d" % (n, i)
                    expected = data * 200
                elif i % 3 == 1:
                    data = b"x" * 3000 + b"-%d-%d" % (n, i)  # goes over tcp
                    expected = data
                else:
                    data = expected = b"small-%d-%d" % (n, i)
                assert await client.request(address, data, 10) == expected

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for n in range(10):
                    tg.start_soon(worker, n)
        assert server.parked_replies == 0
        assert server.tcp.accepted == 1
        assert not client.stats.dropped and not server.stats.dropped
