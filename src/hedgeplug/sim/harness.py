"""The simulation harness: many real nodes in one process on a virtual clock.

Every node is a real `hedgeplug.open_node` runtime with the memory lock and
the memory transport over the simulator's network; the strategies run
unmodified. Determinism comes from: trio's MockClock (virtual time that
jumps whenever every task waits), node ids and seeds derived from the run's
seed, the network's own seeded Random, the harness's own seeded Random for
its choices, and trio's scheduler put in its reproducible mode (the same
switch trio flips for Hypothesis). Python's string hashing differs between
interpreters; the built-in strategies never let set order decide anything (a
test replays a run under two PYTHONHASHSEED values), but a plugin that
iterates a set of strings would need PYTHONHASHSEED fixed to replay across
processes.

The parts: `Fleet` (fleet.py) starts and stops the nodes, `Sampler`
(sampling.py) measures and runs the checkers, `Faults` (faults.py) breaks
things; this module holds the clock, the run loop and the bounds, and gives
scenarios one object to drive.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from random import Random
from typing import Any

import anyio
import attrs

from hedgeplug.config import Config
from hedgeplug.contracts import StatesBounds
from hedgeplug.errors import HedgeplugError
from hedgeplug.lock.memory import MemoryStore, new_store
from hedgeplug.registry import Registry

from .checks import Checker, Convergence, DetectionBound, FencingTokens, NoFlapping, SingleLeader
from .determinism import derive_seed, leaves, reproducible_scheduling
from .faults import Faults
from .fleet import JOIN_RULES, NETWORK, STORE, Fleet, NodeRecipe
from .metrics import Metrics
from .network import Latency, LinkFaults, SimNetwork, new_network
from .result import Result, build_result
from .sampling import Sampler
from .simnode import SimNode
from .trace import Trace, Violation

__all__ = ["JOIN_RULES", "Result", "SimNode", "Simulation", "derive_seed"]

DEFAULT_LATENCY = Latency(0.0005, 0.001, "uniform")  # one-way, like a LAN
MAX_NODES = 5000  # processes one run may start, over its whole life
GC_YOUNG_THRESHOLD = 50_000  # allocations between young collections during a run (Python's default: 700)
DEFAULT_BOUND = 20.0  # convergence and detection bound for a strategy that states none

Scenario = Callable[["Simulation"], Awaitable[None]]


class Simulation:
    """Runs one scenario. Scenarios drive it through the methods below and
    through `faults` (see faults.py)."""

    def __init__(
        self,
        seed: int = 1,
        *,
        membership: str = "heartbeat",
        membership_options: dict[str, Any] | None = None,
        ttl: float = 3.0,
        lock_options: dict[str, Any] | None = None,
        latency: Latency = DEFAULT_LATENCY,
        sample_every: float = 0.05,
        join_rule: str = "one-random",
        convergence_bound: float | None = None,
        flap_grace: float = 20.0,
        detection_bound: float | None = None,
        extra_plugins: Sequence[Any] = (),
        checkers: Sequence[Checker] | None = None,
        trace: Trace | None = None,
        verbose: bool = False,
        max_wall: float | None = None,
        max_nodes: int = MAX_NODES,
        config: Config | None = None,
    ) -> None:
        if join_rule not in JOIN_RULES:
            raise ValueError(f"join rule must be one of {', '.join(JOIN_RULES)}, got {join_rule!r}")
        self.seed = seed
        self.membership = membership
        if config is not None:
            # A typed Config (from `hedgeplug sim`) replaces the arguments above.
            membership, ttl = config.membership.use, config.election.ttl
            self.membership = membership
        self.ttl = ttl  # the lease ttl every simulated node runs with
        self.latency = latency
        self.sample_every = sample_every
        # None: the bound the membership states for the cluster size (docs/design.md,
        # "Invariants"), or DEFAULT_BOUND when it states none.
        self.convergence_bound = convergence_bound
        self.flap_grace = flap_grace
        self.detection_bound = detection_bound
        self.bounds_used: dict[str, float] = {}
        self.verbose = verbose
        self.max_wall = max_wall
        self._size_at_change = 0
        self._wall_deadline = float("inf")
        self._calm = 0.0
        self._end = 0.0
        self.registry = Registry.load(extra=list(extra_plugins))
        self.random = Random(derive_seed(seed, "harness"))
        self.trace = trace or Trace()
        self.metrics = Metrics()
        self.network: SimNetwork | None = None
        self.store: MemoryStore | None = None
        recipe = NodeRecipe(
            membership,
            dict(membership_options or {}),
            ttl,
            dict(lock_options or {}),
            self._has_seeds_option(),
            config,
        )
        self.fleet = Fleet(
            self,
            recipe,
            self.registry,
            seed=seed,
            random=self.random,
            join_rule=join_rule,
            max_nodes=max_nodes,
            on_members=lambda sn, ev: self.sampler.on_members(sn, ev),
            on_leader=lambda sn, ev: self.sampler.on_leader(sn, ev),
        )
        self.sampler = Sampler(self.fleet, self.metrics, self.trace, self.now, self.log)
        self.sampler.use(list(checkers) if checkers is not None else self._default_checkers())
        self.faults = Faults(self)

    def _has_seeds_option(self) -> bool:
        impl = self.registry.get("membership", self.membership)
        return "seeds" in {f.name for f in attrs.fields(impl.options)}

    def _default_checkers(self) -> list[Checker]:
        """The checkers every run gets."""
        return [
            SingleLeader(),
            FencingTokens(self.leader_token),
            Convergence(
                self.convergence_bound_now,
                lambda: self.metrics.last_change,
                lambda: self.metrics.converged_at,
            ),
            NoFlapping(self.flap_grace, self.calm_since, self.is_running),
            DetectionBound(
                lambda: self.bound("detection"),
                lambda: self.metrics.pending_departures,
                lambda: self._calm,
            ),
        ]

    # ------------------------------------------------------------ what the parts hold

    @property
    def nodes(self) -> dict[str, SimNode]:
        return self.fleet.nodes

    @property
    def checkers(self) -> list[Checker]:
        return self.sampler.checkers

    @property
    def violations(self) -> list[Violation]:
        return self.sampler.violations

    @property
    def violation_counts(self) -> dict[str, int]:
        return self.sampler.violation_counts

    # ------------------------------------------------------------ time and trace

    def now(self) -> float:
        return anyio.current_time()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)

    def later(self, seconds: float, action: Callable[[], object]) -> None:
        """Call `action` after `seconds` of virtual time, inside the run."""

        async def run() -> None:
            await anyio.sleep(seconds)
            action()

        assert self.fleet.task_group is not None, "schedule actions from inside a running scenario"
        self.fleet.task_group.start_soon(run)

    def log(self, who: str, what: str) -> None:
        self.trace.add(self.now(), who, what)

    def report(self, invariant: str, message: str) -> None:
        self.sampler.report(invariant, message)

    def change(self, what: str) -> None:
        """Something happened that the cluster must converge after."""
        self.metrics.change(self.now(), what)
        self._size_at_change = self.table_size()
        self.sampler.mark_dirty()

    def disturb(self) -> None:
        """A cluster-wide disturbance (partition, outage, leader loss): no
        removal is called flapping until the grace period has passed."""
        self._calm = self.now()

    def calm_since(self, observer: str, removed: str) -> float:
        times = [self._calm]
        for node_id in (observer, removed):
            sn = self.nodes.get(node_id)
            if sn is not None:
                times.append(sn.calm_since)
        return max(times)

    # ------------------------------------------------------------ bounds

    def table_size(self) -> int:
        """Members the strategy deals with now: the live nodes, or the largest
        view at the last sample when departed nodes are still in it."""
        return max(self.fleet.running_count(), self.sampler.largest_view())

    def bound(self, key: str, size: int | None = None) -> float:
        """The "detection" or "convergence" bound for a cluster of `size`
        (default: now): the one given, else the one the strategy states."""
        given = self.detection_bound if key == "detection" else self.convergence_bound
        if given is not None:
            return given
        for sn in self.running():
            membership = sn.node.parts.membership if sn.node is not None else None
            if isinstance(membership, StatesBounds):
                value = float(membership.bounds(max(1, size or self.table_size()))[key])
                self.bounds_used[key] = max(self.bounds_used.get(key, 0.0), value)
                return value
            break
        return DEFAULT_BOUND

    def convergence_bound_now(self) -> float:
        """The convergence bound for the size the cluster had at its last change."""
        return self.bound("convergence", self._size_at_change)

    def _bounds_report(self) -> dict[str, Any]:
        """The bounds the checkers used: given, or the largest the strategy stated."""
        out: dict[str, Any] = {}
        for key, given in (("detection", self.detection_bound), ("convergence", self.convergence_bound)):
            if given is not None:
                out[key] = {"seconds": given, "source": "given"}
            elif key in self.bounds_used:
                out[key] = {"seconds": round(self.bounds_used[key], 2), "source": "stated, largest"}
            else:
                out[key] = {"seconds": DEFAULT_BOUND, "source": "default"}
        return out

    # ------------------------------------------------------------ nodes (scenario actions)

    def running(self) -> list[SimNode]:
        return self.fleet.running()

    def is_running(self, node_id: str) -> bool:
        return self.fleet.is_running(node_id)

    def leader(self) -> SimNode | None:
        return self.fleet.leader()

    def leader_token(self, node_id: str) -> int:
        return self.fleet.leader_token(node_id)

    async def start(self, count: int = 1, *, join: str | None = None) -> list[SimNode]:
        """Start `count` new nodes, one after another, at the current instant."""
        return await self.fleet.start(count, join=join)

    def kill(self, sn: SimNode) -> None:
        """Crash: no goodbye, no lease release."""
        self.fleet.kill(sn)

    async def stop(self, sn: SimNode) -> None:
        """Graceful stop: leave and release, bounded by the node's stop timeout."""
        await self.fleet.stop(sn)

    async def stop_many(self, nodes: Sequence[SimNode]) -> None:
        """Stop several nodes gracefully at the same instant."""
        await self.fleet.stop_many(nodes)

    async def resize(self, target: int, *, crash_share: float = 0.0) -> None:
        """Grow or shrink to `target` running nodes; removals are random nodes,
        a `crash_share` of them crashed, the rest stopped gracefully."""
        await self.fleet.resize(target, crash_share=crash_share)

    async def restart(self, sn: SimNode, *, graceful: bool = False) -> SimNode:
        """The process dies and comes back as a new process (new id, as a real
        restart gets a new pid)."""
        return await self.fleet.restart(sn, graceful=graceful)

    # ------------------------------------------------------------ running

    async def _sampler(self) -> None:
        while True:
            self.sampler.sample()
            # A bound on real time too: virtual time is cheap, a big run is not.
            if time.perf_counter() > self._wall_deadline:
                raise HedgeplugError(
                    f"simulation stopped after {self.max_wall}s of wall time "
                    f"at virtual {self.now():.1f}s ({len(self.running())} nodes running)"
                )
            await anyio.sleep(self.sample_every)

    async def _main(self, scenario: Scenario) -> None:
        self.network = new_network(NETWORK, seed=derive_seed(self.seed, "network"))
        self.network.set_faults(LinkFaults(latency=self.latency))
        self.store = new_store(STORE)
        async with anyio.create_task_group() as tg:
            self.fleet.task_group = tg
            tg.start_soon(self._sampler)
            await scenario(self)
            self.sampler.sample()
            t = self.now()
            self.sampler.finish(t)
            self.metrics.finish()
            self._end = t
            self.fleet.end(t)
            tg.cancel_scope.cancel()

    def run(
        self, scenario: Scenario, *, name: str = "custom", params: dict[str, Any] | None = None
    ) -> Result:
        import trio
        import trio.testing

        logger = logging.getLogger("hedgeplug")
        old_level = logger.level
        if not self.verbose:
            logger.setLevel(logging.CRITICAL)
        self._end = 0.0
        wall_started = time.perf_counter()  # the harness's own wall time, not protocol time
        if self.max_wall is not None:
            self._wall_deadline = wall_started + self.max_wall
        try:
            with reproducible_scheduling(derive_seed(self.seed, "scheduler")), fewer_collections():
                trio.run(self._main, scenario, clock=trio.testing.MockClock(autojump_threshold=0))
        except BaseExceptionGroup as group:
            # A scenario's own error (a failed check, a bad config) reads best unwrapped.
            found = leaves(group)
            if len(found) == 1:
                raise found[0] from None
            raise
        finally:
            logger.setLevel(old_level)
        assert self.network is not None
        return build_result(
            name=name,
            params=params or {},
            seed=self.seed,
            membership=self.membership,
            trace=self.trace,
            end=self._end,
            wall=time.perf_counter() - wall_started,
            nodes=self.nodes,
            metrics=self.metrics,
            network=self.network,
            violations=self.violations,
            violation_counts=self.violation_counts,
            bounds=self._bounds_report(),
        )


@contextlib.contextmanager
def fewer_collections() -> Iterator[None]:
    """Run the cyclic garbage collector rarely while a simulation runs.

    A run allocates tens of millions of short-lived objects (tasks, cancel
    scopes, frames). With the default young threshold the collector met many
    of them alive, promoted them, and then paid full collections over a heap
    that grows with the node count: 45% of the CPU time at 2000 nodes, the
    largest term growing faster than the simulated node-seconds. Nearly all
    of them die by reference counting, so a larger young generation catches
    the few cycles at a fraction of the cost. Only the collector's timing
    changes, never what the run does (digests are equal either way).
    """
    before = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)
