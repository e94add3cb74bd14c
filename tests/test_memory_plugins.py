"""The in-memory lock and transport (simulator parts, not real store/network).

Most tests run on both backends with real (tiny) time; fault tests that need
long waits run under trio's MockClock through `anyio_backend` = trio with a
virtual clock.
"""

from __future__ import annotations

from itertools import count

import anyio
import pytest

from hedgeplug.errors import FrameTooLarge, RequestTimeout, StoreError, TransportError
from hedgeplug.lock.memory import MemoryLock, get_store, new_store
from hedgeplug.sim.network import Latency, LinkFaults, SimNetwork, new_network
from hedgeplug.transport.memory import MemoryNetwork, MemoryTransport, install_network


def _endpoint(
    network: MemoryNetwork, name: str, max_frame: int = 1 << 16, buffer: int = 4
) -> MemoryTransport:
    return MemoryTransport(network, f"mem://{name}", max_frame, buffer)


async def _echo(data: bytes, peer: str) -> bytes:
    return b"echo:" + data


async def _no_streams(stream) -> None:  # noqa: ANN001
    await stream.aclose()


class _Served:
    """Binds and serves endpoints inside a task group for one test."""

    def __init__(self, tg, network: MemoryNetwork) -> None:  # noqa: ANN001
        self.tg = tg
        self.network = network

    async def add(self, name: str, on_frame=_echo, on_stream=_no_streams, **kw) -> MemoryTransport:  # noqa: ANN001
        ep = _endpoint(self.network, name, **kw)
        await ep.bind()
        self.tg.start_soon(ep.serve, on_frame, on_stream)
        await anyio.sleep(0)
        while not ep.serving:
            await anyio.sleep(0)
        return ep


# ---------------------------------------------------------------- transport


@pytest.mark.anyio
async def test_request_reply_and_stats() -> None:
    net = new_network("t-basic", seed=1)
    async with anyio.create_task_group() as tg:
        s = _Served(tg, net)
        a, b = await s.add("a"), await s.add("b")
        assert await a.request(b.address, b"hi", 1.0) == b"echo:hi"
        assert (a.stats.frames_out, a.stats.frames_in, b.stats.frames_in, b.stats.frames_out) == (
            1,
            1,
            1,
            1,
        )
        assert a.stats.bytes_out == 2 and a.stats.bytes_in == 7
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_one_way_send_reaches_handler() -> None:
    net = new_network("t-send", seed=1)
    got: list[tuple[bytes, str]] = []

    async def record(data: bytes, peer: str) -> None:
        got.append((data, peer))

    async with anyio.create_task_group() as tg:
        s = _Served(tg, net)
        a, b = await s.add("a"), await s.add("b", on_frame=record)
        await a.send(b.address, b"x")
        with anyio.fail_after(1):
            while not got:
                await anyio.sleep(0.001)
        assert got == [(b"x", "mem://a")]
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_nothing_listening_is_refused_and_send_is_counted() -> None:
    net = new_network("t-refused", seed=1)
    async with anyio.create_task_group() as tg:
        a = await _Served(tg, net).add("a")
        with pytest.raises(TransportError, match="nothing listens"):
            await a.request("mem://nobody", b"x", 1.0)
        await a.send("mem://nobody", b"x")
        assert a.stats.dropped == {"no-endpoint": 1}
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_frame_limits() -> None:
    net = new_network("t-size", seed=1)
    async with anyio.create_task_group() as tg:
        s = _Served(tg, net)
        a = await s.add("a", max_frame=100)
        b = await s.add("b", max_frame=10)
        with pytest.raises(FrameTooLarge):
            await a.request(b.address, b"x" * 101, 1.0)
        await a.send(b.address, b"x" * 101)
        assert a.stats.dropped["too-large"] == 1
        # Within the sender's limit but over the receiver's: refused there, counted there.
        with pytest.raises(TransportError, match="refused a frame of 50 bytes") as info:
            await a.request(b.address, b"x" * 50, 1.0)
        assert not isinstance(info.value, RequestTimeout)
        assert b.stats.dropped["too-large"] == 1
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_address_in_use_is_an_error() -> None:
    net = new_network("t-inuse", seed=1)
    first = _endpoint(net, "a")
    await first.bind()
    with pytest.raises(TransportError, match="already bound"):
        await _endpoint(net, "a").bind()
    await first.aclose()
    await _endpoint(net, "a").bind()  # free again after close


