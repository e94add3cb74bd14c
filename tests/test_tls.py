"""TLS on the tcp transport, in one process over real loopback sockets:
mutual authentication both ways, refusals counted and never fatal, a bounded
handshake, clear start-up errors for bad files, and the secure-default check
accepting mutual TLS in place of a cluster key. Certificates are real ones,
made here with `cryptography`."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

import hedgeplug
from hedgeplug.errors import ConfigError, TransportError
from hedgeplug.transport.tcp import TcpOptions, TcpTransport
from hedgeplug.transport.tcp.certificates import CA_CERT, NodeFiles, create_ca, issue_node

pytestmark = pytest.mark.anyio


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, NodeFiles]:
    """A cluster CA with nodes a and b, and a stranger CA with node x."""
    create_ca(tmp_path / "cluster")
    create_ca(tmp_path / "stranger", name="someone else's CA")
    return {
        "a": issue_node(tmp_path / "cluster", "a"),
        "b": issue_node(tmp_path / "cluster", "b"),
        "x": issue_node(tmp_path / "stranger", "x"),
    }


def tls_options(files: NodeFiles, **changes: object) -> TcpOptions:
    return TcpOptions(tls_cert=files.cert, tls_key=files.key, tls_ca=files.ca, **changes)  # type: ignore[arg-type]


async def echo(body: bytes, peer: str) -> bytes:
    return b"echo:" + body


async def echo_stream(stream) -> None:  # type: ignore[no-untyped-def]
    try:
        while True:
            await stream.send(b"stream:" + await stream.receive())
    except (anyio.EndOfStream, TransportError):
        pass


async def serving(tg: anyio.abc.TaskGroup, options: TcpOptions) -> TcpTransport:
    server = TcpTransport(options)
    await server.bind()
    tg.start_soon(server.serve, echo, echo_stream)
    return server


async def wait_dropped(transport: TcpTransport, reason: str, count: int = 1) -> None:
    with anyio.fail_after(5):
        while transport.stats.dropped.get(reason, 0) < count:
            await anyio.sleep(0.01)


async def test_members_of_one_ca_exchange_requests_streams_and_one_way_frames(pki) -> None:
    async with anyio.create_task_group() as tg:
        server = await serving(tg, tls_options(pki["a"]))
        client = TcpTransport(tls_options(pki["b"]))
        try:
            assert server.authenticates_peers and client.authenticates_peers
            for i in range(20):
                assert await client.request(server.address, b"%d" % i, 5) == b"echo:%d" % i
            big = os.urandom(300_000)  # many TLS records, one frame
            assert await client.request(server.address, big, 5) == b"echo:" + big
            await client.send(server.address, b"one-way")
            assert server.accepted == 1  # one pooled TLS connection carried it all
            stream = await client.open_stream(server.address)  # a TLS connection of its own
            for i in range(5):
                await stream.send(b"%d" % i)
                with anyio.fail_after(5):
                    assert await stream.receive() == b"stream:%d" % i
            await stream.aclose()
            assert server.accepted == 2
            with anyio.fail_after(5):
                while server.stats.frames_in < 27:
                    await anyio.sleep(0.01)
            assert not client.stats.dropped and not server.stats.dropped
        finally:
            await client.aclose()
            await server.aclose()
            tg.cancel_scope.cancel()


async def test_no_byte_of_a_frame_or_stream_crosses_the_wire_in_clear(pki) -> None:
    """A relay between two members records every byte both ways: the
    payloads arrive, and none of them appears on the wire."""
    wire = bytearray()
    marker = b"plain-text-marker-" * 4

    async def pump(source: anyio.abc.ByteStream, sink: anyio.abc.ByteStream) -> None:
        try:
            while True:
                data = await source.receive()
                wire.extend(data)
                await sink.send(data)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            await anyio.aclose_forcefully(sink)

    async with anyio.create_task_group() as tg:
        server = await serving(tg, tls_options(pki["a"]))
        relay = await anyio.create_tcp_listener(local_host="127.0.0.1")

        async def relay_one(near: anyio.abc.SocketStream) -> None:
            far = await anyio.connect_tcp("127.0.0.1", server.port)
            async with anyio.create_task_group() as pumps:
                pumps.start_soon(pump, near, far)
                pumps.start_soon(pump, far, near)

        tg.start_soon(relay.serve, relay_one)
        relayed = f"127.0.0.1:{relay.extra(anyio.abc.SocketAttribute.local_port)}"
        client = TcpTransport(tls_options(pki["b"]))
        try:
            for i in range(50):  # small frames: the ones the direct socket path writes
                assert await client.request(relayed, marker + b"%d" % i, 5) == b"echo:" + marker + b"%d" % i
            stream = await client.open_stream(relayed)
            await stream.send(marker)
            with anyio.fail_after(5):
                assert await stream.receive() == b"stream:" + marker
            await stream.aclose()
            assert len(wire) > 50 * len(marker)  # the relay saw the traffic...
            assert marker[:16] not in wire and b"echo:" not in wire and b"HPT" not in wire  # ...sealed
        finally:
            await client.aclose()
            await server.aclose()
            tg.cancel_scope.cancel()  # ends the relay's accept loop and pumps
    await relay.aclose()


def raw_client_context(ca: str, cert: NodeFiles | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(ca)
    if cert is not None:
        context.load_cert_chain(cert.cert, cert.key)
    return context


@pytest.mark.parametrize("who", ["no certificate", "another CA", "plain tcp"])
async def test_a_peer_without_a_cluster_certificate_is_refused_counted_and_harmless(pki, who) -> None:
    async with anyio.create_task_group() as tg:
        server = await serving(tg, tls_options(pki["a"]))
        member = TcpTransport(tls_options(pki["b"]))
        try:
            if who == "plain tcp":
                outsider = TcpTransport(TcpOptions())
                with pytest.raises(TransportError):
                    await outsider.request(server.address, b"let me in", 5)
                await outsider.aclose()
            else:
                # It trusts the cluster CA, so only the server's check stops it.
                cert = None if who == "no certificate" else pki["x"]
                context = raw_client_context(pki["a"].ca, cert)
                stream = await anyio.connect_tcp("127.0.0.1", server.port, ssl_context=context,
                                                 tls_standard_compatible=False)
                with pytest.raises((anyio.BrokenResourceError, anyio.EndOfStream, OSError)):
                    await stream.send(b"HPT\x01F" + b"\x00" * 9)
                    with anyio.fail_after(5):
                        await stream.receive()
                await anyio.aclose_forcefully(stream)
            await wait_dropped(server, "tls-handshake-failed")
            assert server.stats.frames_in == 0  # not one frame reached the handler
            # The server goes on serving members.
            assert await member.request(server.address, b"still here", 5) == b"echo:still here"
        finally:
            await member.aclose()
            await server.aclose()
            tg.cancel_scope.cancel()


async def test_a_member_refuses_a_server_signed_by_another_ca(pki) -> None:
    async with anyio.create_task_group() as tg:
        stranger = await serving(tg, tls_options(pki["x"]))
        member = TcpTransport(tls_options(pki["a"]))
        try:
            with pytest.raises(TransportError, match="TLS handshake .* failed: certificate refused"):
                await member.request(stranger.address, b"hello?", 5)
            assert member.stats.dropped["tls-handshake-failed"] == 1
            await member.send(stranger.address, b"one-way")  # dropped and counted, no raise
            assert member.stats.dropped["send-failed"] == 1
            assert stranger.stats.frames_in == 0
        finally:
            await member.aclose()
            await stranger.aclose()
            tg.cancel_scope.cancel()


async def test_a_peer_that_connects_and_says_nothing_loses_its_slot(pki) -> None:
    async with anyio.create_task_group() as tg:
        server = await serving(tg, tls_options(pki["a"], connect_timeout=0.3, max_connections=1))
        try:
            silent = await anyio.connect_tcp("127.0.0.1", server.port)
            await wait_dropped(server, "tls-handshake-timeout")
            with anyio.fail_after(5):
                with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError, OSError)):
                    await silent.receive()
            await silent.aclose()
            # The slot is free again: a member gets the one connection allowed.
            member = TcpTransport(tls_options(pki["b"]))
            assert await member.request(server.address, b"my turn", 5) == b"echo:my turn"
            await member.aclose()
        finally:
            await server.aclose()
            tg.cancel_scope.cancel()


def test_bad_files_are_named_in_a_clear_error(pki, tmp_path) -> None:
    a, b, x = pki["a"], pki["b"], pki["x"]
    cases = {
        "does not exist": dict(tls_cert=str(tmp_path / "missing.pem"), tls_key=a.key, tls_ca=a.ca),
        "is not the private key": dict(tls_cert=a.cert, tls_key=b.key, tls_ca=a.ca),
        "does not verify against the CA": dict(tls_cert=a.cert, tls_key=a.key, tls_ca=x.ca),
        "no usable CA certificate": dict(tls_cert=a.cert, tls_key=a.key, tls_ca=a.key),
        "'tls_ca' is empty": dict(tls_cert=a.cert, tls_key=a.key),
    }
    for message, files in cases.items():
        with pytest.raises(ValueError, match=message):
            TcpOptions(**files)  # type: ignore[arg-type]
    unreadable = tmp_path / "unreadable.key"
    unreadable.write_bytes(Path(a.key).read_bytes())
    unreadable.chmod(0)
    if os.geteuid() != 0:  # root reads anything
        with pytest.raises(ValueError, match="cannot read"):
            TcpOptions(tls_cert=a.cert, tls_key=str(unreadable), tls_ca=a.ca)


def test_run_with_a_mismatched_key_exits_2_naming_the_option(pki, tmp_path) -> None:
    a, b = pki["a"], pki["b"]
    result = subprocess.run(
        [sys.executable, "-m", "hedgeplug", "run", "--bind", "127.0.0.1:0",
         "--set", f"lock.path={tmp_path / 'lock.sqlite'}",
         "--set", f"transport.tls_cert={a.cert}", "--set", f"transport.tls_key={b.key}",
         "--set", f"transport.tls_ca={a.ca}"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "tls_key" in result.stderr and "is not the private key" in result.stderr


def node_config(tmp_path: Path, transport: dict[str, object]) -> dict:
    return {
        "node": {"id": "n1", "cluster": "tls-exposure", "stop_timeout": "1s"},  # no key
        # Bound everywhere (reachable beyond this machine), advertised on loopback.
        "lock": {"use": "sqlite", "path": str(tmp_path / "lock.sqlite"), "ttl": "1s"},
        "transport": {"use": "tcp", "bind": "0.0.0.0:0", "advertise": "127.0.0.1:0", **transport},
    }


async def test_a_reachable_node_with_mutual_tls_and_no_key_starts_without_insecure(pki, tmp_path) -> None:
    a = pki["a"]
    files = {"tls_cert": a.cert, "tls_key": a.key, "tls_ca": a.ca}
    async with hedgeplug.open_node(node_config(tmp_path, files)) as node:
        assert (await node.wait_leader(5.0)).holder == "n1"
    # Without TLS, or with TLS that does not authenticate clients, the rule holds.
    for transport in ({}, {**files, "tls_client_auth": False}):
        with pytest.raises(ConfigError, match="refusing to start.*mutual TLS"):
            async with hedgeplug.open_node(node_config(tmp_path, transport)):
                pass


def test_tls_init_writes_a_ca_and_node_files_that_load(tmp_path) -> None:
    folder = tmp_path / "pki"
    result = subprocess.run(
        [sys.executable, "-m", "hedgeplug", "tls-init", str(folder), "n1", "n2=10.1.2.3,n2.example"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert (folder / CA_CERT).exists()
    for node in ("n1", "n2"):
        assert (folder / f"{node}.key").stat().st_mode & 0o077 == 0  # private
        files = NodeFiles(str(folder / f"{node}.pem"), str(folder / f"{node}.key"), str(folder / CA_CERT))
        assert f'tls_cert = "{files.cert}"' in result.stdout
        assert tls_options(files).tls_mutual
    bad = subprocess.run(
        [sys.executable, "-m", "hedgeplug", "tls-init", str(folder), "../evil"],
        capture_output=True, text=True, timeout=60,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "node name" in bad.stderr
