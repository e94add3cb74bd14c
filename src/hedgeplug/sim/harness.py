"""The simulation harness: many real nodes in one process on a virtual clock.

Every node is a real `hedgeplug.open_node` runtime with the memory lock and
the memory transport; the strategies run unmodified. Determinism comes from:
trio's MockClock (virtual time that jumps whenever every task waits), node
ids and seeds derived from the run's seed, the network's own seeded Random,
the harness's own seeded Random for its choices, and trio's scheduler put in
its reproducible mode (the same switch trio flips for Hypothesis). Python's
string hashing differs between interpreters; the built-in strategies never
let set order decide anything (a test replays a run under two
PYTHONHASHSEED values), but a plugin that iterates a set of strings would
need PYTHONHASHSEED fixed to replay across processes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from random import Random
from typing import Any

import anyio
import attrs
from anyio.abc import TaskGroup, TaskStatus

from hedgeplug.config import Config
from hedgeplug.contracts import StatesBounds
from hedgeplug.errors import HedgeplugError
from hedgeplug.events import LeaderChanged, MembersChanged
from hedgeplug.lock.memory import MemoryStore, new_store
from hedgeplug.node import Node, open_node
from hedgeplug.registry import Registry
from hedgeplug.transport.memory import Latency, LinkFaults, Network, new_network

from .checks import Checker, default_checkers
from .metrics import Metrics, Snapshot, count_groups
from .trace import Trace, Violation

NETWORK = "sim"
STORE = "sim"
CLUSTER = "sim"
JOIN_RULES = ("one-random", "sample-1-3", "fixed")
DEFAULT_LATENCY = Latency(0.0005, 0.001, "uniform")  # one-way, like a LAN
MAX_NODES = 5000  # processes one run may start, over its whole life
DEFAULT_BOUND = 20.0  # convergence and detection bound for a strategy that states none

Scenario = Callable[["Simulation"], Awaitable[None]]


def derive_seed(seed: int, purpose: str) -> int:
    """A seed for one purpose (a node, the network) from the run's seed."""
    return Random(f"{seed}/{purpose}").getrandbits(63)


@contextmanager
def reproducible_scheduling(seed: int) -> Iterator[None]:
    """Make trio's run-queue order a function of `seed`.

    trio deliberately shuffles the order of runnable tasks; under Hypothesis
    it sorts them and shuffles with a private seeded Random instead. We flip
    the same switch for the length of a run and put it back afterwards.
    """
    import trio._core._run as trio_run

    if not hasattr(trio_run, "_ALLOW_DETERMINISTIC_SCHEDULING") or not hasattr(trio_run, "_r"):
        # A trio without the switch: runs still work, digests may differ between runs.
        logging.getLogger("hedgeplug.sim").warning("this trio cannot order tasks reproducibly")
        yield
        return
    old_flag = trio_run._ALLOW_DETERMINISTIC_SCHEDULING
    old_state = trio_run._r.getstate()
    trio_run._ALLOW_DETERMINISTIC_SCHEDULING = True  # type: ignore[misc]
    trio_run._r.seed(seed)
    try:
        yield
    finally:
        trio_run._ALLOW_DETERMINISTIC_SCHEDULING = old_flag  # type: ignore[misc]
        trio_run._r.setstate(old_state)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


@attrs.define(eq=False)
class SimNode:
    """One simulated process."""

    id: str
    index: int
    address: str
    started_at: float
    node: Node | None = None
    state: str = "starting"  # running, crashed, stopped
    stopped_at: float | None = None
    frozen: bool = False
    calm_since: float = 0.0  # last time something happened to it (start, thaw, heal)
    view_ids: frozenset[str] = frozenset()
    join: tuple[str, ...] = ()
    stop_requested: Any = None  # anyio.Event
    done: Any = None  # anyio.Event

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def is_leader(self) -> bool:
        return self.node is not None and self.running and self.node.is_leader