@pytest.mark.anyio
async def test_partition_times_out_and_heal_restores() -> None:
    net = new_network("t-part", seed=1)
    async with anyio.create_task_group() as tg:
        s = _Served(tg, net)
        a, b, c = await s.add("a"), await s.add("b"), await s.add("c")
        net.partition([a.address], [b.address])
        with pytest.raises(RequestTimeout):
            await a.request(b.address, b"x", 0.05)
        # c is in the implicit "rest" group with neither a nor b
        with pytest.raises(RequestTimeout):
            await c.request(b.address, b"x", 0.05)
        assert net.stats.dropped["partition"] >= 2
        net.heal()
        assert await a.request(b.address, b"x", 1.0) == b"echo:x"
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_down_host_loses_everything() -> None:
    net = new_network("t-down", seed=1)
    async with anyio.create_task_group() as tg:
        s = _Served(tg, net)
        a, b = await s.add("a"), await s.add("b")
        net.set_down(b.address)
        with pytest.raises(RequestTimeout):
            await b.request(a.address, b"x", 0.05)
        assert net.stats.dropped["down"] == 1
        net.set_down(b.address, False)
        assert await b.request(a.address, b"x", 1.0) == b"echo:x"
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_closed_transport_fails_pending_requests() -> None:
    net = new_network("t-close", seed=1)

    async def never(data: bytes, peer: str) -> bytes:
        await anyio.sleep_forever()
        return b""

    async with anyio.create_task_group() as tg:
        s = _Served(tg, net)
        a, b = await s.add("a"), await s.add("b", on_frame=never)
        errors: list[Exception] = []

        async def ask() -> None:
            try:
                await a.request(b.address, b"x", 5.0)
            except TransportError as exc:
                errors.append(exc)

        tg.start_soon(ask)
        await anyio.sleep(0.01)
        await a.aclose()
        await anyio.sleep(0.01)
        assert errors and "closed" in str(errors[0])
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_stream_is_ordered_both_ways() -> None:
    net = new_network("t-stream", seed=1)
    net.set_faults(LinkFaults(latency=Latency(0.0, 0.002, "uniform")))

    async def echo_stream(stream) -> None:  # noqa: ANN001
        try:
            while True:
                await stream.send(b"r" + await stream.receive())
        except anyio.EndOfStream:
            pass
        await stream.aclose()

    async with anyio.create_task_group() as tg:
        s = _Served(tg, net)
        a, b = await s.add("a"), await s.add("b", on_stream=echo_stream)
        stream = await a.open_stream(b.address)
        sent = [str(i).encode() for i in range(20)]
        got = []

        async def reader() -> None:
            for _ in sent:
                got.append(await stream.receive())

        async with anyio.create_task_group() as inner:
            inner.start_soon(reader)
            for m in sent:
                await stream.send(m)
        assert got == [b"r" + m for m in sent]
        await stream.aclose()
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_stream_backpressure_blocks_the_sender() -> None:
    net = new_network("t-backpressure", seed=1)
    held: list = []

    async def hold(stream) -> None:  # noqa: ANN001
        held.append(stream)
        await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        s = _Served(tg, net)
        a, b = await s.add("a", buffer=3), await s.add("b", on_stream=hold)
        stream = await a.open_stream(b.address)
        sent = 0
        with anyio.move_on_after(0.2):
            while True:
                await stream.send(b"m")
                sent += 1
        assert sent == 3  # exactly the buffer, then the sender waits
        assert await held[0].receive() == b"m"
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_stream_end_when_peer_closes_and_unreachable_open_fails() -> None:
    net = new_network("t-stream-end", seed=1)

    async with anyio.create_task_group() as tg:
        s = _Served(tg, net)
        a, b = await s.add("a"), await s.add("b")  # b closes every stream at once
        stream = await a.open_stream(b.address)
        with pytest.raises(anyio.EndOfStream):
            with anyio.fail_after(1):
                await stream.receive()
        net.partition([a.address])
        with pytest.raises(TransportError, match="unreachable"):
            await a.open_stream(b.address)
        with pytest.raises(TransportError):
            await a.open_stream("mem://nobody")
        tg.cancel_scope.cancel()


# Faults under a virtual clock: long waits cost nothing and the numbers are exact.

trio_only = pytest.mark.parametrize("anyio_backend", ["trio"])


@pytest.fixture
def virtual_clock(monkeypatch):  # noqa: ANN001, ANN201
    import trio.testing

    return trio.testing.MockClock(autojump_threshold=0)


