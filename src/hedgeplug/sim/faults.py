"""Fault injectors a scenario calls as `sim.faults.<name>(...)`.

Each one acts on the real parts of the run (the memory network, the memory
store, a node's runtime), writes a trace line, and tells the metrics that the
cluster has something to converge after.

Freeze is an approximation of a stop-the-world pause: the frozen process's
frames (in and out) and its store calls are held until it thaws, while its
tasks keep their virtual time. trio cannot pause a subset of tasks, and the
election's safety rule only depends on time passing, which it does.

Clock drift is modelled between the store and all nodes (`store_clock_rate`):
every node reads the one virtual clock, and giving one node its own clock
would mean special-casing the election and strategies, which the simulator
must not do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from random import Random
from typing import Protocol

from hedgeplug.lock.memory import MemoryStore

from .metrics import Metrics
from .network import Latency, LinkFaults, SimNetwork
from .simnode import SimNode


class FaultTarget(Protocol):
    """The run the faults act on (the harness's Simulation)."""

    network: SimNetwork | None
    store: MemoryStore | None
    metrics: Metrics
    random: Random
    latency: Latency

    def now(self) -> float: ...

    def log(self, who: str, what: str) -> None: ...

    def change(self, what: str) -> None: ...

    def disturb(self) -> None: ...

    def running(self) -> list[SimNode]: ...

    def kill(self, sn: SimNode) -> None: ...

    def later(self, seconds: float, action: Callable[[], object]) -> None: ...


class Faults:
    def __init__(self, sim: FaultTarget) -> None:
        self.sim = sim

    def _later(self, seconds: float, action: Callable[[], object]) -> None:
        self.sim.later(seconds, action)

    # ------------------------------------------------------------ nodes

    def crash(self, node: SimNode) -> None:
        self.sim.kill(node)

    def freeze(self, node: SimNode, seconds: float) -> None:
        """Pause a process for `seconds` (see the module note)."""
        sim = self.sim
        if not node.running or node.frozen:
            return
        assert sim.network is not None and sim.store is not None
        was_leader = node.is_leader
        node.frozen = True
        sim.network.freeze(node.address)
        sim.store.pause_client(node.id)
        sim.log(node.id, f"freeze {seconds}s" + (" (leader)" if was_leader else ""))
        sim.change(f"freeze {node.id}")
        if was_leader:
            sim.metrics.leader_lost(node.id, sim.now())
            sim.disturb()
        self._later(seconds, lambda: self.thaw(node))

    def thaw(self, node: SimNode) -> None:
        sim = self.sim
        if not node.frozen:
            return
        assert sim.network is not None and sim.store is not None
        node.frozen = False
        node.calm_since = sim.now()
        sim.network.thaw(node.address)
        sim.store.resume_client(node.id)
        sim.log(node.id, "thaw")
        sim.change(f"thaw {node.id}")
        sim.disturb()

    # ------------------------------------------------------------ network

    def partition(self, *groups: Iterable[SimNode]) -> None:
        """Split the network; nodes not listed form one more group together."""
        sim = self.sim
        assert sim.network is not None
        lists = [sorted(n.id for n in group) for group in groups]
        sim.network.partition(*[[f"mem://{i}" for i in ids] for ids in lists])
        sim.log("network", "partition " + " | ".join(",".join(ids) for ids in lists))
        sim.change("partition")
        sim.disturb()

    def heal(self) -> None:
        sim = self.sim
        assert sim.network is not None
        sim.network.heal()
        for node in sim.running():
            node.calm_since = sim.now()
        sim.log("network", "heal")
        sim.change("heal")
        sim.disturb()

    def links(
        self,
        *,
        latency: Latency | None = None,
        loss: float = 0.0,
        duplicate: float = 0.0,
        reorder: float = 0.0,
        reorder_delay: float = 0.05,
        src: SimNode | None = None,
        dst: SimNode | None = None,
    ) -> None:
        """Set link faults for every link, or for links from `src` / to `dst`."""
        sim = self.sim
        assert sim.network is not None
        faults = LinkFaults(latency or sim.latency, loss, duplicate, reorder, reorder_delay)
        sim.network.set_faults(
            faults,
            src.address if src is not None else None,
            dst.address if dst is not None else None,
        )
        where = f"{src.id if src else '*'}->{dst.id if dst else '*'}"
        sim.log(
            "network",
            f"links {where} latency={faults.latency} loss={loss} dup={duplicate} reorder={reorder}",
        )
        sim.change("links")
        sim.disturb()

    def clear_links(self) -> None:
        sim = self.sim
        assert sim.network is not None
        sim.network.clear_faults()
        sim.network.set_faults(LinkFaults(latency=sim.latency))
        sim.log("network", "links cleared")
        sim.change("links cleared")
        sim.disturb()

    def garbage(self, node: SimNode, count: int = 20) -> None:
        """Feed `count` malformed frames to a node (bad input gets counted drops,
        never a crash): random bytes, a frame of another cluster, a truncated
        header, and non-bytes objects."""
        sim = self.sim
        assert sim.network is not None
        rng = sim.random
        other_cluster = (
            b"HP\x01\x00"
            + bytes([0x96, 0xA5])
            + b"other"
            + bytes([0xA1, 0x78, 0xA1, 0x63, 1, 0, 0xC0])
        )
        samples: list[object] = [b"", b"HP", other_cluster, {"not": "bytes"}]
        for i in range(count):
            if i < len(samples):
                frame = samples[i]
            else:
                frame = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 64)))
            sim.network.inject(node.address, frame, src="mem://garbage")
        sim.log(node.id, f"garbage x{count}")

    # ------------------------------------------------------------ store

    def store_outage(self, seconds: float) -> None:
        """The lock store refuses every call for `seconds`."""
        sim = self.sim
        assert sim.store is not None
        sim.store.set_down(True)
        sim.log("store", f"down {seconds}s")
        sim.change("store down")
        sim.disturb()
        self._later(seconds, self._store_back)

    def _store_back(self) -> None:
        sim = self.sim
        assert sim.store is not None
        sim.store.set_down(False)
        sim.log("store", "up")
        sim.change("store up")
        sim.disturb()

    def store_latency(self, seconds: float) -> None:
        sim = self.sim
        assert sim.store is not None
        sim.store.latency = seconds
        sim.log("store", f"latency {seconds}s")

    def store_clock_rate(self, rate: float) -> None:
        """Drift between the store's clock and every node's (rate > 1: the
        store's time runs faster, so leases end earlier than leaders expect)."""
        sim = self.sim
        assert sim.store is not None
        sim.store.set_clock_rate(rate)
        sim.log("store", f"clock rate {rate}")
        sim.disturb()
