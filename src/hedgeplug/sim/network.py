"""The simulator's network: a `MemoryNetwork` that injects faults.

It decides the fate of each frame: latency drawn from per-link
distributions, loss, duplication, reordering, partitions, unreachable hosts
and frozen endpoints. All randomness comes from the network's own seeded
`Random` and all time from `anyio.current_time()`, so under trio's
MockClock a run is reproducible from its seeds. The memory transport runs
over it unchanged: `new_network(name, seed)` installs one under a name and
every memory transport configured with that network name uses it.
"""

from __future__ import annotations

from collections.abc import Iterable
from random import Random
from typing import Literal

import anyio
import attrs

from hedgeplug.transport.memory import MemoryNetwork, NetworkStats, install_network


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
class SimNetworkStats(NetworkStats):
    """The plain network's figures plus what the faults did."""

    duplicated: int = 0
    reordered: int = 0


class SimNetwork(MemoryNetwork):
    """A memory network whose links the simulator controls."""

    def __init__(self, name: str = "default", seed: int = 0) -> None:
        super().__init__(name)
        self.random = Random(seed)
        self.default_faults = LinkFaults()
        self.stats: SimNetworkStats = SimNetworkStats()
        self._links: dict[tuple[str | None, str | None], LinkFaults] = {}
        self._group_of: dict[str, int] | None = None  # None: no partition
        self._down: set[str] = set()
        self._thawed: dict[str, anyio.Event] = {}  # present while frozen

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

    # ------------------------------------------------------------ routing interface

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

    def stream_delay(self, src: str, dst: str) -> float:
        return self.faults(src, dst).latency.sample(self.random)

    def route(self, src: str, dst: str) -> list[float]:
        """Arrival times of the copies of one frame ([] when lost; counted).
        A frame never arrives before one sent earlier on the same link,
        unless the reorder fault picked it."""
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
        arrivals = []
        for _ in range(copies):
            at = now + f.latency.sample(rng)
            if f.reorder and rng.random() < f.reorder:
                at += rng.uniform(0.0, f.reorder_delay)
                self.stats.reordered += 1
            else:
                at = self.in_order(src, dst, at)
            arrivals.append(at)
        return arrivals


def new_network(name: str = "default", seed: int = 0) -> SimNetwork:
    """A fresh fault-injecting network, installed under `name` for the memory transports."""
    network = SimNetwork(name, seed)
    install_network(network)
    return network