async def _count_arrivals(
    net: SimNetwork, n: int, faults: LinkFaults, gap: float = 0.0
) -> tuple[list[bytes], list[float]]:
    net.set_faults(faults)
    arrivals: list[bytes] = []
    times: list[float] = []

    async def record(data: bytes, peer: str) -> None:
        arrivals.append(data)
        times.append(anyio.current_time())

    async with anyio.create_task_group() as tg:
        s = _Served(tg, net)
        a, b = await s.add("a"), await s.add("b", on_frame=record)
        sent_at = []
        for i in range(n):
            sent_at.append(anyio.current_time())
            await a.send(b.address, i.to_bytes(4, "big"))
            if gap:
                await anyio.sleep(gap)
        await anyio.sleep(60)
        tg.cancel_scope.cancel()
    # Latency of each arrival (duplicates included), matched by the frame's number.
    return arrivals, [
        t - sent_at[int.from_bytes(d, "big")] for d, t in zip(arrivals, times, strict=True)
    ]


def _run_virtual(fn, *args):  # noqa: ANN001, ANN202
    import trio
    import trio.testing

    return trio.run(fn, *args, clock=trio.testing.MockClock(autojump_threshold=0))


def test_loss_drops_about_the_configured_share() -> None:
    net = new_network("t-loss", seed=7)
    arrivals, _ = _run_virtual(_count_arrivals, net, 2000, LinkFaults(loss=0.3))
    assert 1300 < len(arrivals) < 1500
    assert net.stats.dropped["loss"] == 2000 - len(arrivals)


def test_duplication_delivers_copies() -> None:
    net = new_network("t-dup", seed=7)
    arrivals, _ = _run_virtual(_count_arrivals, net, 1000, LinkFaults(duplicate=0.2))
    assert len(arrivals) == 1000 + net.stats.duplicated
    assert 150 < net.stats.duplicated < 250
    assert len(set(arrivals)) == 1000


def test_links_are_fifo_unless_reordered() -> None:
    net = new_network("t-fifo", seed=7)
    faults = LinkFaults(latency=Latency(0.001, 0.05, "exponential"))
    arrivals, _ = _run_virtual(_count_arrivals, net, 300, faults)
    assert arrivals == sorted(arrivals)


def test_reordering_changes_the_order_and_latency_follows_the_distribution() -> None:
    net = new_network("t-order", seed=7)
    fixed = LinkFaults(latency=Latency(0.010, 0.0, "fixed"))
    arrivals, times = _run_virtual(_count_arrivals, net, 200, fixed)
    assert arrivals == sorted(arrivals) and all(abs(t - 0.010) < 1e-3 for t in times)

    net = new_network("t-order", seed=7)
    arrivals, _ = _run_virtual(
        _count_arrivals, net, 200, LinkFaults(reorder=0.5, reorder_delay=0.1)
    )
    assert sorted(arrivals) == sorted(set(arrivals)) and arrivals != sorted(arrivals)

    net = new_network("t-order", seed=7)
    # Frames far apart, so the link's FIFO rule never holds one back.
    faults = LinkFaults(latency=Latency(0.005, 0.020, "exponential"))
    _, times = _run_virtual(_count_arrivals, net, 2000, faults, 1.0)
    mean = sum(times) / len(times)
    assert 0.022 < mean < 0.028 and min(times) >= 0.005


def test_per_link_faults_override_the_default() -> None:
    net = new_network("t-link", seed=7)
    net.set_faults(LinkFaults(loss=1.0), src="mem://a", dst="mem://b")
    assert net.faults("mem://a", "mem://b").loss == 1.0
    assert net.faults("mem://b", "mem://a").loss == 0.0
    net.set_faults(LinkFaults(loss=0.5), dst="mem://c")
    assert net.faults("mem://x", "mem://c").loss == 0.5
    net.clear_faults()
    assert net.faults("mem://a", "mem://b").loss == 0.0
    with pytest.raises(ValueError, match="probability"):
        LinkFaults(loss=1.5)


def test_same_seed_same_fate() -> None:
    def run(seed: int) -> list[bytes]:
        net = new_network("t-seed", seed=seed)
        faults = LinkFaults(
            latency=Latency(0.001, 0.05, "normal"), loss=0.2, duplicate=0.1, reorder=0.2
        )
        return _run_virtual(_count_arrivals, net, 300, faults)[0]

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_freeze_holds_frames_until_thaw() -> None:
    async def scenario() -> None:
        net = new_network("t-freeze", seed=1)
        async with anyio.create_task_group() as tg:
            s = _Served(tg, net)
            a, b = await s.add("a"), await s.add("b")
            net.freeze(b.address)
            with pytest.raises(RequestTimeout):
                await a.request(b.address, b"x", 1.0)
            t0 = anyio.current_time()

            async def thaw_later() -> None:
                await anyio.sleep(5)
                net.thaw(b.address)

            tg.start_soon(thaw_later)
            assert await a.request(b.address, b"y", 30.0) == b"echo:y"
            assert anyio.current_time() - t0 >= 5
            tg.cancel_scope.cancel()

    _run_virtual(scenario)


