"""The medium in-memory transports share, and the names networks go by.

`MemoryNetwork` is lossless and in order, with a fixed small delay; it is
what a memory transport gets unless someone installed another network under
the name first (the simulator installs its fault-injecting one,
`hedgeplug.sim.network`). A transport asks its network only through the
routing interface: `route`, `reachable`, `stream_delay`, `is_frozen` and
`wait_thawed`.
"""

from __future__ import annotations

from typing import Any, Protocol

import anyio
import attrs

from hedgeplug.plugin import TransportError

TIE_GAP = 1e-6  # arrivals on one link are at least this far apart: the scheduler never breaks a tie
DEFAULT_DELAY = 0.001
INJECTOR = "mem://injector"


class Endpoint(Protocol):
    """What a network knows of an endpoint bound on it."""

    address: str

    @property
    def closed(self) -> bool: ...

    def inject(self, payload: Any, src: str) -> None: ...


@attrs.define
class NetworkStats:
    """What the network did, across all endpoints."""

    sent: int = 0
    delivered: int = 0
    dropped: dict[str, int] = attrs.Factory(dict)

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1


class MemoryNetwork:
    """The medium the memory transports of one name share: lossless, in
    order, every frame after `delay` seconds. Subclasses (the simulator's)
    override the routing methods to lose, delay, cut or hold frames."""

    def __init__(self, name: str = "default", delay: float = DEFAULT_DELAY) -> None:
        self.name = name
        self.delay = delay
        self.endpoints: dict[str, Endpoint] = {}
        self.stats: NetworkStats = NetworkStats()
        self._last_arrival: dict[tuple[str, str], float] = {}

    # ------------------------------------------------------------ routing interface

    def route(self, src: str, dst: str) -> list[float]:
        """Arrival times of the copies of one frame from src to dst ([] when lost; counted)."""
        self.stats.sent += 1
        return [self.in_order(src, dst, anyio.current_time() + self.delay)]

    def in_order(self, src: str, dst: str, at: float) -> float:
        """`at`, pushed past the last arrival on the link: a link is FIFO like a TCP connection."""
        link = (src, dst)
        at = max(at, self._last_arrival.get(link, 0.0) + TIE_GAP)
        self._last_arrival[link] = at
        return at

    def reachable(self, src: str, dst: str) -> bool:
        return True

    def stream_delay(self, src: str, dst: str) -> float:
        """The delay of one stream message from src to dst."""
        return self.delay

    def is_frozen(self, address: str) -> bool:
        return False

    async def wait_thawed(self, address: str) -> None:
        """Return once `address` may send and receive again (at once here)."""

    # ------------------------------------------------------------ endpoints

    def attach(self, endpoint: Endpoint) -> None:
        current = self.endpoints.get(endpoint.address)
        if current is not None and current is not endpoint:
            raise TransportError(
                f"address {endpoint.address} is already bound on memory network {self.name!r}"
            )
        self.endpoints[endpoint.address] = endpoint

    def detach(self, endpoint: Endpoint) -> None:
        if self.endpoints.get(endpoint.address) is endpoint:
            del self.endpoints[endpoint.address]

    def endpoint(self, address: str) -> Endpoint | None:
        """The open endpoint bound at `address` (serving or about to), if any."""
        target = self.endpoints.get(address)
        return None if target is None or target.closed else target

    def inject(self, dst: str, payload: Any, src: str = INJECTOR) -> bool:
        """Hand `payload` (anything, even not bytes) to the endpoint at `dst` as
        if it came off the wire: how tests feed malformed input."""
        target = self.endpoint(dst)
        if target is None:
            return False
        target.inject(payload, src)
        return True


_networks: dict[str, MemoryNetwork] = {}


def get_network(name: str = "default") -> MemoryNetwork:
    """The process-global network of that name, a plain one created on first use."""
    network = _networks.get(name)
    if network is None:
        network = _networks[name] = MemoryNetwork(name)
    return network


def install_network(network: MemoryNetwork) -> MemoryNetwork:
    """Make `network` the one its name refers to (a fresh one for a test or a simulator run)."""
    _networks[network.name] = network
    return network


def reset_networks() -> None:
    _networks.clear()
