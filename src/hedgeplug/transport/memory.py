"""In-memory transport: a SIMULATOR PART, not a real network.

Every endpoint lives in a process-global `Network` (keyed by name) that decides
the fate of each frame: latency drawn from per-link distributions, loss,
duplication, reordering, partitions, unreachable hosts and frozen endpoints.
All randomness comes from the network's own seeded `Random` and all time from
`anyio.current_time()` / `anyio.sleep()`, so under trio's MockClock a run is
reproducible from its seeds. Use tcp or udp for anything that leaves a test.

Frames in flight are tasks of the *receiving* endpoint: when a node dies, what
was travelling to it dies with it, what it had sent still arrives.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import count
from random import Random
from typing import Any, Literal

import anyio
import attrs
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from hedgeplug.config import Size
from hedgeplug.contracts import FrameHandler, StreamHandler, TransportStats
from hedgeplug.errors import FrameTooLarge, RequestTimeout, TransportError
from hedgeplug.hookspecs import hookimpl

# ---------------------------------------------------------------- faults


@attrs.frozen
class Latency:
    """One-way delay: `base` plus a random part shaped by `shape` with scale `jitter`."""

    base: float = 0.001
    jitter: float = 0.0
    shape: Literal["fixed", "uniform", "exponential", "normal"] = "uniform"

    def sample(self, rng: Random) -> float:
        if self.jitter <= 0 or self.shape == "fixed":
            return self.base
        if self.shape == "uniform":
            return self.base + rng.uniform(0.0, self.jitter)
        if self.shape == "exponential":
            return self.base + rng.expovariate(1.0 / self.jitter)
        return self.base + abs(rng.gauss(0.0, self.jitter))


@attrs.frozen
class LinkFaults:
    """What a link does to frames. Probabilities are per frame."""

    latency: Latency = Latency()
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    reorder_delay: float = 0.05  # extra delay of a reordered frame, uniform up to this

    def __attrs_post_init__(self) -> None:
        for name in ("loss", "duplicate", "reorder"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability between 0 and 1, got {value}")


@attrs.define
class NetworkStats:
    """What the network did, across all endpoints."""

    sent: int = 0
    delivered: int = 0
    duplicated: int = 0
    reordered: int = 0
    dropped: dict[str, int] = attrs.Factory(dict)

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1


class Network:
    """The medium all memory transports of one name share; the simulator controls it."""

    def __init__(self, name: str = "default", seed: int = 0) -> None:
        self.name = name
        self.random = Random(seed)
        self.endpoints: dict[str, MemoryTransport] = {}
        self.default_faults = LinkFaults()
        self.stats = NetworkStats()
        self._links: dict[tuple[str | None, str | None], LinkFaults] = {}
        self._group_of: dict[str, int] | None = None  # None: no partition
        self._down: set[str] = set()
        self._thawed: dict[str, anyio.Event] = {}  # present while frozen
        self._last_arrival: dict[tuple[str, str], float] = {}

    # ------------------------------------------------------------ fault control

    def set_faults(
        self, faults: LinkFaults, src: str | None = None, dst: str | None = None
    ) -> None:
        """Faults for frames from `src` to `dst` (None matches any address);
        with neither given, the default for every link."""
        if src is None and dst is None:
            self.default_faults = faults
        else:
            self._links[(src, dst)] = faults

    def clear_faults(self) -> None:
        self.default_faults = LinkFaults()
        self._links.clear()

    def faults(self, src: str, dst: str) -> LinkFaults:
        links = self._links
        if links:
            for key in ((src, dst), (src, None), (None, dst)):
                found = links.get(key)
                if found is not None:
                    return found
        return self.default_faults

    def partition(self, *groups: Iterable[str]) -> None:
        """Split the network: addresses in different groups cannot reach each
        other; every address not listed forms one more group together."""
        group_of: dict[str, int] = {}
        for i, group in enumerate(groups, start=1):
            for address in group:
                group_of[address] = i
        self._group_of = group_of

    def heal(self) -> None:
        """End every partition."""
        self._group_of = None

    @property
    def partitioned(self) -> bool:
        return self._group_of is not None

    def set_down(self, address: str, down: bool = True) -> None:
        """An unreachable host: every frame to or from it is lost."""
        if down:
            self._down.add(address)
        else:
            self._down.discard(address)

    def freeze(self, address: str) -> None:
        """Hold every frame to or from `address` until `thaw` (a paused process)."""
        if address not in self._thawed:
            self._thawed[address] = anyio.Event()

    def thaw(self, address: str) -> None:
        event = self._thawed.pop(address, None)
        if event is not None:
            event.set()

    def is_frozen(self, address: str) -> bool:
        return address in self._thawed

    async def wait_thawed(self, address: str) -> None:
        event = self._thawed.get(address)
        if event is not None:
            await event.wait()

    def reachable(self, src: str, dst: str) -> bool:
        if src in self._down or dst in self._down:
            return False
        group_of = self._group_of
        return group_of is None or group_of.get(src, 0) == group_of.get(dst, 0)

    # ------------------------------------------------------------ routing

    def route(self, src: str, dst: str) -> list[float]:
        """Arrival times of the copies of one frame from src to dst ([] when lost; counted).

        A link is FIFO like a TCP connection: a frame never arrives before
        one sent earlier on the same link, unless the reorder fault picked
        it. Arrivals on one link are at least a microsecond apart so the
        scheduler never has to break a tie.
        """
        self.stats.sent += 1
        if src in self._down or dst in self._down:
            self.stats.drop("down")
            return []
        if not self.reachable(src, dst):
            self.stats.drop("partition")
            return []
        f = self.faults(src, dst)
        rng = self.random
        if f.loss and rng.random() < f.loss:
            self.stats.drop("loss")
            return []
        copies = 1
        if f.duplicate and rng.random() < f.duplicate:
            copies = 2
            self.stats.duplicated += 1
        now = anyio.current_time()
        link = (src, dst)
        arrivals = []
        for _ in range(copies):
            at = now + f.latency.sample(rng)
            if f.reorder and rng.random() < f.reorder:
                at += rng.uniform(0.0, f.reorder_delay)
                self.stats.reordered += 1
            else:
                at = max(at, self._last_arrival.get(link, 0.0) + _TIE_GAP)
                self._last_arrival[link] = at
            arrivals.append(at)
        return arrivals

    def inject(self, dst: str, payload: Any, src: str = "mem://injector") -> bool:
        """Hand `payload` (anything, even not bytes) to the endpoint at `dst` as
        if it came off the wire: how tests feed malformed input."""
        target = self.endpoints.get(dst)
        if target is None or target._closed:
            return False
        target._deliver(MemoryTransport(self, src, 1 << 30), payload, None, anyio.current_time())
        return True

    def attach(self, endpoint: MemoryTransport) -> None:
        current = self.endpoints.get(endpoint.address)
        if current is not None and current is not endpoint:
            raise TransportError(
                f"address {endpoint.address} is already bound on memory network {self.name!r}"
            )
        self.endpoints[endpoint.address] = endpoint

    def detach(self, endpoint: MemoryTransport) -> None:
        if self.endpoints.get(endpoint.address) is endpoint:
            del self.endpoints[endpoint.address]


_TIE_GAP = 1e-6
BACKLOG = 1024  # frames an endpoint holds between bind and serve
ACCEPT_WAIT = 5.0  # how long a stream open waits for a bound endpoint to start serving
_networks: dict[str, Network] = {}


def get_network(name: str = "default") -> Network:
    """The process-global network of that name, created on first use (seed 0)."""
    network = _networks.get(name)
    if network is None:
        network = _networks[name] = Network(name)
    return network


def new_network(name: str = "default", seed: int = 0) -> Network:
    """Replace the network of that name by a fresh one (tests, simulator runs)."""
    network = _networks[name] = Network(name, seed)
    return network


def reset_networks() -> None:
    _networks.clear()


# ---------------------------------------------------------------- streams


class MemoryStream:
    """One end of an ordered in-memory stream; the bounded buffer gives backpressure."""

    def __init__(
        self,
        owner: MemoryTransport,
        peer: str,
        outbound: MemoryObjectSendStream[bytes],
        inbound: MemoryObjectReceiveStream[bytes],
    ) -> None:
        self._owner = owner
        self._peer = peer
        self._out = outbound
        self._in = inbound

    async def send(self, data: bytes) -> None:
        owner = self._owner
        if len(data) > owner.max_frame:
            raise FrameTooLarge(f"stream message of {len(data)} bytes exceeds {owner.max_frame}")
        network = owner.network
        await network.wait_thawed(owner.address)
        if not network.reachable(owner.address, self._peer):
            raise TransportError(f"stream to {self._peer} broken: unreachable")
        # One delay per message, slept by the sender, keeps the order.
        await anyio.sleep(network.faults(owner.address, self._peer).latency.sample(network.random))
        try:
            await self._out.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            raise TransportError(f"stream to {self._peer} closed") from None
        owner.stats.frames_out += 1
        owner.stats.bytes_out += len(data)

    async def receive(self) -> bytes:
        try:
            data = await self._in.receive()
        except anyio.ClosedResourceError:
            raise anyio.EndOfStream from None
        await self._owner.network.wait_thawed(self._owner.address)
        self._owner.stats.frames_in += 1
        self._owner.stats.bytes_in += len(data)
        return data

    async def aclose(self) -> None:
        self._out.close()
        self._in.close()
        self._owner._streams.discard(self)


# ---------------------------------------------------------------- transport


@attrs.define
class _Pending:
    done: anyio.Event = attrs.Factory(anyio.Event)
    reply: bytes = b""
    error: str | None = None


class MemoryTransport:
    """A transport endpoint on a simulated `Network` (simulator part, not a real network)."""

    def __init__(
        self, network: Network, address: str, max_frame: int, stream_buffer: int = 16
    ) -> None:
        self.network = network
        self.address = address
        self.max_frame = max_frame
        self.stream_buffer = stream_buffer
        self.stats = TransportStats()
        self._tg: TaskGroup | None = None
        self._on_frame: FrameHandler | None = None
        self._on_stream: StreamHandler | None = None
        self._pending: dict[int, _Pending] = {}
        self._ids = count(1)
        self._streams: set[MemoryStream] = set()
        self._backlog: list[tuple[MemoryTransport, Any, int | None, float]] = []
        self._served = False  # serve ran and ended
        self._closed = False

    @property
    def serving(self) -> bool:
        return self._tg is not None and not self._closed

    async def bind(self) -> str:
        if self._closed:
            raise TransportError("transport is closed")
        self.network.attach(self)
        return self.address

    async def serve(self, on_frame: FrameHandler, on_stream: StreamHandler) -> None:
        self._on_frame, self._on_stream = on_frame, on_stream
        async with anyio.create_task_group() as tg:
            self._tg = tg
            try:
                backlog, self._backlog = self._backlog, []
                for item in backlog:
                    tg.start_soon(self._arrive, *item)
                await anyio.sleep_forever()
            finally:
                # The group takes no new tasks from here on: frames now are lost.
                self._tg = None
                self._served = True

    def _check_size(self, data: bytes) -> None:
        if len(data) > self.max_frame:
            raise FrameTooLarge(
                f"frame of {len(data)} bytes exceeds the limit of {self.max_frame} bytes"
            )

    def _target(self, address: str) -> MemoryTransport | None:
        """The endpoint bound at `address` (serving or about to), if any."""
        target = self.network.endpoints.get(address)
        return None if target is None or target._closed else target

    def _deliver(self, source: MemoryTransport, data: Any, rid: int | None, at: float) -> None:
        """Start a frame's journey to this endpoint. Bound but not yet serving,
        it waits in a bounded backlog, like connections on a listening socket."""
        if self._tg is not None:
            self._tg.start_soon(self._arrive, source, data, rid, at)
        elif self._served:
            self.stats.drop("closed")  # its serve task has ended
        elif len(self._backlog) < BACKLOG:
            self._backlog.append((source, data, rid, at))
        else:
            self.stats.drop("backlog-full")

    async def request(self, address: str, data: bytes, timeout: float) -> bytes:
        self._check_size(data)
        if self._closed:
            raise TransportError("transport is closed")
        rid = next(self._ids)
        pending = self._pending[rid] = _Pending()
        self.stats.frames_out += 1
        self.stats.bytes_out += len(data)
        try:
            with anyio.fail_after(timeout):
                arrivals = self.network.route(self.address, address)
                target = self._target(address)
                if arrivals and target is None:
                    # Nobody listens there: a refused connection, noticed after one trip.
                    await anyio.sleep_until(arrivals[0])
                    raise TransportError(f"nothing listens at {address}")
                for at in arrivals:
                    assert target is not None
                    target._deliver(self, data, rid, at)
                await pending.done.wait()
        except TimeoutError:
            raise RequestTimeout(f"no reply from {address} within {timeout}s") from None
        finally:
            self._pending.pop(rid, None)
        if pending.error is not None:
            raise TransportError(pending.error)
        return pending.reply

    async def send(self, address: str, data: bytes) -> None:
        try:
            self._check_size(data)
        except FrameTooLarge:
            self.stats.drop("too-large")
            return
        if self._closed:
            self.stats.drop("closed")
            return
        self.stats.frames_out += 1
        self.stats.bytes_out += len(data)
        arrivals = self.network.route(self.address, address)
        target = self._target(address)
        if target is None:
            if arrivals:
                self.stats.drop("no-endpoint")
            return
        for at in arrivals:
            target._deliver(self, data, None, at)

    async def _arrive(
        self, source: MemoryTransport, data: bytes, rid: int | None, at: float
    ) -> None:
        network = self.network
        if network.is_frozen(source.address):  # a paused sender has not sent yet
            pause_began = anyio.current_time()
            await network.wait_thawed(source.address)
            at += anyio.current_time() - pause_began
        await anyio.sleep_until(at)
        if not network.reachable(source.address, self.address):
            network.stats.drop("partition")  # cut while in flight
            return
        await network.wait_thawed(self.address)  # a paused receiver reads it later
        if self._closed or self._on_frame is None:
            return
        if not isinstance(data, bytes | bytearray):
            self.stats.drop("malformed")  # only bytes travel; anything else is garbage
            return
        if len(data) > self.max_frame:
            self.stats.drop("too-large")
            if rid is not None:
                await self._reply(
                    source,
                    rid,
                    b"",
                    f"{self.address} refused a frame of {len(data)} bytes (limit {self.max_frame})",
                )
            return
        network.stats.delivered += 1
        self.stats.frames_in += 1
        self.stats.bytes_in += len(data)
        try:
            reply = await self._on_frame(bytes(data), source.address)
        except Exception as exc:
            self.stats.drop("handler-error")
            if rid is not None:
                await self._reply(
                    source,
                    rid,
                    b"",
                    f"handler at {self.address} failed: {type(exc).__name__}: {exc}",
                )
            return
        if rid is not None:
            await self._reply(source, rid, reply or b"")

    async def _reply(
        self, requester: MemoryTransport, rid: int, reply: bytes, error: str | None = None
    ) -> None:
        network = self.network
        if len(reply) > requester.max_frame:
            self.stats.drop("too-large")
            reply, error = b"", f"reply of {len(reply)} bytes exceeds the requester's limit"
        arrivals = network.route(self.address, requester.address)
        if not arrivals:
            return
        self.stats.frames_out += 1
        self.stats.bytes_out += len(reply)
        await anyio.sleep_until(arrivals[0])  # a duplicated reply changes nothing for the requester
        if not network.reachable(self.address, requester.address):
            network.stats.drop("partition")
            return
        await network.wait_thawed(requester.address)
        pending = requester._pending.get(rid)
        if pending is None or pending.done.is_set():
            return  # timed out or already answered
        network.stats.delivered += 1
        requester.stats.frames_in += 1
        requester.stats.bytes_in += len(reply)
        pending.reply = reply
        pending.error = error
        pending.done.set()

    async def open_stream(self, address: str) -> MemoryStream:
        if self._closed:
            raise TransportError("transport is closed")
        arrivals = self.network.route(self.address, address)
        if not arrivals:
            raise TransportError(f"cannot open a stream to {address}: unreachable")
        await anyio.sleep_until(arrivals[0])
        target = self._target(address)
        if target is not None and target._tg is None:
            with anyio.move_on_after(ACCEPT_WAIT):  # bound, not serving yet: a queued connect
                while target._tg is None and not target._closed:
                    await anyio.sleep(0.001)
        if target is None or target._tg is None or target._on_stream is None:
            raise TransportError(f"cannot open a stream to {address}: nothing listens there")
        to_peer, peer_in = anyio.create_memory_object_stream[bytes](self.stream_buffer)
        to_us, our_in = anyio.create_memory_object_stream[bytes](self.stream_buffer)
        ours = MemoryStream(self, address, to_peer, our_in)
        theirs = MemoryStream(target, self.address, to_us, peer_in)
        self._streams.add(ours)
        target._streams.add(theirs)
        target._tg.start_soon(target._on_stream, theirs)  # type: ignore[arg-type]
        return ours

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.network.detach(self)
        for pending in self._pending.values():
            pending.error = "transport closed"
            pending.done.set()
        for stream in list(self._streams):
            await stream.aclose()
        if self._tg is not None:
            self._tg.cancel_scope.cancel()


# ---------------------------------------------------------------- plugin


@attrs.frozen
class MemoryTransportOptions:
    network: str = attrs.field(
        default="default", metadata={"help": "name of the in-process network"}
    )
    name: str = attrs.field(default="", metadata={"help": "address; default mem://<node id>"})
    max_frame: Size = attrs.field(
        default=Size(1 << 20), metadata={"help": "largest frame accepted"}
    )
    stream_buffer: int = attrs.field(
        default=16, metadata={"help": "messages buffered per stream direction"}
    )


def make(options: MemoryTransportOptions, ctx: Any) -> MemoryTransport:
    if options.stream_buffer < 0:
        raise ValueError("stream_buffer must not be negative")
    address = options.name or f"mem://{ctx.id}"
    return MemoryTransport(
        get_network(options.network), address, options.max_frame, options.stream_buffer
    )


@hookimpl
def hedgeplug_register_transports(register: Any) -> None:
    register("memory", make, MemoryTransportOptions)