# ---------------------------------------------------------------- lock


def _lock(store_name: str, client: str = "n1", latency: float = 0.0) -> MemoryLock:
    from hedgeplug.lock.memory import get_store

    return MemoryLock(get_store(store_name), "L", client, latency)


@pytest.mark.anyio
async def test_lock_acquire_renew_release_and_tokens() -> None:
    new_store("l-basic")
    a, b = _lock("l-basic", "a"), _lock("l-basic", "b")
    la = await a.acquire("a", "mem://a", 10.0)
    assert la is not None and la.holder == "a" and la.token == 1 and la.ttl == 10.0
    assert await b.acquire("b", "mem://b", 10.0) is None  # held: no waiting, just None
    cur = await b.current()
    assert (
        cur is not None
        and cur.holder == "a"
        and cur.address == "mem://a"
        and 0 < cur.remaining <= 10
    )
    renewed = await a.renew(la, 10.0)
    assert renewed is not None and renewed.token == la.token
    # The holder itself acquiring again gets a new, higher token and the old lease is dead.
    again = await a.acquire("a", "mem://a", 10.0)
    assert again is not None and again.token == 2
    assert await a.renew(la, 10.0) is None
    await a.release(la)  # stale lease: no effect
    assert (await b.current()).token == 2  # type: ignore[union-attr]
    await a.release(again)
    assert await b.current() is None
    lb = await b.acquire("b", "mem://b", 10.0)
    assert lb is not None and lb.token == 3
    assert [g.token for g in a.store.grants] == [1, 2, 3]


def test_lock_expiry_follows_the_store_clock() -> None:
    async def scenario() -> None:
        store = new_store("l-expiry")
        a, b = _lock("l-expiry", "a"), _lock("l-expiry", "b")
        la = await a.acquire("a", "mem://a", 3.0)
        assert la is not None
        await anyio.sleep(2.9)
        assert await b.acquire("b", "mem://b", 3.0) is None
        await anyio.sleep(0.2)
        assert await a.renew(la, 3.0) is None  # expired: lost even though nobody took it
        lb = await b.acquire("b", "mem://b", 3.0)
        assert lb is not None and lb.token == 2
        # A store clock twice as fast halves the lease as the nodes see it.
        store.set_clock_rate(2.0)
        await anyio.sleep(1.6)
        assert await a.current() is None

    _run_virtual(scenario)


@pytest.mark.anyio
async def test_lock_outage_raises_store_error() -> None:
    store = new_store("l-down")
    a = _lock("l-down", "a")
    store.set_down()
    for call in (a.current(), a.acquire("a", "x", 1.0), a.row_get("k")):
        with pytest.raises(StoreError, match="down"):
            await call
    store.set_down(False)
    assert await a.acquire("a", "x", 1.0) is not None


def test_lock_latency_and_paused_clients() -> None:
    async def scenario() -> None:
        store = new_store("l-slow")
        a = _lock("l-slow", "a", latency=0.2)
        t0 = anyio.current_time()
        await a.current()
        assert anyio.current_time() - t0 == pytest.approx(0.2)
        store.latency = 0.1
        t0 = anyio.current_time()
        await a.current()
        assert anyio.current_time() - t0 == pytest.approx(0.3)
        store.latency = 0.0
        store.pause_client("a")
        with anyio.move_on_after(10) as scope:
            await a.current()
        assert scope.cancelled_caught
        store.resume_client("a")
        await a.current()

    _run_virtual(scenario)


@pytest.mark.anyio
async def test_lock_watch_wakes_on_change() -> None:
    new_store("l-watch")
    a, b = _lock("l-watch", "a"), _lock("l-watch", "b")
    seen = 0

    async def watcher() -> None:
        nonlocal seen
        async for _ in b.watch():
            seen += 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(watcher)
        await anyio.sleep(0.01)
        lease = await a.acquire("a", "x", 5.0)
        await anyio.sleep(0.01)
        assert seen == 1
        await a.release(lease)  # type: ignore[arg-type]
        await anyio.sleep(0.01)
        assert seen == 2
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_lock_rows_are_versioned() -> None:
    new_store("l-rows")
    a = _lock("l-rows")
    r1 = await a.row_put("k/1", b"one", expect=0)
    assert r1 is not None and r1.version == 1
    assert await a.row_put("k/1", b"x", expect=0) is None  # create-only fails
    r2 = await a.row_put("k/1", b"two", expect=1)
    assert r2 is not None and r2.version == 2 and (await a.row_get("k/1")).value == b"two"  # type: ignore[union-attr]
    await a.row_put("k/2", b"b")
    await a.row_put("other", b"c")
    assert [r.key for r in await a.row_scan("k/")] == ["k/1", "k/2"]
    assert not await a.row_delete("k/1", expect=1)
    assert await a.row_delete("k/1", expect=2)
    assert await a.row_get("k/1") is None