@attrs.frozen
class Result:
    scenario: str
    params: dict[str, Any]
    seed: int
    membership: str
    digest: str
    trace_lines: int
    virtual_seconds: float
    wall_seconds: float
    nodes_started: int
    metrics: dict[str, Any]
    traffic: dict[str, float]
    network: dict[str, Any]
    violations: int
    first_violation: Violation | None
    violation_counts: dict[str, int]
    series: list[dict[str, float]]
    bounds: dict[str, Any] = attrs.Factory(dict)

    @property
    def ok(self) -> bool:
        return self.violations == 0

    def to_json(self, series: bool = False) -> dict[str, Any]:
        out = attrs.asdict(self, recurse=True)
        if not series:
            out.pop("series")
        out["ok"] = self.ok
        return out


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
        self.membership_options = dict(membership_options or {})
        self.ttl = ttl
        self.lock_options = dict(lock_options or {})
        # A typed Config (from `hedgeplug sim`) replaces the four arguments above.
        self.base_config = config
        if config is not None:
            self.membership, self.ttl = config.membership.use, config.election.ttl
        self.latency = latency
        self.sample_every = sample_every
        self.join_rule = join_rule
        # None: the bound the membership states for the cluster size (DESIGN.md
        # invariants 2 and 3), or DEFAULT_BOUND when it states none.
        self.convergence_bound = convergence_bound
        self.flap_grace = flap_grace
        self.detection_bound = detection_bound
        self._size_at_change = 0
        self.bounds_used: dict[str, float] = {}
        self.verbose = verbose
        self.max_wall = max_wall
        self.max_nodes = max_nodes
        self._wall_deadline = float("inf")
        self.registry = Registry.load(extra=list(extra_plugins))
        self.random = Random(derive_seed(seed, "harness"))
        self.trace = trace or Trace()
        self.metrics = Metrics()
        self.nodes: dict[str, SimNode] = {}
        self.checkers = list(checkers) if checkers is not None else default_checkers(self)
        self.violations: list[Violation] = []
        self.violation_counts: dict[str, int] = {}
        self.network: Network | None = None
        self.store: MemoryStore | None = None
        self._tg: TaskGroup | None = None
        self._next_index = 0
        self._calm = 0.0
        self._dirty = True
        self._cache: tuple[frozenset[str], dict[str, frozenset[str]], int, float] | None = None
        self._last_line = ""
        self._seeds_supported = self._has_seeds_option()
        from .faults import Faults

        self.faults = Faults(self)

    def _has_seeds_option(self) -> bool:
        impl = self.registry.get("membership", self.membership)
        return "seeds" in {f.name for f in attrs.fields(impl.options)}

    # ------------------------------------------------------------ time and trace

    def now(self) -> float:
        return anyio.current_time()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)

    def log(self, who: str, what: str) -> None:
        self.trace.add(self.now(), who, what)

    def change(self, what: str) -> None:
        """Something happened that the cluster must converge after."""
        self.metrics.change(self.now(), what)
        self._size_at_change = self.table_size()
        self._dirty = True

    def table_size(self) -> int:
        """Members the strategy deals with now: the live nodes, or the largest
        view at the last sample when departed nodes are still in it."""
        sizes = [len(self.running())]
        if self._cache is not None:
            sizes.extend(len(view) for view in self._cache[1].values())
        return max(sizes)

    def bound(self, key: str, size: int | None = None) -> float:
        """The "detection" or "convergence" bound for a cluster of `size`
        (default: now): the one given, else the one the strategy states."""
        given = self.detection_bound if key == "detection" else self.convergence_bound
        if given is not None:
            return given
        for sn in self.running():
            membership = sn.node._membership if sn.node is not None else None
            if isinstance(membership, StatesBounds):
                value = float(membership.bounds(max(1, size or self.table_size()))[key])
                self.bounds_used[key] = max(self.bounds_used.get(key, 0.0), value)
                return value
            break
        return DEFAULT_BOUND

    def convergence_bound_now(self) -> float:
        """The convergence bound for the size the cluster had at its last change."""
        return self.bound("convergence", self._size_at_change)

    def disturb(self) -> None:
        """A cluster-wide disturbance (partition, outage, leader loss): no
        removal is called flapping until the grace period has passed."""
        self._calm = self.now()

    # ------------------------------------------------------------ nodes

    def running(self) -> list[SimNode]:
        return [sn for sn in self.nodes.values() if sn.running]

    def is_running(self, node_id: str) -> bool:
        sn = self.nodes.get(node_id)
        return sn is not None and sn.running

    def leader(self) -> SimNode | None:
        for sn in self.running():
            if sn.is_leader:
                return sn
        return None

    def leader_token(self, node_id: str) -> int:
        sn = self.nodes[node_id]
        return sn.node.token if sn.node is not None else 0

    def calm_since(self, observer: str, removed: str) -> float:
        times = [self._calm]
        for node_id in (observer, removed):
            sn = self.nodes.get(node_id)
            if sn is not None:
                times.append(sn.calm_since)
        return max(times)

    def _config(self, node_id: str, seeds: list[str]) -> dict[str, Any] | Config:
        if self.base_config is not None:
            config = self.base_config.with_node(
                id=node_id, cluster=CLUSTER, seed=derive_seed(self.seed, node_id)
            )
            if seeds and self._seeds_supported:
                config = config.with_options("membership", seeds=seeds)
            return config
        membership = {"use": self.membership, **self.membership_options}
        # Another lock than the memory one (a test's broken lock) gets no store option.
        lock: dict[str, Any] = {"use": "memory", "ttl": self.ttl, **self.lock_options}
        if lock["use"] == "memory":
            lock.setdefault("store", STORE)
        if seeds and self._seeds_supported:
            membership["seeds"] = seeds
        return {
            "node": {"id": node_id, "cluster": CLUSTER, "seed": derive_seed(self.seed, node_id)},
            "lock": lock,
            "transport": {"use": "memory", "network": NETWORK},
            "membership": membership,
            "broadcast": {"use": "direct"},
        }

    def _pick_join(self, own: str, rule: str) -> list[str]:
        others = [sn.address for sn in self.running()]
        if rule == "one-random":
            # A Service's cluster IP: any running process, the new one included.
            return [self.random.choice([*others, own])]
        if rule == "sample-1-3":
            if not others:
                return [own]
            return self.random.sample(others, min(len(others), self.random.randint(1, 3)))
        first = next(iter(self.nodes.values()), None)
        return [first.address if first is not None else own]

    async def start(self, count: int = 1, *, join: str | None = None) -> list[SimNode]:
        """Start `count` new nodes, one after another, at the current instant."""
        return [await self._start_one(join or self.join_rule) for _ in range(count)]

    async def _start_one(self, rule: str, node_id: str | None = None) -> SimNode:
        assert self._tg is not None, "start nodes from inside a running scenario"
        if len(self.nodes) >= self.max_nodes:
            raise HedgeplugError(f"the scenario tried to start more than {self.max_nodes} nodes")
        index = self._next_index
        self._next_index += 1
        node_id = node_id or f"n{index:04d}"
        address = f"mem://{node_id}"
        seeds = self._pick_join(address, rule)
        sn = SimNode(node_id, index, address, self.now(), calm_since=self.now(), join=tuple(seeds))
        sn.stop_requested, sn.done = anyio.Event(), anyio.Event()
        self.nodes[node_id] = sn
        config = self._config(node_id, seeds)
        await self._tg.start(self._node_main, sn, config)
        self.log(node_id, f"start join={','.join(seeds)}")
        self.metrics.started(node_id, self.now())
        self.change(f"start {node_id}")
        return sn

    async def _node_main(
        self, sn: SimNode, config: dict[str, Any] | Config, *, task_status: TaskStatus[None]
    ) -> None:
        started = False
        try:
            async with open_node(config, registry=self.registry) as node:
                sn.node = node
                sn.address = node.address
                sn.state = "running"
                sn.view_ids = node.view.ids

                def on_members(ev: MembersChanged) -> None:
                    self._on_members(sn, ev)

                def on_leader(ev: LeaderChanged) -> None:
                    self._on_leader(sn, ev)

                node.on_members_changed(on_members)
                node.on_leader_changed(on_leader)
                started = True
                task_status.started()
                await sn.stop_requested.wait()
        except Exception as exc:
            if not started:
                raise
            # A node task failing by itself is a finding (invariant 4), not a harness crash.
            if sn.running:
                sn.state = "crashed"
                sn.stopped_at = self.now()
                self._gone(sn, "failed", was_leader=False)
            causes = "; ".join(f"{type(e).__name__}: {e}" for e in _leaves(exc))
            self.report("node-crash", f"{sn.id} failed: {causes}")
        finally:
            sn.done.set()

    def kill(self, sn: SimNode) -> None:
        """Crash: no goodbye, no lease release."""
        if not sn.running or sn.node is None:
            return
        was_leader = sn.is_leader
        sn.state = "crashed"
        sn.stopped_at = self.now()
        sn.node.kill()
        self._gone(sn, "kill", was_leader)

    async def stop(self, sn: SimNode) -> None:
        """Graceful stop: leave and release, bounded by the node's stop timeout."""
        if not sn.running:
            return
        was_leader = sn.is_leader
        sn.state = "stopped"
        sn.stopped_at = self.now()
        self._gone(sn, "stop", was_leader)
        sn.stop_requested.set()
        await sn.done.wait()

    async def stop_many(self, nodes: Sequence[SimNode]) -> None:
        """Stop several nodes gracefully at the same instant."""
        async with anyio.create_task_group() as tg:
            for sn in nodes:
                tg.start_soon(self.stop, sn)

    async def resize(self, target: int, *, crash_share: float = 0.0) -> None:
        """Grow or shrink to `target` running nodes; removals are random nodes,
        a `crash_share` of them crashed, the rest stopped gracefully."""
        running = self.running()
        if target > len(running):
            await self.start(target - len(running))
            return
        victims = self.random.sample(running, len(running) - target)
        crashed = [sn for sn in victims if self.random.random() < crash_share]
        for sn in crashed:
            self.kill(sn)
        await self.stop_many([sn for sn in victims if sn not in crashed])

    async def restart(self, sn: SimNode, *, graceful: bool = False) -> SimNode:
        """The process dies and comes back as a new process (new id, as a real
        restart gets a new pid)."""
        if graceful:
            await self.stop(sn)
        else:
            self.kill(sn)
        generation = sum(1 for other in self.nodes if other.startswith(sn.id.split(".")[0]))
        return await self._start_one(self.join_rule, f"{sn.id.split('.')[0]}.r{generation}")

    def _gone(self, sn: SimNode, how: str, was_leader: bool) -> None:
        self.log(sn.id, how + (" (leader)" if was_leader else ""))
        self.metrics.gone(sn.id, self.now(), graceful=how == "stop")
        self.change(f"{how} {sn.id}")
        if was_leader:
            self.metrics.leader_lost(sn.id, self.now())
            self.disturb()

    # ------------------------------------------------------------ node events

    def _on_members(self, sn: SimNode, ev: MembersChanged) -> None:
        if not sn.running:
            return
        sn.view_ids = ev.view.ids
        self._dirty = True
        joined = ",".join(m.id for m in ev.joined)
        left = ",".join(m.id for m in ev.left)
        self.log(sn.id, f"view {ev.view.version} n={len(ev.view)} +{joined} -{left}")
        t = self.now()
        for member in ev.left:
            for checker in self.checkers:
                checker.on_removed(t, sn.id, member.id, self.report)

    def _on_leader(self, sn: SimNode, ev: LeaderChanged) -> None:
        if not sn.running:
            return
        lease = ev.lease
        self.log(sn.id, "leader " + ("none" if lease is None else f"{lease.holder}#{lease.token}"))
        self._sample(from_event=True)

    # ------------------------------------------------------------ sampling

    async def _sampler(self) -> None:
        while True:
            self._sample()
            # A bound on real time too: virtual time is cheap, a big run is not.
            if time.perf_counter() > self._wall_deadline:
                raise HedgeplugError(
                    f"simulation stopped after {self.max_wall}s of wall time "
                    f"at virtual {self.now():.1f}s ({len(self.running())} nodes running)"
                )
            await anyio.sleep(self.sample_every)

    def _sample(self, from_event: bool = False) -> None:
        t = self.now()
        running = self.running()
        live = frozenset(sn.id for sn in running)
        views_changed = self._dirty or self._cache is None or self._cache[0] != live
        if views_changed and not from_event:
            views = {sn.id: sn.view_ids for sn in running}
            groups = count_groups(views)
            agreement = sum(1 for v in views.values() if v == live) / len(live) if live else 0.0
            self._cache = (live, views, groups, agreement)
            self._dirty = False
        if self._cache is None:
            return
        _, views, groups, agreement = self._cache
        leaders = tuple(sn.id for sn in running if sn.is_leader)
        token = max((self.leader_token(x) for x in leaders), default=0)
        snap = Snapshot(t, live, views, leaders, groups, agreement, token)
        if from_event:
            self.metrics.leaders_seen(t, leaders)
        else:
            self.metrics.sample(snap, views_changed)
            line = f"size={len(live)} groups={groups} agree={agreement:.3f} leaders={','.join(leaders) or '-'}"
            if line != self._last_line:
                self._last_line = line
                self.log("sample", line)
        for checker in self.checkers:
            checker.on_sample(snap, self.report)

    def report(self, invariant: str, message: str) -> None:
        count = self.violation_counts.get(invariant, 0)
        self.violation_counts[invariant] = count + 1
        if count == 0:
            self.log("VIOLATION", f"{invariant}: {message}")
            violation = Violation(invariant, self.now(), message)
            if not self.violations:
                self.trace.capture(violation)
            self.violations.append(violation)

    # ------------------------------------------------------------ running

    async def _main(self, scenario: Scenario) -> None:
        self.network = new_network(NETWORK, seed=derive_seed(self.seed, "network"))
        self.network.set_faults(LinkFaults(latency=self.latency))
        self.store = new_store(STORE)
        async with anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(self._sampler)
            await scenario(self)
            self._sample()
            t = self.now()
            for checker in self.checkers:
                checker.finish(t, self.report)
            self.metrics.finish()
            self._end = t
            for sn in self.running():
                sn.state = "stopped"
                sn.stopped_at = t
                assert sn.node is not None
                sn.node.kill()
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
            with reproducible_scheduling(derive_seed(self.seed, "scheduler")):
                trio.run(self._main, scenario, clock=trio.testing.MockClock(autojump_threshold=0))
        except BaseExceptionGroup as group:
            # A scenario's own error (a failed check, a bad config) reads best unwrapped.
            leaves = _leaves(group)
            if len(leaves) == 1:
                raise leaves[0] from None
            raise
        finally:
            logger.setLevel(old_level)
        wall = time.perf_counter() - wall_started
        return self._result(name, params or {}, wall)

    def _result(self, name: str, params: dict[str, Any], wall: float) -> Result:
        frames = bytes_out = 0
        node_seconds = 0.0
        for sn in self.nodes.values():
            if sn.node is None:
                continue
            stats = sn.node._transport.stats
            frames += stats.frames_out
            bytes_out += stats.bytes_out
            node_seconds += (
                sn.stopped_at if sn.stopped_at is not None else self._end
            ) - sn.started_at
        per = node_seconds or 1.0
        net = self.network
        assert net is not None
        return Result(
            scenario=name,
            params=params,
            seed=self.seed,
            membership=self.membership,
            digest=self.trace.digest,
            trace_lines=self.trace.lines,
            virtual_seconds=round(self._end, 6),
            wall_seconds=round(wall, 3),
            nodes_started=len(self.nodes),
            metrics=self.metrics.to_json(),
            traffic={
                "node_seconds": round(node_seconds, 3),
                "messages_per_node_per_second": round(frames / per, 3),
                "bytes_per_node_per_second": round(bytes_out / per, 1),
            },
            network={
                "sent": net.stats.sent,
                "delivered": net.stats.delivered,
                "duplicated": net.stats.duplicated,
                "reordered": net.stats.reordered,
                "dropped": dict(sorted(net.stats.dropped.items())),
            },
            violations=sum(self.violation_counts.values()),
            first_violation=self.violations[0] if self.violations else None,
            violation_counts=dict(sorted(self.violation_counts.items())),
            series=[attrs.asdict(p) for p in self.metrics.series],
            bounds=self._bounds_report(),
        )

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