@pytest.mark.anyio
async def test_plugins_build_through_the_registry() -> None:
    import hedgeplug

    reg = hedgeplug.Registry.load()
    config = {
        "node": {"id": "solo", "cluster": "mem-test", "seed": 1},
        "lock": {"use": "memory", "store": "reg-test", "ttl": "1s"},
        "transport": {"use": "memory", "network": "reg-test"},
        "membership": {"use": "heartbeat", "interval": "100ms"},
    }
    plain = install_network(MemoryNetwork("reg-test"))  # the transport's own, no simulator
    new_store("reg-test")
    async with hedgeplug.open_node(config, registry=reg) as node:
        assert node.address == "mem://solo"
        lease = await node.wait_leader(5)
        assert lease.holder == "solo"
        assert plain.endpoint("mem://solo") is not None


def test_bad_options_are_clear_config_errors() -> None:
    import hedgeplug

    with pytest.raises(hedgeplug.ConfigError, match="latency"):
        hedgeplug.load_config(data={"lock": {"use": "memory", "latency": "soon"}}, env={})
    with pytest.raises(hedgeplug.ConfigError, match="allowed keys"):
        hedgeplug.load_config(data={"transport": {"use": "memory", "netwrok": "x"}}, env={})


# ---------------------------------------------------------------- the shared lock contract

try:
    from hedgeplug.testing.lock_contract import (
        FingerprintedContract,
        LockBackendContract,
        RowStorageContract,
        StallContract,
        StoreOutageContract,
        WatchableContract,
    )
    from hedgeplug.testing.log_contract import FencedLogContract
except ImportError:  # the contract suite is optional in a partial checkout
    LockBackendContract = None  # type: ignore[assignment,misc]

if LockBackendContract is not None:
    _contract_stores = count(1)

    class TestMemoryLockContract(
        LockBackendContract,
        WatchableContract,
        RowStorageContract,
        StoreOutageContract,
        StallContract,
        FencedLogContract,
        FingerprintedContract,
    ):
        wall_clock_commits = False  # the store's clock is the loop's (virtual in the simulator)

        @pytest.fixture
        def store_name(self) -> str:
            name = f"contract-{next(_contract_stores)}"
            new_store(name)
            return name

        @pytest.fixture
        def make_lock(self, store_name: str):  # noqa: ANN201
            clients = count(1)
            return lambda: _lock(store_name, f"client-{next(clients)}")

        @pytest.fixture
        def store_control(self, store_name: str):  # noqa: ANN201
            store = get_store(store_name)

            class Control:
                def stop(self) -> None:
                    store.set_down(True)

                def start(self) -> None:
                    store.set_down(False)

            return Control()

        @pytest.fixture
        def store_stall(self, store_name: str):  # noqa: ANN201
            return get_store(store_name)


# ---------------------------------------------------------------- the shared transport contract

try:
    from hedgeplug.testing.transport_contract import TransportContract
except ImportError:  # the contract suite is optional in a partial checkout
    TransportContract = None  # type: ignore[assignment,misc]

if TransportContract is not None:
    _contract_networks = count(1)

    class TestMemoryTransportContract(TransportContract):
        """The memory transport over the plain network it gets without the simulator."""

        @pytest.fixture
        def network(self) -> MemoryNetwork:
            return install_network(MemoryNetwork(f"contract-{next(_contract_networks)}"))

        @pytest.fixture
        def make_transport(self, network: MemoryNetwork):  # noqa: ANN201
            names = count(1)

            def make(max_frame: int | None = None) -> MemoryTransport:
                return MemoryTransport(network, f"mem://ep-{next(names)}", max_frame or 1 << 20)

            return make

        @pytest.fixture
        def unreachable_address(self) -> str:
            return "mem://nobody-here"

        @pytest.fixture
        def send_garbage(self, network: MemoryNetwork):  # noqa: ANN201
            async def deliver(address: str) -> None:
                # The memory medium carries Python objects: garbage is anything not bytes.
                assert network.inject(address, {"not": "bytes"})

            return deliver
